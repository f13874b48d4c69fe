import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import {
  ConsoleReporter,
  applyTtyEvent,
  estimateEta,
  formatTransfer,
  initialTtyState,
  renderPlain,
  renderTty,
} from '../../src/agent/reporters/console.ts';
import { Events, collectWarnings } from './helpers.ts';
import { formatBytes, formatDuration } from '../../src/format.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

const T0 = Date.parse('2024-05-01T10:00:00Z');

test('sizes and rates read like "512.0 MiB / 2.0 GiB, 85.3 MiB/s"', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatTransfer({ bytesDone: 512 * 2 ** 20, bytesTotal: 2 * 2 ** 30, rate: 85.3 * 2 ** 20 }), '512.0 MiB / 2.0 GiB, 85.3 MiB/s');
  assert.equal(formatTransfer({}), '');
});

test('durations read as seconds, then minutes, then hours', () => {
  assert.equal(formatDuration(1234), '1.2 s');
  assert.equal(formatDuration(65_000), '1m 05s');
  assert.equal(formatDuration(3_723_000), '1h 02m 03s');
  assert.equal(formatDuration(-5), '0.0 s');
});

test('plain output reads like Isar: task header, handling line, success with duration', () => {
  const ev = new Events();
  assert.deepEqual(renderPlain(ev.runStart()), [
    'Found 3 tasks to execute',
    '  1. partition [builtin, 33%]',
    '  2. write-image [builtin, 33%]',
    '  3. encrypt [builtin, 33%]',
  ]);
  assert.deepEqual(renderPlain(ev.taskStart(1, 33.7)), ['Task 2/3 - 33%', 'Handling task write-image']);
  assert.deepEqual(renderPlain(ev.taskEnd(1, 'ok', 66)), ['write-image executed successfully (1.2 s)']);
  assert.deepEqual(renderPlain(ev.taskEnd(1, 'failed', 66, { message: 'dd: no space left' })), ['write-image failed: dd: no space left']);
  assert.deepEqual(renderPlain(ev.taskEnd(2, 'skipped', 66)), ['encrypt skipped']);
  assert.deepEqual(renderPlain(ev.runEnd('ok')), ['All tasks completed! (1m 05s)']);
});

test('a failed run names the failed task, its last lines and what was not run', () => {
  const ev = new Events();
  assert.deepEqual(renderPlain(ev.runEnd('failed', 40, 'write-image')), [
    'Run failed after 1m 05s: task write-image failed: exit code 2',
    '  | dd: error writing',
    'Not run: encrypt',
  ]);
});

test('script output is indented; agent warnings and errors are prefixed; debug is hidden', () => {
  const ev = new Events();
  assert.deepEqual(renderPlain(ev.log('line 1\nline 2\n', { stream: 'stderr' })), ['  | line 1', '  | line 2']);
  assert.deepEqual(renderPlain(ev.log('disk is slow', { stream: 'agent', level: 'warn' })), ['warning: disk is slow']);
  assert.deepEqual(renderPlain(ev.log('boom', { stream: 'agent', level: 'error' })), ['error: boom']);
  assert.deepEqual(renderPlain(ev.log('noise', { stream: 'agent', level: 'debug' })), []);
});

test('plain mode prints progress only every 10% or when the message changes', () => {
  const out = new Capture();
  const r = new ConsoleReporter({ type: 'console', mode: 'plain' }, { warn: () => {}, stdout: out });
  const ev = new Events();
  r.handle(ev.taskStart(1, 33));
  for (const p of [1, 5, 9, 11, 15, 22]) r.handle(ev.progress(1, p, 40, { message: 'writing' }));
  r.handle(ev.progress(1, 23, 40, { message: 'verifying' }));
  assert.equal(
    out.text,
    ['Task 2/3 - 33%', 'Handling task write-image', '  write-image: 1% writing', '  write-image: 11% writing', '  write-image: 22% writing', '  write-image: 23% verifying', ''].join(
      '\n',
    ),
  );
});

test('auto mode is plain when the output is not a terminal', () => {
  const r = new ConsoleReporter({ type: 'console' }, { warn: () => {}, stdout: new Capture(), isTTY: false });
  assert.equal(r.mode, 'plain');
  const t = new ConsoleReporter({ type: 'console' }, { warn: () => {}, stdout: new Capture(), isTTY: true, tickMs: 0 });
  assert.equal(t.mode, 'tty');
});

