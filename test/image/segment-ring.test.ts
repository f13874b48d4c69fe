// The reused-segment bookkeeping shared by the HTTP body and a decompressor's output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SegmentRing } from '../../src/image/segment-ring.ts';

/** Writes `text` into the ring's room and hands the segment over. */
function put(ring: SegmentRing, text: string): void {
  ring.added(Buffer.from(text).copy(ring.room()));
  ring.handOver();
}

test('chunks come out in order with their lengths, and a segment is reused once given back', () => {
  const ring = new SegmentRing(16, 2);
  put(ring, 'one');
  assert.equal(ring.blocked, false);
  put(ring, 'second');
  // Both queued: the next bytes have nowhere to go.
  assert.equal(ring.blocked, true);
  assert.equal(ring.queued, 2);
  assert.equal(ring.take()?.toString(), 'one');
  // Taken but held: still in use.
  assert.equal(ring.blocked, true);
  ring.release();
  assert.equal(ring.blocked, false);
  put(ring, 'third');
  assert.equal(ring.take()?.toString(), 'second');
  ring.release();
  assert.equal(ring.take()?.toString(), 'third');
  assert.equal(ring.take(), undefined);
});

test('while blocked, room() is the segment the consumer gives back first: the held one', () => {
  const ring = new SegmentRing(8, 2);
  put(ring, 'aaaa');
  const held = ring.take() as Buffer;
  put(ring, 'bbbb');
  assert.equal(ring.blocked, true);
  // The next read is aimed at the held segment, not at the queued one.
  assert.equal(ring.room().buffer, held.buffer);
  assert.equal(ring.room().byteOffset, held.byteOffset);
  ring.release();
  assert.equal(ring.blocked, false);
  put(ring, 'cccc');
  assert.equal(ring.take()?.toString(), 'bbbb');
  ring.release();
  assert.equal(ring.take()?.toString(), 'cccc', 'the queued chunk was not overwritten');
});

test('with three segments the producer runs two ahead of the chunk held', () => {
  const ring = new SegmentRing(4, 3);
  put(ring, 'a');
  const a = ring.take();
  assert.equal(a?.toString(), 'a');
  put(ring, 'b');
  assert.equal(ring.blocked, false);
  put(ring, 'c');
  assert.equal(ring.blocked, true);
  assert.equal(a?.toString(), 'a', 'the held chunk is untouched');
  ring.release();
  assert.equal(ring.blocked, false);
  assert.deepEqual([ring.take()?.toString(), (ring.release(), ring.take())?.toString()], ['b', 'c']);
});

test('bytes added in several reads make one chunk', () => {
  const ring = new SegmentRing(16, 2);
  ring.added(Buffer.from('abc').copy(ring.room()));
  ring.added(Buffer.from('def').copy(ring.room()));
  assert.equal(ring.fill, 6);
  ring.handOver();
  assert.equal(ring.fill, 0);
  assert.equal(ring.take()?.toString(), 'abcdef');
});

test('a ring of one segment is refused', () => {
  assert.throws(() => new SegmentRing(16, 1), /at least two segments/);
});
