import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressTracker, BELOW_DONE } from '../../src/agent/progress.ts';

test('overall progress is weighted by effort', () => {
  const p = new ProgressTracker([2, 1, 1]);
  assert.deepEqual(p.shares(), [50, 25, 25]);
  assert.equal(p.update(0, 50), 25);
  assert.equal(p.finish(0), 50);
  assert.equal(p.update(1, 40), 60);
  assert.equal(p.finish(1), 75);
});

test('progress never goes backwards when a retry restarts a task at 0%', () => {
  const p = new ProgressTracker([1, 1]);
  assert.equal(p.update(0, 80), 40);
  assert.equal(p.update(0, 0), 40, 'retry starts again at 0% but the shown value stays');
  assert.equal(p.update(0, 90), 45);
});

test('progress reaches 100 only when the run succeeds', () => {
  const p = new ProgressTracker([1]);
  assert.equal(p.update(0, 100), BELOW_DONE);
  assert.equal(p.finish(0), BELOW_DONE);
  assert.equal(p.complete(), 100);
});

test('out-of-range and non-finite task progress is clamped', () => {
  const p = new ProgressTracker([1, 3]);
  assert.equal(p.update(0, 250), 25);
  assert.equal(p.update(1, Number.NaN), 25);
  assert.equal(p.update(1, -5), 25);
});

test('efforts must be positive', () => {
  assert.throws(() => new ProgressTracker([1, 0]), /positive/);
});
