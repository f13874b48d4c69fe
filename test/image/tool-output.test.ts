// A program's output read into reused segments over a unix socket pair (tool-output.ts), with real
// programs writing it: every byte in order, and a chunk the consumer still holds never overwritten,
// however the consumer's pace and the program's differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { toolOutput, type SegmentOptions, type Segments } from '../../src/image/decompress/tool-output.ts';
import { tempDir } from '../helpers.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `cat file` writing into the socket pair; returns the reader and the child's exit. */
async function catInto(file: string, opts: SegmentOptions) {
  const { writeEnd, reader } = await toolOutput(opts);
  const child = spawn('cat', [file], { stdio: ['ignore', writeEnd, 'inherit'] });
  writeEnd.destroy();
  return { reader, exited: once(child, 'close') };
}

/**
 * Reads everything; `hold(i)` is awaited while chunk i is held, after which the chunk must still
 * hold the bytes it was given with (a read into a held segment would change them).
 */
async function drain(reader: Segments, hold: (i: number) => Promise<unknown>) {
  const parts: Buffer[] = [];
  for (let i = 0; ; i++) {
    const c = await reader.next();
    if (!c) break;
    const before = sha(c);
    await hold(i);
    assert.equal(sha(c), before, `chunk ${i} changed while the consumer held it`);
    parts.push(Buffer.from(c));
  }
  return parts;
}

function dataFile(bytes: number) {
  const file = join(tempDir(), 'data');
  const data = randomBytes(bytes);
  writeFileSync(file, data);
  return { file, data };
}

test('a consumer faster than the program gets every byte in order, in chunks no bigger than a segment', async () => {
  const { file, data } = dataFile(24 * MiB + 4321);
  const { reader, exited } = await catInto(file, { size: 256 * KiB, count: 2 });
  const parts = await drain(reader, async () => undefined);
  assert.equal((await exited)[0], 0);
  assert.ok(Buffer.concat(parts).equals(data));
  assert.ok(parts.every((p) => p.length > 0 && p.length <= 256 * KiB));
});

test('a slow consumer: reading pauses while it holds the other segment, nothing it holds is overwritten, and full segments are handed over', async () => {
  const { file, data } = dataFile(6 * MiB + 777);
  const { reader, exited } = await catInto(file, { size: 128 * KiB, count: 2 });
  // Each hold lets cat fill the other segment and the socket, so reading must pause.
  const parts = await drain(reader, () => sleep(5));
  assert.equal((await exited)[0], 0);
  assert.ok(Buffer.concat(parts).equals(data));
  const full = parts.filter((p) => p.length > 64 * KiB).length;
  assert.ok(full >= parts.length - 2, `segments were handed over full while the consumer was slow (${full} of ${parts.length})`);
});

test('a consumer that starts late: every segment filled and queued, reading resumes at the one given back first', async () => {
  for (const count of [2, 3]) {
    const { file, data } = dataFile(3 * MiB + 99);
    const { reader, exited } = await catInto(file, { size: 128 * KiB, count });
    await sleep(200); // cat fills every segment and the socket before anything is taken
    const parts = await drain(reader, (i) => (i % 3 === 0 ? sleep(2) : Promise.resolve()));
    assert.equal((await exited)[0], 0);
    assert.ok(Buffer.concat(parts).equals(data), `${count} segments: the bytes arrived whole and in order`);
  }
});

test('output that ends inside a segment is handed over, and an empty output ends at once', async () => {
  const { file, data } = dataFile(1000);
  const { reader, exited } = await catInto(file, {});
  const parts = await drain(reader, async () => undefined);
  await exited;
  assert.ok(Buffer.concat(parts).equals(data));
  const empty = await catInto('/dev/null', {});
  assert.equal(await empty.reader.next(), undefined);
  await empty.exited;
});

test('destroying the reader fails a waiting consumer with the reason given', async () => {
  const { writeEnd, reader } = await toolOutput();
  const child = spawn('sleep', ['10'], { stdio: ['ignore', writeEnd, 'inherit'] });
  writeEnd.destroy();
  const waiting = reader.next();
  reader.destroy(new Error('stopped by the test'));
  await assert.rejects(waiting, /stopped by the test/);
  child.kill('SIGKILL');
  await once(child, 'close');
});

test('segments must be at least two of 128 KiB', async () => {
  await assert.rejects(toolOutput({ count: 1 }), /at least two segments of 128 KiB/);
  await assert.rejects(toolOutput({ size: 64 * KiB }), /at least two segments of 128 KiB/);
});

/** A program that writes a file 8 KiB at a time with a short pause between writes, as xz paces its output. */
async function smallWritesInto(file: string, opts: SegmentOptions) {
  const { writeEnd, reader } = await toolOutput(opts);
  const script = 'open(my $f, "<", $ARGV[0]) or die; while (my $n = sysread($f, my $b, 8192)) { syswrite(STDOUT, $b, $n) == $n or die; select(undef, undef, undef, 0.00005) }';
  const child = spawn('perl', ['-e', script, file], { stdio: ['ignore', writeEnd, 'inherit'] });
  writeEnd.destroy();
  return { reader, exited: once(child, 'close') };
}

test('a writer of 8 KiB pieces: with minHandOver and gatherMs, a waiting consumer gets chunks of at least 128 KiB, every byte in order', async () => {
  const { file, data } = dataFile(8 * MiB + 8 * KiB);
  const plain = await smallWritesInto(file, { size: 512 * KiB, count: 2 });
  const plainParts = await drain(plain.reader, async () => undefined);
  assert.equal((await plain.exited)[0], 0);
  const gathered = await smallWritesInto(file, { size: 512 * KiB, count: 2, minHandOver: 128 * KiB, gatherMs: 1 });
  const parts = await drain(gathered.reader, async () => undefined);
  assert.equal((await gathered.exited)[0], 0);
  assert.ok(Buffer.concat(plainParts).equals(data));
  assert.ok(Buffer.concat(parts).equals(data));
  // How many reads there were is not visible here; how small the chunks were is.
  assert.ok(plainParts.some((p) => p.length < 128 * KiB), 'without the options, the writer\'s pace gives small chunks');
  assert.ok(parts.slice(0, -1).every((p) => p.length >= 128 * KiB), `chunks below 128 KiB before the last: ${parts.filter((p) => p.length < 128 * KiB).length}`);
});
