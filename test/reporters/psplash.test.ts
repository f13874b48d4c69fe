import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PsplashReporter, encodeCommand, splashCommands, splashTarget } from '../../src/agent/reporters/psplash.ts';
import { Events, collectWarnings } from './helpers.ts';

function withFifo(fn: (fifo: string, dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bootline-psplash-'));
    const fifo = join(dir, 'psplash_fifo');
    execFileSync('mkfifo', [fifo]);
    try {
      await fn(fifo, dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** A psplash stand-in: a non-blocking reader that returns whatever is in the pipe. */
function openReader(fifo: string) {
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  return {
    read(): string {
      const buf = Buffer.alloc(65536);
      let out = '';
      for (;;) {
        let n = 0;
        try {
          n = readSync(fd, buf, 0, buf.length, null);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break;
          throw err;
        }
        if (n === 0) break;
        out += buf.subarray(0, n).toString('utf8');
      }
      return out;
    },
    close: () => closeSync(fd),
  };
}

test('commands are NUL-terminated, with control characters flattened', () => {
  assert.deepEqual(encodeCommand('PROGRESS 42'), Buffer.from('PROGRESS 42\0'));
  assert.deepEqual(encodeCommand('MSG a\nb\0c'), Buffer.from('MSG a b c\0'));
  assert.ok(encodeCommand(`MSG ${'x'.repeat(5000)}`).length < 512);
});

test('the splash shows the task name, its failure, and Done or Failed at the end', () => {
  const ev = new Events();
  let s = splashTarget(ev.taskStart(1, 33.9), {});
  assert.deepEqual(s, { percent: 33, msg: 'write-image' });
  s = splashTarget(ev.progress(1, 50, 50), s);
  assert.deepEqual(s, { percent: 50, msg: 'write-image' });
  s = splashTarget(ev.taskEnd(1, 'failed', 66), s);
  assert.equal(s.msg, 'write-image failed');
  assert.equal(splashTarget(ev.runEnd('ok'), s).msg, 'Done');
  assert.equal(splashTarget(ev.runEnd('aborted', 66), s).msg, 'Failed');
  assert.deepEqual(splashCommands({ percent: 50, msg: 'a' }, { percent: 50, msg: 'a' }), []);
  assert.deepEqual(splashCommands({}, { percent: 7, msg: 'a' }), ['MSG a', 'PROGRESS 7']);
});

test(
  'a reader on the FIFO gets exactly the psplash commands',
  withFifo(async (fifo) => {
    const reader = openReader(fifo);
    try {
      const w = collectWarnings();
      const r = new PsplashReporter({ type: 'psplash', fifo }, { warn: w.warn });
      assert.equal(r.name, `psplash(${fifo})`);
      const ev = new Events();
      r.handle(ev.runStart());
      r.handle(ev.taskStart(0, 0));
      r.handle(ev.progress(0, 10, 3.2));
      r.handle(ev.progress(0, 20, 3.9)); // same integer percent: nothing sent
      r.handle(ev.taskEnd(0, 'failed', 33));
      r.handle(ev.runEnd('failed', 33, 'partition'));
      await r.close(Date.now() + 100);
      assert.equal(reader.read(), 'PROGRESS 0\0MSG partition\0PROGRESS 3\0MSG partition failed\0PROGRESS 33\0MSG Failed\0');
      assert.deepEqual(w.messages, []);
    } finally {
      reader.close();
    }
  }),
);

test(
  'no reader yet: nothing is thrown or warned, and the splash is caught up when it appears',
  withFifo(async (fifo) => {
    let now = 0;
    const w = collectWarnings();
    const r = new PsplashReporter({ type: 'psplash', fifo }, { warn: w.warn, now: () => now });
    const ev = new Events();
    r.handle(ev.runStart()); // ENXIO
    const reader = openReader(fifo);
    try {
      now += 500;
      r.handle(ev.taskStart(0, 10)); // within the retry interval: not even tried
      assert.equal(reader.read(), '');
      now += 600;
      r.handle(ev.progress(0, 50, 20));
      assert.equal(reader.read(), 'MSG partition\0PROGRESS 20\0');
      assert.deepEqual(w.messages, []);
      await r.close(Date.now() + 100);
    } finally {
      reader.close();
    }
  }),
);

test(
  'psplash going away (EPIPE) drops the message; a new psplash gets the full state',
  withFifo(async (fifo) => {
    const r = new PsplashReporter({ type: 'psplash', fifo }, { warn: () => {}, reopenMs: 0 });
    const ev = new Events();
    const first = openReader(fifo);
    r.handle(ev.taskStart(1, 33));
    assert.equal(first.read(), 'MSG write-image\0PROGRESS 33\0');
    first.close();
    r.handle(ev.progress(1, 10, 40)); // EPIPE
    const second = openReader(fifo);
    try {
      r.handle(ev.progress(1, 20, 45));
      assert.equal(second.read(), 'MSG write-image\0PROGRESS 45\0');
      await r.close(Date.now() + 100);
    } finally {
      second.close();
    }
  }),
);

test('a path that is not a FIFO is warned about once and left alone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bootline-psplash-'));
  try {
    const path = join(dir, 'psplash_fifo');
    writeFileSync(path, '');
    const w = collectWarnings();
    const r = new PsplashReporter({ type: 'psplash', fifo: path }, { warn: w.warn, reopenMs: 0 });
    for (const e of new Events().fullRun()) r.handle(e);
    await r.close(Date.now() + 100);
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', /is not a FIFO/);
    assert.equal(readFileSync(path, 'utf8'), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a missing FIFO (psplash not running) is silent', async () => {
  const w = collectWarnings();
  const r = new PsplashReporter({ type: 'psplash', fifo: join(tmpdir(), 'bootline-no-such-fifo') }, { warn: w.warn, reopenMs: 0 });
  for (const e of new Events().fullRun()) r.handle(e);
  await r.close(Date.now() + 100);
  assert.deepEqual(w.messages, []);
});
