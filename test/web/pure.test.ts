// The dashboard's pure logic, without a browser: the event-stream parser, the line model
// fed stream entries, what a tile shows, filters and sorting, a run's timeline.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseSse } from '../../src/web/sse.ts';
import { LineModel, countStates, elapsedMs, etaMs, isStalled, matches, sortTiles, type StreamEntry, type Tile } from '../../src/web/line-model.ts';
import { buildTimeline } from '../../src/web/run-timeline.ts';
import type { Device, StoredEvent } from '../../src/api/admin.ts';
import { runEvents } from '../server/events-fixture.ts';

const device = (id: string, over: Partial<Device> = {}): Device => ({
  id, serial: id.toUpperCase(), uuid: null, macs: ['52:54:00:00:00:01'], hostname: null, batch: 'b1', firstSeen: '2026-12-01T10:00:00.000Z',
  lastSeen: '2026-12-01T10:00:00.000Z', state: 'running', progress: 10, currentTask: 'deploy', currentRun: 'r1', plan: 'p1', message: null, inventory: null, ...over,
});
const stored = (e: { type: string; runId: string; seq: number; ts: string }, deviceId = 'd1'): StoredEvent => ({ runId: e.runId, seq: e.seq, deviceId, type: e.type, ts: e.ts, receivedAt: e.ts, body: e as unknown as Record<string, unknown> });

describe('event stream parser', () => {
  it('reads messages split anywhere across chunks, skips comments, keeps the unfinished rest', () => {
    const text = 'retry: 2000\nevent: hello\ndata: {"a":1}\n\n: keep-alive\n\nid: 1\nevent: devices\ndata: [1,\ndata: 2]\n\nevent: devices\ndata: [3';
    for (let cut = 0; cut < text.length; cut++) {
      const first = parseSse(text.slice(0, cut));
      const second = parseSse(first.rest + text.slice(cut));
      const all = [...first.messages, ...second.messages];
      assert.deepEqual(all, [
        { event: 'hello', data: '{"a":1}' },
        { event: 'devices', data: '[1,\n2]', id: '1' },
      ], `cut at ${cut}`);
      assert.equal(second.rest, 'event: devices\ndata: [3');
    }
  });
});

