// A decompressor started through perl gets megabytes of room on its output socket, and is
// otherwise the same process it would have been: its argv[0], its output, its exit status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OUTPUT_SOCKET_BUFFER, withOutputBuffer } from '../../src/image/decompress/output-buffer.ts';
import { onPath } from '../../src/which.ts';

/** Runs a command with node's usual child stdout (a unix socket pair); its output and exit status. */
function run(c: { file: string; args: string[]; argv0: string }): Promise<{ out: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(c.file, c.args, { argv0: c.argv0, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    child.on('error', reject);
    child.on('close', (code) => resolve({ out, code }));
  });
}

const perl = onPath('perl');
// The room the program finds on its own standard output.
const REPORT_SNDBUF = ['-e', 'use Socket; print unpack("i", getsockopt(STDOUT, SOL_SOCKET, SO_SNDBUF))'];

test('through perl the program finds the room asked for on its output socket; started directly, the default', { skip: !perl && 'perl is not installed' }, async () => {
  const wrapped = await run(withOutputBuffer(perl as string, 'perl', REPORT_SNDBUF));
  const direct = await run(withOutputBuffer(perl as string, 'perl', REPORT_SNDBUF, 0));
  assert.equal(wrapped.code, 0);
  assert.equal(direct.code, 0);
  // The kernel books twice what is asked; root passes net.core.wmem_max (SO_SNDBUFFORCE), others are capped there.
  const cap = process.getuid?.() === 0 ? Infinity : Number(readFileSync('/proc/sys/net/core/wmem_max', 'utf8'));
  assert.equal(Number(wrapped.out), 2 * Math.min(OUTPUT_SOCKET_BUFFER, cap), `wrapped: ${wrapped.out}`);
  assert.ok(Number(direct.out) > 0 && Number(direct.out) < OUTPUT_SOCKET_BUFFER, `direct: ${direct.out}`);
});

test('the program keeps its own name, arguments, output and exit status', { skip: !perl && 'perl is not installed' }, async () => {
  const c = withOutputBuffer('/bin/sh', 'igzip', ['-c', 'tr "\\0" " " < /proc/$$/cmdline; exit 3', 'x']);
  assert.equal(c.file, perl);
  const r = await run(c);
  assert.equal(r.code, 3);
  assert.equal(r.out.trim(), 'igzip -c tr "\\0" " " < /proc/$$/cmdline; exit 3 x');
});

test('a program that cannot be run fails with a message naming it', { skip: !perl && 'perl is not installed' }, async () => {
  const r = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const c = withOutputBuffer('/nonexistent/igzip', 'igzip', ['-dc']);
    const child = spawn(c.file, c.args, { argv0: c.argv0, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.on('close', (code) => resolve({ code, err }));
  });
  assert.notEqual(r.code, 0);
  assert.match(r.err, /cannot run \/nonexistent\/igzip: No such file or directory/);
});

test('without perl on PATH the program is started directly', () => {
  const empty = mkdtempSync(join(tmpdir(), 'bootline-noperl-'));
  const saved = process.env.PATH;
  try {
    process.env.PATH = empty;
    assert.deepEqual(withOutputBuffer('/usr/bin/igzip', 'igzip', ['-dc', 'f.gz']), { file: '/usr/bin/igzip', args: ['-dc', 'f.gz'], argv0: 'igzip' });
  } finally {
    process.env.PATH = saved;
    rmSync(empty, { recursive: true, force: true });
  }
});
