// The figures `bootline lab sim` prints: event latency percentiles, the server's time per
// event batch read from its log, the machine's used memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { eventLatencies, eventPostTimes, percentile, summarize } from '../../src/lab/event-latency.ts';
import { usedMiB } from '../../src/lab/machine-memory.ts';

test('p50 and p99 are nearest-rank percentiles of all the latencies', () => {
  const values = Array.from({ length: 200 }, (_, i) => 200 - i);
  assert.deepEqual(summarize(values), { count: 200, p50Ms: 100, p99Ms: 198, maxMs: 200 });
  assert.equal(percentile([7], 99), 7);
  assert.equal(summarize([]), undefined);
});

test('an event latency runs from the time the agent made it to the time the server took it', () => {
  assert.deepEqual(
    eventLatencies([
      { runId: 'r', seq: 0, ts: '2026-12-01T09:00:00.000Z', receivedAt: '2026-12-01T09:00:01.250Z' },
      { runId: 'r', seq: 1, ts: '2026-12-01T09:00:00.500Z', receivedAt: '2026-12-01T09:00:00.512Z' },
    ]),
    [1250, 12],
  );
  assert.throws(() => eventLatencies([{ runId: 'r7', seq: 3, ts: 'yesterday', receivedAt: '2026-12-01T09:00:00.000Z' }]), /run r7 seq 3: unreadable time \(ts yesterday/);
});

test("the server's time per event batch comes from its answered event posts only, matched by process and request id", () => {
  const line = (o: object) => JSON.stringify({ level: 30, time: 1, hostname: 'vm', ...o });
  const log = [
    line({ pid: 1, reqId: 'req-1', req: { method: 'POST', url: '/api/v1/device/events' }, msg: 'incoming request' }),
    line({ pid: 1, reqId: 'req-2', req: { method: 'GET', url: '/api/v1/device/plan' }, msg: 'incoming request' }),
    // A restarted server (another pid) counts its requests from 1 again.
    line({ pid: 2, reqId: 'req-1', req: { method: 'POST', url: '/api/v1/device/events' }, msg: 'incoming request' }),
    line({ pid: 2, reqId: 'req-2', req: { method: 'POST', url: '/api/v1/device/events' }, msg: 'incoming request' }),
    line({ pid: 1, reqId: 'req-2', res: { statusCode: 200 }, responseTime: 99, msg: 'request completed' }),
    line({ pid: 2, reqId: 'req-1', res: { statusCode: 200 }, responseTime: 4.5, msg: 'request completed' }),
    line({ pid: 1, reqId: 'req-1', res: { statusCode: 200 }, responseTime: 12.25, msg: 'request completed' }),
    line({ pid: 2, reqId: 'req-2', res: { statusCode: 409 }, responseTime: 3, msg: 'request completed' }),
    'not json',
    '{"truncated',
  ].join('\n');
  assert.deepEqual(eventPostTimes(log), [4.5, 12.25]);
});

test("the machine's used memory is MemTotal minus MemAvailable, and a meminfo without them is an error", () => {
  assert.equal(usedMiB('MemTotal:       24683520 kB\nMemFree:        1000 kB\nMemAvailable:   20489216 kB\n'), (24683520 - 20489216) / 1024);
  assert.throws(() => usedMiB('MemTotal: 1 kB\n'), /\/proc\/meminfo has no MemAvailable line/);
});