test('the terminal block shows a mark per task, the bar, the current task with bytes and rate', () => {
  const ev = new Events();
  const s = initialTtyState();
  applyTtyEvent(s, ev.runStart(), T0);
  applyTtyEvent(s, ev.taskStart(0, 0), T0);
  applyTtyEvent(s, ev.taskEnd(0, 'ok', 33), T0);
  applyTtyEvent(s, ev.taskStart(1, 33), T0);
  applyTtyEvent(s, ev.progress(1, 25, 50, { message: 'writing', bytesDone: 512 * 2 ** 20, bytesTotal: 2 * 2 ** 30, rate: 85.3 * 2 ** 20 }), T0);
  assert.deepEqual(renderTty(s, T0 + 10_000), [
    'bootline: 1/3 tasks, elapsed 10.0 s, ETA 10.0 s',
    '  ✓ partition    1.2 s',
    '  ▶ write-image  25%',
    '  · encrypt',
    `[${'#'.repeat(15)}${'-'.repeat(15)}]  50%`,
    '▶ write-image 25%  writing  512.0 MiB / 2.0 GiB, 85.3 MiB/s',
  ]);
  applyTtyEvent(s, ev.taskEnd(1, 'failed', 66), T0);
  applyTtyEvent(s, ev.taskStart(2, 66), T0);
  applyTtyEvent(s, ev.taskEnd(2, 'skipped', 100), T0);
  const lines = renderTty(s, T0 + 20_000);
  assert.equal(lines[2], '  ✗ write-image  1.2 s');
  assert.equal(lines[3], '  - encrypt');
});

test('the ETA stays hidden until 2% and 3 s of progress', () => {
  const ev = new Events();
  const s = initialTtyState();
  applyTtyEvent(s, ev.runStart(), T0);
  applyTtyEvent(s, ev.progress(0, 10, 1.5), T0);
  assert.equal(estimateEta(s, T0 + 60_000), undefined);
  applyTtyEvent(s, ev.progress(0, 50, 25), T0);
  assert.equal(estimateEta(s, T0 + 2000), undefined);
  assert.equal(estimateEta(s, T0 + 10_000), 30_000);
});

test('lines wider than the terminal are cut so the redraw stays aligned', () => {
  const ev = new Events();
  const s = initialTtyState();
  applyTtyEvent(s, ev.runStart(), T0);
  applyTtyEvent(s, ev.progress(1, 10, 10, { message: 'x'.repeat(200) }), T0);
  for (const l of renderTty(s, T0, 40)) assert.ok(Array.from(l).length <= 39, l);
});

test('tty mode redraws the block in place and prints log lines above it', () => {
  const out = new Capture();
  let now = T0;
  const r = new ConsoleReporter({ type: 'console', mode: 'tty' }, { warn: () => {}, stdout: out, tickMs: 0, now: () => now });
  const ev = new Events();
  r.handle(ev.runStart());
  const firstBlock = out.text.split('\n').length - 1;
  assert.equal(firstBlock, 5, 'header, three tasks, bar');
  out.text = '';
  r.handle(ev.log('hello from the script'));
  // The old block is cleared line by line, the log line printed, then the block again.
  assert.ok(out.text.startsWith('\x1b[1A\x1b[2K'.repeat(firstBlock) + '\r  | hello from the script\n'), JSON.stringify(out.text));
  assert.match(out.text, /· partition/);
  now += 10;
  out.text = '';
  r.handle(ev.taskStart(0, 0));
  assert.match(out.text, /▶ partition/);
  out.text = '';
  r.handle(ev.runEnd('ok'));
  assert.match(out.text, /All tasks completed! \(1m 05s\)\n$/);
});

test('tty mode redraws progress at most every minRedrawMs, but keeps the last state', async () => {
  const out = new Capture();
  let now = T0;
  const r = new ConsoleReporter({ type: 'console', mode: 'tty' }, { warn: () => {}, stdout: out, tickMs: 0, minRedrawMs: 30, now: () => now });
  const ev = new Events();
  r.handle(ev.runStart());
  r.handle(ev.taskStart(1, 33));
  out.text = '';
  r.handle(ev.progress(1, 10, 40));
  r.handle(ev.progress(1, 20, 45));
  r.handle(ev.progress(1, 30, 50));
  assert.equal(out.text, '', 'no redraw within the interval');
  now += 30;
  await new Promise((res) => setTimeout(res, 50));
  assert.equal((out.text.match(/\[#/g) ?? []).length, 1, 'one redraw for three events');
  assert.match(out.text, /write-image 30%/);
  await r.close(Date.now() + 100);
});

test('extra ttys get the same output; one that cannot be opened is warned about once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bootline-console-'));
  try {
    const tty = join(dir, 'ttyS0');
    writeFileSync(tty, '');
    const w = collectWarnings();
    const out = new Capture();
    const r = new ConsoleReporter({ type: 'console', mode: 'plain', ttys: [tty, join(dir, 'missing', 'tty1')] }, { warn: w.warn, stdout: out });
    const ev = new Events();
    for (const e of ev.fullRun()) r.handle(e);
    await r.close(Date.now() + 100);
    assert.equal(readFileSync(tty, 'utf8'), out.text);
    assert.match(out.text, /All tasks completed!/);
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', /missing\/tty1.*ENOENT/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
