import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LedReporter, ledWrites, resolvePattern } from '../../src/agent/reporters/led.ts';
import { Events, collectWarnings } from './helpers.ts';

/** A fake /sys/class/leds: attribute files exist up front, as plain files. */
function fakeSysfs(leds: Record<string, { max?: number }>): string {
  const root = mkdtempSync(join(tmpdir(), 'bootline-leds-'));
  for (const [name, { max }] of Object.entries(leds)) {
    const dir = join(root, name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'trigger'), 'none [heartbeat] timer');
    writeFileSync(join(dir, 'brightness'), '0');
    writeFileSync(join(dir, 'delay_on'), '1000');
    writeFileSync(join(dir, 'delay_off'), '1000');
    if (max !== undefined) writeFileSync(join(dir, 'max_brightness'), `${max}\n`);
  }
  return root;
}

function read(root: string, led: string) {
  const f = (n: string) => readFileSync(join(root, led, n), 'utf8');
  return { trigger: f('trigger'), delay_on: f('delay_on'), delay_off: f('delay_off'), brightness: f('brightness') };
}

test('patterns turn into sysfs writes with the trigger first', () => {
  assert.deepEqual(ledWrites(resolvePattern('running'), 1), [
    ['trigger', 'timer'],
    ['delay_on', '500'],
    ['delay_off', '500'],
  ]);
  assert.deepEqual(ledWrites(resolvePattern('success'), 255), [
    ['trigger', 'none'],
    ['brightness', '255'],
  ]);
  assert.deepEqual(ledWrites(resolvePattern('failure'), 1), [
    ['trigger', 'timer'],
    ['delay_on', '100'],
    ['delay_off', '100'],
  ]);
  assert.deepEqual(ledWrites({ mode: 'off' }, 1), [
    ['trigger', 'none'],
    ['brightness', '0'],
  ]);
});

test('the LED blinks while running and stays on at max brightness on success', () => {
  const root = fakeSysfs({ 'status:green': { max: 255 } });
  try {
    const w = collectWarnings();
    const r = new LedReporter({ type: 'led', root, leds: ['status:green'] }, { warn: w.warn });
    assert.equal(r.name, 'led(status:green)');
    const ev = new Events();
    r.handle(ev.runStart());
    assert.deepEqual(read(root, 'status:green'), { trigger: 'timer', delay_on: '500', delay_off: '500', brightness: '0' });
    r.handle(ev.taskStart(0, 0));
    r.handle(ev.runEnd('ok'));
    assert.equal(read(root, 'status:green').trigger, 'none');
    assert.equal(read(root, 'status:green').brightness, '255');
    assert.deepEqual(w.messages, []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a failed or aborted run blinks fast; without max_brightness "on" means 1', () => {
  const root = fakeSysfs({ a: {}, b: {} });
  try {
    const r = new LedReporter({ type: 'led', root, leds: ['a', 'b'] }, { warn: () => {} });
    const ev = new Events();
    r.handle(ev.runStart());
    r.handle(ev.runEnd('aborted'));
    assert.deepEqual(read(root, 'a'), { trigger: 'timer', delay_on: '100', delay_off: '100', brightness: '0' });
    assert.deepEqual(read(root, 'b'), read(root, 'a'));
    r.handle(ev.runEnd('ok'));
    assert.equal(read(root, 'b').brightness, '1');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('configured patterns override the defaults per state', () => {
  const root = fakeSysfs({ a: { max: 255 } });
  try {
    const r = new LedReporter(
      {
        type: 'led',
        root,
        leds: ['a'],
        patterns: {
          running: { mode: 'blink', delayOn: 50, delayOff: 950 },
          success: { mode: 'off' },
          failure: { mode: 'on', brightness: 7 },
        },
      },
      { warn: () => {} },
    );
    const ev = new Events();
    r.handle(ev.runStart());
    assert.deepEqual(read(root, 'a'), { trigger: 'timer', delay_on: '50', delay_off: '950', brightness: '0' });
    r.handle(ev.runEnd('failed'));
    assert.equal(read(root, 'a').brightness, '7');
    r.handle(ev.runEnd('ok'));
    assert.deepEqual(read(root, 'a'), { trigger: 'none', delay_on: '50', delay_off: '950', brightness: '0' });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a missing LED is warned about once, naming the path, and the others still work', () => {
  const root = fakeSysfs({ good: {} });
  try {
    const w = collectWarnings();
    const r = new LedReporter({ type: 'led', root, leds: ['typo', 'good'] }, { warn: w.warn });
    const ev = new Events();
    r.handle(ev.runStart());
    r.handle(ev.runEnd('ok'));
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', new RegExp(`${join(root, 'typo')} does not exist; check the LED name`));
    assert.equal(read(root, 'good').brightness, '1');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a missing timer attribute is warned about once and never created', () => {
  const root = fakeSysfs({ a: {} });
  rmSync(join(root, 'a', 'delay_on'));
  try {
    const w = collectWarnings();
    const r = new LedReporter({ type: 'led', root, leds: ['a'] }, { warn: w.warn });
    r.handle(new Events().runStart());
    r.handle(new Events().runStart());
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', /delay_on.*ENOENT.*timer trigger/);
    assert.throws(() => readFileSync(join(root, 'a', 'delay_on')), /ENOENT/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
