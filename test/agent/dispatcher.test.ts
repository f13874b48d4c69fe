import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dispatcher } from '../../src/agent/dispatcher.ts';
import type { BootlineEvent } from '../../src/events.ts';
import type { Reporter } from '../../src/agent/reporters/reporter.ts';

let seq = 0;
const base = () => ({ runId: 'r', seq: seq++, ts: new Date().toISOString() });
const progress = (task: string, taskProgress: number): BootlineEvent => ({ type: 'task-progress', ...base(), progress: taskProgress / 2, task, index: 0, count: 1, taskProgress });
const start = (task: string): BootlineEvent => ({ type: 'task-start', ...base(), progress: 0, task, index: 0, count: 1, attempt: 1, taskProgress: 0 });
const end = (task: string): BootlineEvent => ({ type: 'task-end', ...base(), progress: 50, task, index: 0, count: 1, status: 'ok', attempt: 1, durationMs: 1, taskProgress: 100, optional: false });

function collector(): Reporter & { got: BootlineEvent[] } {
  const got: BootlineEvent[] = [];
  return { name: 'collector', got, handle: (e) => void got.push(e) };
}

test('progress is rate-limited per reporter but the first and last of a task go out', async () => {
  let now = 1000;
  const r = collector();
  const d = new Dispatcher([{ reporter: r, interval: 1000 }], () => {}, () => now);
  d.emit(start('a'));
  for (let p = 1; p <= 50; p++) {
    now += 10;
    d.emit(progress('a', p * 2));
  }
  d.emit(end('a'));
  await d.close(Date.now() + 1000);
  const prog = r.got.filter((e) => e.type === 'task-progress').map((e) => (e as { taskProgress: number }).taskProgress);
  assert.deepEqual(prog, [2, 100], 'first progress, then the last one before task-end');
  assert.deepEqual(r.got.map((e) => e.type), ['task-start', 'task-progress', 'task-progress', 'task-end']);
});

test('a suppressed progress event goes out once its interval has passed', async () => {
  const r = collector();
  const d = new Dispatcher([{ reporter: r, interval: 50 }], () => {});
  d.emit(progress('a', 10));
  d.emit(progress('a', 20));
  d.emit(progress('a', 30));
  await new Promise((res) => setTimeout(res, 120));
  assert.deepEqual(r.got.map((e) => (e as { taskProgress: number }).taskProgress), [10, 30]);
  await d.close(Date.now() + 100);
});

test('a failing reporter is warned about once and does not stop the others', async () => {
  const warnings: string[] = [];
  const good = collector();
  const bad: Reporter = { name: 'bad', handle: () => { throw new Error('disk full'); } };
  const d = new Dispatcher([{ reporter: bad, interval: 0 }, { reporter: good, interval: 0 }], (m) => warnings.push(m));
  d.emit(start('a'));
  d.emit(end('a'));
  await d.close(Date.now() + 1000);
  assert.equal(good.got.length, 2);
  assert.equal(warnings.filter((w) => w.includes('disk full')).length, 1);
});

test('a reporter that hangs does not stall emit() and close() returns by its deadline', async () => {
  const warnings: string[] = [];
  const stuck: Reporter = { name: 'stuck', handle: () => new Promise(() => {}) };
  const d = new Dispatcher([{ reporter: stuck, interval: 0 }], (m) => warnings.push(m));
  const t0 = Date.now();
  for (let i = 0; i < 1000; i++) d.emit(start('a'));
  assert.ok(Date.now() - t0 < 500, 'emit does not wait for the reporter');
  await d.close(Date.now() + 200);
  assert.ok(Date.now() - t0 < 2000);
  assert.ok(warnings.some((w) => /stuck: 999 event\(s\) not delivered/.test(w)), warnings.join('\n'));
});

test('the queue bound drops progress, never milestones', async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const got: BootlineEvent[] = [];
  const slow: Reporter = { name: 'slow', handle: async (e) => { await gate; got.push(e); } };
  const d = new Dispatcher([{ reporter: slow, interval: 0, queueSize: 5 }], () => {});
  d.emit(start('a'));
  for (let i = 0; i < 20; i++) d.emit(progress('a', i));
  d.emit(end('a'));
  release();
  await d.close(Date.now() + 1000);
  assert.equal(got.filter((e) => e.type === 'task-start').length, 1);
  assert.equal(got.filter((e) => e.type === 'task-end').length, 1);
  assert.ok(got.length <= 6, `bounded: got ${got.length}`);
  assert.equal((got.filter((e) => e.type === 'task-progress').at(-1) as { taskProgress: number }).taskProgress, 19, 'the newest progress survives');
});

test('reporters only get the event types they asked for', async () => {
  const r = collector();
  const d = new Dispatcher([{ reporter: r, interval: 0, events: ['task-end'] }], () => {});
  d.emit(start('a'));
  d.emit(end('a'));
  await d.close(Date.now() + 100);
  assert.deepEqual(r.got.map((e) => e.type), ['task-end']);
});
