// Spare buffers handed back and out again (src/image/buffer-pool.ts), and a segment ring that
// takes its segments from a pool and gives them back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BufferPool } from '../../src/image/buffer-pool.ts';
import { SegmentRing } from '../../src/image/segment-ring.ts';

test('a buffer given back is handed out again; beyond the spares kept, wrong sizes and twice-given ones are dropped', () => {
  const pool = new BufferPool(16, 2);
  const a = pool.take();
  const b = pool.take();
  const c = pool.take();
  assert.equal(new Set([a, b, c]).size, 3, 'nothing is handed out twice while in use');
  assert.equal(a.length, 16);
  pool.give(a);
  pool.give(a);
  assert.equal(pool.spares, 1, 'the same buffer given twice is kept once');
  pool.give(Buffer.alloc(8));
  assert.equal(pool.spares, 1, 'a buffer of another size is not kept');
  pool.give(b);
  pool.give(c);
  assert.equal(pool.spares, 2, 'at most `keep` spares');
  const again = [pool.take(), pool.take()];
  assert.deepEqual(new Set(again), new Set([b, a]));
  assert.equal(pool.spares, 0);
});

test('a disposed ring gives its segments back and refuses to be written', () => {
  const pool = new BufferPool(16, 4);
  const ring = new SegmentRing(16, 2, pool);
  ring.added(Buffer.from('queued').copy(ring.room()));
  ring.handOver();
  ring.dispose();
  assert.equal(pool.spares, 2);
  assert.equal(ring.take(), undefined, 'what was queued is gone with the segments');
  assert.throws(() => ring.room(), /disposed/);
  ring.dispose();
  assert.equal(pool.spares, 2, 'disposing twice gives nothing twice');
  // The next ring takes the same segments.
  const next = new SegmentRing(16, 2, pool);
  assert.equal(pool.spares, 0);
  next.added(Buffer.from('fresh').copy(next.room()));
  next.handOver();
  assert.equal(next.take()?.toString(), 'fresh');
  assert.throws(() => new SegmentRing(8, 2, pool), /16-byte buffers cannot give 8-byte segments/);
});
