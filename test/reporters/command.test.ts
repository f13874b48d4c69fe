import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CommandReporter, commandEnv } from '../../src/agent/reporters/command.ts';
import { Events, collectWarnings, until } from './helpers.ts';

function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'bootline-command-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

test('the environment carries the event', () => {
  const ev = new Events();
  ev.runStart();
  const e = ev.taskEnd(1, 'failed', 66.6, { message: 'dd failed' });
  const env = commandEnv(e, { PATH: '/bin' });
  assert.equal(env.PATH, '/bin');
  assert.equal(env.BOOTLINE_EVENT_TYPE, 'task-end');
  assert.deepEqual(JSON.parse(env.BOOTLINE_EVENT_JSON ?? ''), e);
  assert.equal(env.BOOTLINE_RUN_ID, 'run-1');
  assert.equal(env.BOOTLINE_SEQ, '1');
  assert.equal(env.BOOTLINE_PROGRESS_PERCENT, '66');
  assert.equal(env.BOOTLINE_TASK, 'write-image');
  assert.equal(env.BOOTLINE_STATUS, 'failed');
  assert.equal(env.BOOTLINE_MESSAGE, 'dd failed');
  const start = commandEnv(new Events().runStart(), {});
  assert.equal(start.BOOTLINE_TASK, undefined);
  assert.equal(start.BOOTLINE_STATUS, undefined);
});

test(
  'one command per event, in order, with the environment and the JSON on stdin',
  withDir(async (dir) => {
    const out = join(dir, 'out');
    const w = collectWarnings();
    const r = new CommandReporter(
      {
        type: 'command',
        command: `printf '%s %s %s %s|' "$BOOTLINE_EVENT_TYPE" "$BOOTLINE_SEQ" "$BOOTLINE_PROGRESS_PERCENT" "\${BOOTLINE_STATUS:--}" >> '${out}'; cat >> '${out}'`,
      },
      { warn: w.warn },
    );
    const ev = new Events();
    const events = [ev.runStart(), ev.taskStart(0, 0), ev.taskEnd(0, 'ok', 33.3), ev.runEnd('ok')];
    for (const e of events) r.handle(e);
    await r.close(Date.now() + 5000);
    const expected = [
      `run-start 0 0 -|${JSON.stringify(events[0])}\n`,
      `task-start 1 0 -|${JSON.stringify(events[1])}\n`,
      `task-end 2 33 ok|${JSON.stringify(events[2])}\n`,
      `run-end 3 100 ok|${JSON.stringify(events[3])}\n`,
    ].join('');
    assert.equal(readFileSync(out, 'utf8'), expected);
    assert.deepEqual(w.messages, []);
  }),
);

test(
  'only the configured event types run the command; one that ignores stdin is fine',
  withDir(async (dir) => {
    const out = join(dir, 'out');
    const w = collectWarnings();
    const r = new CommandReporter(
      { type: 'command', command: `echo "$BOOTLINE_EVENT_TYPE" >> '${out}'`, events: ['run-end'] },
      { warn: w.warn },
    );
    for (const e of new Events().fullRun()) r.handle(e);
    await r.close(Date.now() + 5000);
    assert.equal(readFileSync(out, 'utf8'), 'run-end\n');
    assert.deepEqual(w.messages, []);
  }),
);

test('a failing command is warned about with its exit code and last stderr line', async () => {
  const w = collectWarnings();
  const r = new CommandReporter({ type: 'command', command: 'echo first >&2; echo "printer offline" >&2; exit 3' }, { warn: w.warn });
  assert.equal(r.name, 'command(echo first >&2; echo "printer offline" …)');
  r.handle(new Events().runStart());
  await r.close(Date.now() + 5000);
  assert.equal(w.messages.length, 1);
  assert.match(w.messages[0] ?? '', /exited with code 3 on run-start #0: printer offline$/);
});

test(
  'a command that hangs is killed with its whole process group after the timeout',
  withDir(async (dir) => {
    const pidFile = join(dir, 'pid');
    const w = collectWarnings();
    // The grandchild (sleep) must die too, or it would outlive the agent.
    const r = new CommandReporter({ type: 'command', command: `sleep 30 & echo $! > '${pidFile}'; wait`, timeout: 0.3 }, { warn: w.warn });
    const t0 = Date.now();
    r.handle(new Events().runStart());
    await r.close(Date.now() + 5000);
    assert.ok(Date.now() - t0 < 2000, 'did not wait for sleep');
    assert.equal(w.messages.length, 1);
    assert.match(w.messages[0] ?? '', /timed out after 0.3 s on run-start #0; killed its process group/);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await until(() => !alive(pid), 2000, 'the grandchild to die');
  }),
);

test(
  'close() stops at its deadline and says how many events were not handled',
  withDir(async (dir) => {
    const out = join(dir, 'out');
    const w = collectWarnings();
    const r = new CommandReporter({ type: 'command', command: `sleep 0.2; echo x >> '${out}'`, timeout: 5 }, { warn: w.warn });
    for (const e of new Events().fullRun()) r.handle(e);
    const t0 = Date.now();
    await r.close(t0 + 300);
    assert.ok(Date.now() - t0 < 600, `close took ${Date.now() - t0} ms`);
    assert.match(w.messages.join('\n'), /(7|8) events not handled by the deadline/);
    const ran = existsSync(out) ? readFileSync(out, 'utf8').length / 2 : 0;
    assert.ok(ran >= 1 && ran <= 2, `ran ${ran}`);
  }),
);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
