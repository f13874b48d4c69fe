// Local reads into two reused buffers: ranges in order, each chunk tagged with its range, and a
// file that ends inside a bounded range refused (it was truncated while it was read).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readPooled, readRanges } from '../../src/image/sources/pooled-read.ts';
import { tempDir } from '../helpers.ts';

const MiB = 1024 * 1024;

async function collect(path: string, ranges: { start: number; end: number }[]) {
  const parts = new Map<number, Buffer[]>();
  for await (const { range, chunk } of readRanges(path, ranges)) {
    // Views of reused buffers: copied, as a consumer that keeps them must.
    parts.set(range, [...(parts.get(range) ?? []), Buffer.from(chunk)]);
  }
  return [...parts].map(([range, bufs]) => [range, Buffer.concat(bufs)] as const);
}

test('ranges of a file arrive in order, each whole and tagged with its index, across the 1 MiB reads', async () => {
  const file = join(tempDir(), 'data');
  const data = randomBytes(3 * MiB + 12345);
  writeFileSync(file, data);
  const ranges = [
    { start: 0, end: 10 },
    { start: 100, end: 100 }, // empty: nothing is yielded for it
    { start: MiB - 7, end: 2 * MiB + 300 },
    { start: 3 * MiB, end: Infinity },
  ];
  const got = await collect(file, ranges);
  assert.deepEqual(
    got.map(([r]) => r),
    [0, 2, 3],
  );
  assert.ok(got[0]![1].equals(data.subarray(0, 10)));
  assert.ok(got[1]![1].equals(data.subarray(MiB - 7, 2 * MiB + 300)));
  assert.ok(got[2]![1].equals(data.subarray(3 * MiB)), 'an unbounded range reads to the end');

  const whole: Buffer[] = [];
  for await (const c of readPooled(file, 5)) whole.push(Buffer.from(c));
  assert.ok(Buffer.concat(whole).equals(data.subarray(5)));
});

test('a file that ends inside a bounded range is refused, naming the byte and the range', async () => {
  const file = join(tempDir(), 'short');
  writeFileSync(file, randomBytes(1000));
  await assert.rejects(collect(file, [{ start: 0, end: 500 }, { start: 900, end: 2000 }]), (e: Error) => {
    assert.match(e.message, /short ended at byte 1000, inside bytes 900-2000: it was truncated while it was read/);
    return true;
  });
  await assert.rejects(collect(file, [{ start: -1, end: 3 }]), /invalid range -1-3/);
});