describe('line model', () => {
  it("takes a stream entry's device record, its run's start, and the write rate of its latest progress", () => {
    const m = new LineModel();
    m.load({ now: '2026-12-01T10:00:00.000Z', stalledAfter: 120, counts: {}, devices: [{ ...device('d1'), runStartedAt: null }] });
    const v0 = m.version;
    const ev = runEvents('r1');
    const entry: StreamEntry = { device: device('d1', { progress: 25 }), events: [stored(ev[0]!), stored({ ...ev[2]!, type: 'task-progress' }), stored({ type: 'task-progress', runId: 'r1', seq: 9, ts: ev[0]!.ts, rate: 1048576, bytesDone: 5, bytesTotal: 10 } as never)], dropped: 0 };
    const before = m.tiles.get('d1');
    assert.deepEqual(m.apply([entry]), ['d1']);
    const t = m.tiles.get('d1')!;
    assert.notEqual(t, before, 'a changed tile is a new object (React skips the unchanged ones)');
    assert.ok(m.version > v0);
    assert.equal(t.device.progress, 25);
    assert.equal(t.device.runStartedAt, ev[0]!.ts);
    assert.equal(t.rate, 1048576);
    assert.equal(t.lastEventMs, Math.max(...entry.events.map((e) => Date.parse(e.ts))), 'the newest event applied');
    // The task ends: no throughput any more.
    m.apply([{ device: device('d1', { progress: 50 }), events: [stored({ type: 'task-end', runId: 'r1', seq: 10, ts: ev[0]!.ts })], dropped: 0 }]);
    assert.equal(m.tiles.get('d1')!.rate, null);
    assert.equal(m.tiles.get('d1')!.device.runStartedAt, ev[0]!.ts, 'the start stays while the run does');
    // A device never seen before appears.
    m.apply([{ device: device('d2'), events: [], dropped: 0 }]);
    assert.equal(m.tiles.size, 2);
  });

  it('shows stalled only for running devices silent longer than the stall time, and an ETA from the pace so far', () => {
    const now = Date.parse('2026-12-01T10:05:00.000Z');
    assert.equal(isStalled({ state: 'running', lastSeen: '2026-12-01T10:04:00.000Z' }, 30, now), true);
    assert.equal(isStalled({ state: 'running', lastSeen: '2026-12-01T10:04:40.000Z' }, 30, now), false);
    assert.equal(isStalled({ state: 'failed', lastSeen: '2026-12-01T09:00:00.000Z' }, 30, now), false);
    const d = { ...device('d1', { progress: 25 }), runStartedAt: '2026-12-01T10:00:00.000Z' };
    assert.equal(etaMs(d, now), 15 * 60_000, '5 minutes for 25%: 15 minutes to go');
    assert.equal(etaMs({ ...d, state: 'succeeded' }, now), null);
    const ended = { ...d, state: 'succeeded' as const, lastSeen: '2026-12-01T10:02:00.000Z' };
    assert.equal(elapsedMs(ended, now), 120_000, 'a finished run stops counting at its last event');
    assert.equal(elapsedMs(d, now), 300_000);
  });

  it('filters by state, stalled, plan, batch and text, counts per state, sorts what needs attention first', () => {
    const tiles: Tile[] = [
      { device: { ...device('ok1', { state: 'succeeded', progress: 100 }), runStartedAt: null }, rate: null, bytesDone: null, bytesTotal: null, lastEventMs: null, lastReceivedMs: null },
      { device: { ...device('run1', { plan: 'p2' }), runStartedAt: null }, rate: null, bytesDone: null, bytesTotal: null, lastEventMs: null, lastReceivedMs: null },
      { device: { ...device('bad1', { state: 'failed', message: 'disk full', batch: 'b2' }), runStartedAt: null }, rate: null, bytesDone: null, bytesTotal: null, lastEventMs: null, lastReceivedMs: null },
      { device: { ...device('run2', { lastSeen: '2026-12-01T09:00:00.000Z' }), runStartedAt: null }, rate: null, bytesDone: null, bytesTotal: null, lastEventMs: null, lastReceivedMs: null },
    ];
    const now = Date.parse('2026-12-01T10:00:30.000Z');
    const stalled = (t: Tile) => isStalled(t.device, 120, now);
    const f = { state: '' as const, plan: '', batch: '', text: '' };
    const ids = (ts: Tile[]) => ts.map((t) => t.device.id);
    assert.deepEqual(ids(sortTiles(tiles, 'attention', stalled, now)), ['bad1', 'run2', 'run1', 'ok1']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, state: 'stalled' }, stalled(t)))), ['run2']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, state: 'running' }, stalled(t)))), ['run1', 'run2']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, plan: 'p2' }, stalled(t)))), ['run1']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, batch: 'b2' }, stalled(t)))), ['bad1']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, text: 'DISK' }, stalled(t)))), ['bad1']);
    assert.deepEqual(ids(tiles.filter((t) => matches(t, { ...f, text: '52:54:00' }, stalled(t)))).length, 4);
    assert.deepEqual(countStates(tiles, stalled), { running: 2, failed: 1, enrolled: 0, succeeded: 1, aborted: 0, stalled: 1, total: 4 });
  });
});

describe('run timeline', () => {
  it("lists the plan's tasks with effort and share, each attempt's status, duration and failure message", () => {
    const ev = runEvents('r1', { fail: true, tasks: ['deploy', 'verify', 'finish'] }).map((e) => stored(e));
    const tl = buildTimeline(ev.slice().reverse());
    assert.deepEqual(
      tl.tasks.map((t) => [t.name, t.effort, Math.round(t.share ?? 0), t.status, t.attempts, t.durationMs]),
      [
        ['deploy', 1, 33, 'ok', 1, 10],
        ['verify', 1, 33, 'ok', 1, 10],
        ['finish', 1, 33, 'failed', 1, 10],
      ],
    );
    assert.match(tl.tasks[2]!.message!, /disk full/);
    assert.equal(tl.status, 'failed');
    // Mid-run: the current task is running with its own progress, the rest pending.
    const mid = buildTimeline(ev.slice(0, 8));
    assert.deepEqual(mid.tasks.map((t) => t.status), ['ok', 'running', 'pending']);
    assert.equal(mid.tasks[1]!.taskProgress, 50);
    assert.equal(mid.status, 'running');
  });
});
