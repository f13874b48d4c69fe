// `bootline lab up|status|down` as a user runs them (the CLI from source, real QEMU):
// refusals before anything starts, a detached lab stopped by `lab down` from another
// process, and a foreground lab stopped by Ctrl-C.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type AddressInfo } from 'node:net';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { readLabState } from '../../src/lab/vm/state.ts';
import { isAlive, sleep } from '../../src/lab/vm/processes.ts';
import { stopLabInDir } from '../../src/lab/vm/lab.ts';
import { onPath } from '../../src/which.ts';
import { tempDir } from '../helpers.ts';

const MAIN = join(import.meta.dirname, '..', '..', 'src', 'cli', 'main.ts');
const skip = !onPath('qemu-system-x86_64') || !onPath('swtpm') ? 'needs qemu-system-x86 and swtpm (scripts/setup.sh)' : false;

let line: TestServer;
const labDirs: string[] = [];
before(async () => {
  if (!skip) line = await startTestServer();
});
after(async () => {
  for (const d of labDirs) await stopLabInDir(d, { keepLogs: false });
  await line?.close();
});

/** Runs the CLI asynchronously (the in-process server must keep answering). */
function bootline(args: string[]): { child: ChildProcess; done: Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const done = new Promise<{ status: number | null; signal: string | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr })),
  );
  return { child, done };
}

function newLabDir(): string {
  const d = join(tempDir('bootline-lab-cli-'), 'lab');
  labDirs.push(d);
  return d;
}

test('lab up refuses an unreachable server and a bad disk size before it starts anything', { skip, timeout: 60_000 }, async () => {
  const dir = newLabDir();
  // A port that was just free: nothing listens there.
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const r = await bootline(['lab', 'up', '--server', `http://127.0.0.1:${port}`, '--dir', dir]).done;
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`the server at http://127\\.0\\.0\\.1:${port} is unreachable \\(ECONNREFUSED\\)`));
  const s = await bootline(['lab', 'up', '--server', line.url, '--dir', dir, '--disk-size', 'big']).done;
  assert.equal(s.status, 1);
  assert.match(s.stderr, /disk size "big" is not a size: write e\.g\. 8G/);
  assert.equal(existsSync(dir), false, 'nothing was created');
});

test('lab up starts detached devices; lab status shows them; lab down from another process stops them and keeps the logs', { skip, timeout: 90_000 }, async () => {
  const dir = newLabDir();
  const up = await bootline(['lab', 'up', '--devices', '2', '--server', line.url, '--dir', dir, '--id', 'cli', '--disk-size', '64M', '--memory', '512']).done;
  assert.equal(up.status, 0, up.stderr);
  assert.match(up.stdout, /dev1 {2}MAC 52:54:00:[0-9a-f:]+ {2}serial LAB-CLI-001/);
  assert.match(up.stdout, /dev2 {2}MAC 52:54:00:[0-9a-f:]+ {2}serial LAB-CLI-002/);
  const state = readLabState(dir)!;
  assert.equal(state.devices.length, 2);
  for (const d of state.devices) assert.ok(isAlive(d.qemuPid) && isAlive(d.swtpmPid!), 'QEMU and swtpm outlive `lab up`');
  const st = await bootline(['lab', 'status', '--dir', dir]).done;
  assert.equal(st.status, 0, st.stderr);
  assert.match(st.stdout, /dev1 .* LAB-CLI-001 {2}running {2}tpm up/);
  const down = await bootline(['lab', 'down', '--dir', dir]).done;
  assert.equal(down.status, 0, down.stderr);
  assert.match(down.stdout, /stopped 2 device\(s\) of lab cli; logs kept/);
  for (const d of state.devices) {
    assert.equal(isAlive(d.qemuPid), false);
    assert.equal(isAlive(d.swtpmPid!), false);
    assert.deepEqual(readdirSync(d.dir).sort(), ['qemu.log', 'serial.log', 'swtpm.log']);
  }
  assert.equal(existsSync(join(dir, 'lab.json')), false);
});

test('lab up --foreground shows the consoles and stops every device on Ctrl-C', { skip, timeout: 90_000 }, async () => {
  const dir = newLabDir();
  const { child, done } = bootline(['lab', 'up', '--foreground', '--server', line.url, '--dir', dir, '--disk-size', '64M', '--memory', '512']);
  let state = null;
  for (let i = 0; i < 300 && !(state && state.devices.length === 1); i++) {
    await sleep(100);
    state = readLabState(dir);
  }
  assert.ok(state, 'the lab started');
  const d = state.devices[0]!;
  // Wait for something on the console, then Ctrl-C.
  for (let i = 0; i < 600; i++) {
    if (existsSync(d.serialLog) && readdirSync(d.dir).includes('serial.log')) break;
    await sleep(100);
  }
  await sleep(2000);
  child.kill('SIGINT');
  const r = await done;
  assert.equal(r.status, 130, r.stderr);
  assert.equal(isAlive(d.qemuPid), false);
  assert.equal(isAlive(d.swtpmPid!), false);
  assert.equal(existsSync(d.qmpSocket), false);
});
