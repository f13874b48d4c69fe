// The pipeline with real processes, real FIFOs and a real state dir.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { runPipeline, type RunOptions } from '../../src/agent/runner.ts';
import { parseConfigText } from '../../src/config/yaml-file.ts';
import { mergeLayers } from '../../src/config/merge.ts';
import { validateConfig } from '../../src/config/validate.ts';
import type { BootlineEvent } from '../../src/events.ts';
import type { Interaction } from '../../src/agent/interaction.ts';
import type { BuiltinTask } from '../../src/agent/tasks/builtin.ts';
import { tempDir, script, isRunning } from '../helpers.ts';

const nobody: Interaction = { canAsk: false, confirm: async () => false, waitForKey: async () => false };

const writer: BuiltinTask = {
  name: 'write-marker',
  description: 'writes a marker file',
  destructive: true,
  optionsSchema: Type.Object({ path: Type.String() }),
  async run(ctx) {
    ctx.setOutput('target', '/dev/fake0');
    for (const p of [25, 50, 75]) ctx.progress({ taskProgress: p, message: `step ${p}` });
    writeFileSync(ctx.options.path as string, 'written');
  },
};

async function run(yaml: string, dir: string, extra: Partial<RunOptions> = {}) {
  const config = validateConfig(mergeLayers([parseConfigText(yaml, 'test.yaml')]), { 'write-marker': writer });
  const events: BootlineEvent[] = [];
  const report = await runPipeline({
    config,
    stateDir: join(dir, 'state'),
    fresh: false,
    builtins: { 'write-marker': writer },
    sinks: [(e) => events.push(e)],
    interaction: nobody,
    version: 'test',
    ...extra,
  });
  return { report, events };
}

const of = <T extends BootlineEvent['type']>(events: BootlineEvent[], type: T) => events.filter((e) => e.type === type) as Extract<BootlineEvent, { type: T }>[];

test('tasks run in order as ./script from their workdir with the documented environment', async () => {
  const dir = tempDir();
  script(dir, 'one.sh', `env | grep ^BOOTLINE_ | sort > "${dir}/env-one"; pwd > "${dir}/pwd-one"; echo "args: $*"`);
  script(dir, 'two.sh', `env | grep ^BOOTLINE_ | sort > "${dir}/env-two"; echo "MY_VAR=$MY_VAR"`);
  const { report, events } = await run(
    `unattended: true\ndeviceId: dev-7\nserver: http://127.0.0.1:1\ntasks:\n  - { name: one, script: one.sh, workdir: ${dir}, args: [a, "b c"] }\n  - { name: mark, builtin: write-marker, with: { path: ${dir}/m } }\n  - { name: two, script: two.sh, workdir: ${dir}, env: { MY_VAR: hello } }\n`,
    dir,
  );
  assert.equal(report.status, 'ok');
  assert.deepEqual(of(events, 'task-start').map((e) => e.task), ['one', 'mark', 'two']);
  assert.equal(readFileSync(join(dir, 'pwd-one'), 'utf8').trim(), dir);
  const env1 = readFileSync(join(dir, 'env-one'), 'utf8');
  assert.match(env1, /^BOOTLINE_TASK=one$/m);
  assert.match(env1, /^BOOTLINE_TASK_INDEX=1$/m);
  assert.match(env1, /^BOOTLINE_TASK_COUNT=3$/m);
  assert.match(env1, /^BOOTLINE_DEVICE_ID=dev-7$/m);
  assert.match(env1, /^BOOTLINE_SERVER=http:\/\/127\.0\.0\.1:1$/m);
  assert.match(env1, new RegExp(`^BOOTLINE_STATE_DIR=${join(dir, 'state')}$`, 'm'));
  assert.match(env1, /^BOOTLINE_PROGRESS=\/.*\.fifo$/m);
  assert.match(env1, /^BOOTLINE_PROGRESS_PERCENT=0$/m);
  assert.doesNotMatch(env1, /BOOTLINE_TARGET/);
  const env2 = readFileSync(join(dir, 'env-two'), 'utf8');
  assert.match(env2, /^BOOTLINE_TARGET=\/dev\/fake0$/m, 'the target chosen by an earlier task is passed on');
  assert.match(env2, /^BOOTLINE_TASK_INDEX=3$/m);
  assert.match(env2, /^BOOTLINE_PROGRESS_PERCENT=66$/m);
  const logs = of(events, 'log').map((e) => `${e.task}:${e.message}`);
  assert.ok(logs.includes('one:args: a b c'));
  assert.ok(logs.includes('two:MY_VAR=hello'));
  assert.equal(readFileSync(join(dir, 'm'), 'utf8'), 'written');
});

test('a script writing psplash commands to $BOOTLINE_PROGRESS shows sub-progress, weighted by effort', async () => {
  const dir = tempDir();
  script(dir, 'flash.sh', `for p in 10 50 90; do printf 'PROGRESS %d\\n' $p > "$BOOTLINE_PROGRESS"; sleep 0.05; done; printf 'MSG almost done\\0' > "$BOOTLINE_PROGRESS"; sleep 0.05`);
  script(dir, 'quick.sh', 'true');
  const { report, events } = await run(`unattended: true\ntasks:\n  - { name: flash, script: flash.sh, workdir: ${dir}, effort: 3 }\n  - { name: quick, script: quick.sh, workdir: ${dir} }\n`, dir);
  assert.equal(report.status, 'ok');
  const prog = of(events, 'task-progress').filter((e) => e.task === 'flash');
  assert.deepEqual(prog.map((e) => e.taskProgress).slice(0, 3), [10, 50, 90]);
  assert.deepEqual(prog.map((e) => e.progress).slice(0, 3), [7.5, 37.5, 67.5]);
  assert.ok(prog.some((e) => e.message === 'almost done' && e.taskProgress === 90), 'MSG keeps the last percentage');
  const all = events.map((e) => e.progress);
  assert.ok(all.every((p, i) => i === 0 || p >= all[i - 1]!), `progress never goes backwards: ${all.join(',')}`);
  assert.equal(events.at(-1)!.type, 'run-end');
  assert.equal(events.at(-1)!.progress, 100);
  assert.ok(events.slice(0, -1).every((e) => e.progress < 100), 'exactly 100 only at the successful end');
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i), 'sequence numbers count up from 0');
});

test('a failing task stops the run, and the report keeps its last output lines', async () => {
  const dir = tempDir();
  script(dir, 'bad.sh', 'echo preparing; echo "disk /dev/sdz not found" >&2; exit 3');
  script(dir, 'never.sh', `touch "${dir}/ran"`);
  const { report, events } = await run(`unattended: true\ntasks:\n  - { name: bad, script: bad.sh, workdir: ${dir} }\n  - { name: never, script: never.sh, workdir: ${dir} }\n`, dir);
  assert.equal(report.status, 'failed');
  assert.equal(report.message, 'bad failed: bad.sh exit status 3');
  assert.equal(existsSync(join(dir, 'ran')), false);
  assert.deepEqual(report.tasks.map((t) => t.status), ['failed', 'not-run']);
  assert.deepEqual(report.tasks[0]!.lastLines, ['preparing', 'disk /dev/sdz not found']);
  const end = of(events, 'task-end')[0]!;
  assert.equal(end.status, 'failed');
  assert.equal(end.exitCode, 3);
  assert.ok(of(events, 'run-end')[0]!.progress < 100);
  const saved = JSON.parse(readFileSync(join(dir, 'state', 'report.json'), 'utf8'));
  assert.equal(saved.status, 'failed');
  assert.equal(saved.runId, report.runId);
});

test('an optional task that fails is reported and the run goes on', async () => {
  const dir = tempDir();
  script(dir, 'bad.sh', 'exit 1');
  script(dir, 'good.sh', 'true');
  const { report, events } = await run(`unattended: true\ntasks:\n  - { name: bad, script: bad.sh, workdir: ${dir}, optional: true }\n  - { name: good, script: good.sh, workdir: ${dir} }\n`, dir);
  assert.equal(report.status, 'ok');
  assert.deepEqual(of(events, 'task-end').map((e) => [e.task, e.status]), [['bad', 'failed'], ['good', 'ok']]);
  assert.ok(of(events, 'log').some((e) => /bad failed but is optional/.test(e.message)));
});

test('retries run the task again and progress does not fall back', async () => {
  const dir = tempDir();
  script(dir, 'flaky.sh', `n=$(cat "${dir}/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "${dir}/count"; printf 'PROGRESS 80\\n' > "$BOOTLINE_PROGRESS"; sleep 0.05; [ $n -ge 2 ]`);
  const { report, events } = await run(`unattended: true\ntasks:\n  - { name: flaky, script: flaky.sh, workdir: ${dir}, retries: 2, retryDelay: 0.05 }\n`, dir);
  assert.equal(report.status, 'ok');
  assert.equal(report.tasks[0]!.attempts, 2);
  assert.deepEqual(of(events, 'task-start').map((e) => e.attempt), [1, 2]);
  const all = events.map((e) => e.progress);
  assert.ok(all.every((p, i) => i === 0 || p >= all[i - 1]!), all.join(','));
  assert.ok(of(events, 'log').some((e) => /attempt 1\/3 failed .* retrying in 0\.05 s/.test(e.message)));
});

test('a timeout kills the whole process group, children included', async () => {
  const dir = tempDir();
  script(dir, 'hang.sh', `sleep 30 & echo $! > "${dir}/child"; sleep 30`);
  const t0 = Date.now();
  const { report } = await run(`unattended: true\ntasks:\n  - { name: hang, script: hang.sh, workdir: ${dir}, timeout: 0.5 }\n`, dir);
  assert.ok(Date.now() - t0 < 8000);
  assert.equal(report.status, 'failed');
  assert.match(report.message!, /timed out after 0\.5 s \(process group killed\)/);
  const child = Number(readFileSync(join(dir, 'child'), 'utf8'));
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(isRunning(child), false, 'the background child is gone too');
});

test('hooks run before and after every task with the task environment; a failing hook is only logged', async () => {
  const dir = tempDir();
  script(dir, 'ok.sh', 'true');
  script(dir, 'bad.sh', 'exit 2');
  const hook = script(dir, 'hook.sh', `echo "$BOOTLINE_EVENT $BOOTLINE_TASK $BOOTLINE_STATUS $BOOTLINE_PROGRESS_PERCENT" >> "${dir}/hooks"; [ "$BOOTLINE_TASK" != ok ] || [ "$BOOTLINE_EVENT" != after ]`);
  const { report, events } = await run(
    `unattended: true\nhooks: { before: [${hook}], after: [${hook}] }\ntasks:\n  - { name: ok, script: ok.sh, workdir: ${dir} }\n  - { name: bad, script: bad.sh, workdir: ${dir}, optional: true }\n`,
    dir,
  );
  assert.equal(report.status, 'ok', 'the failing after-hook did not fail the run');
  assert.deepEqual(readFileSync(join(dir, 'hooks'), 'utf8').trim().split('\n'), ['before ok running 0', 'after ok ok 50', 'before bad running 50', 'after bad failed 99']);
  assert.ok(of(events, 'log').some((e) => e.level === 'warn' && /after-hook ".*hook\.sh" failed: exit status 1 \(ignored: hooks\.failRun is false\)/.test(e.message)));
});

test('with hooks.failRun a failing hook fails the run', async () => {
  const dir = tempDir();
  script(dir, 'ok.sh', 'true');
  const { report } = await run(`unattended: true\nhooks: { before: ["exit 4"], failRun: true }\ntasks:\n  - { name: ok, script: ok.sh, workdir: ${dir} }\n`, dir);
  assert.equal(report.status, 'failed');
  assert.match(report.message!, /ok failed: before-hook failed: "exit 4" exit status 4/);
});

test('after a failure, a re-run skips finished tasks and re-runs the rest; rerun: always runs again', async () => {
  const dir = tempDir();
  script(dir, 'a.sh', `echo a >> "${dir}/trace"`);
  script(dir, 'b.sh', `echo b >> "${dir}/trace"; [ -e "${dir}/fixed" ]`);
  script(dir, 'c.sh', `echo c >> "${dir}/trace"`);
  const yaml = `unattended: true\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir} }\n  - { name: always, script: c.sh, workdir: ${dir}, rerun: always }\n  - { name: b, script: b.sh, workdir: ${dir} }\n`;
  const first = await run(yaml, dir);
  assert.equal(first.report.status, 'failed');
  writeFileSync(join(dir, 'fixed'), '');
  const second = await run(yaml, dir);
  assert.equal(second.report.status, 'ok');
  assert.deepEqual(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n'), ['a', 'c', 'b', 'c', 'b']);
  assert.deepEqual(of(second.events, 'run-start')[0]!.resumed, ['a']);
  assert.deepEqual(second.report.tasks.map((t) => t.status), ['skipped', 'ok', 'ok']);
  const third = await run(yaml, dir, { fresh: true });
  assert.equal(third.report.status, 'ok');
  assert.equal(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n').length, 8, '--fresh runs all three again');
});

test('a task whose definition changed is not skipped', async () => {
  const dir = tempDir();
  script(dir, 'a.sh', `echo "a $*" >> "${dir}/trace"`);
  await run(`unattended: true\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir}, args: ["1"] }\n`, dir);
  await run(`unattended: true\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir}, args: ["1"] }\n`, dir);
  await run(`unattended: true\ntasks:\n  - { name: a, script: a.sh, workdir: ${dir}, args: ["2"] }\n`, dir);
  assert.deepEqual(readFileSync(join(dir, 'trace'), 'utf8').trim().split('\n'), ['a 1', 'a 2']);
});

test('output beyond logs.eventsPerTask stays in the log file only', async () => {
  const dir = tempDir();
  script(dir, 'chatty.sh', 'i=0; while [ $i -lt 100 ]; do echo "line $i"; i=$((i+1)); done');
  const { report, events } = await run(`unattended: true\nlogs: { eventsPerTask: 10, reportLines: 3 }\ntasks:\n  - { name: chatty, script: chatty.sh, workdir: ${dir} }\n`, dir);
  const out = of(events, 'log').filter((e) => e.stream === 'stdout');
  assert.equal(out.length, 10);
  assert.ok(of(events, 'log').some((e) => /more output than logs\.eventsPerTask \(10\)/.test(e.message)));
  assert.deepEqual(report.tasks[0]!.lastLines, ['line 97', 'line 98', 'line 99']);
  const log = readFileSync(join(dir, 'state', 'logs', `${report.runId}.log`), 'utf8');
  assert.equal(log.match(/chatty stdout: line \d+/g)!.length, 100);
});

test('in attended mode a destructive built-in is not run when nobody can confirm', async () => {
  const dir = tempDir();
  const { report } = await run(`unattended: false\ntasks:\n  - { name: mark, builtin: write-marker, with: { path: ${dir}/m } }\n`, dir);
  assert.equal(report.status, 'failed');
  assert.match(report.message!, /attended mode needs someone at the console to confirm, and there is no TTY — set unattended: true/);
  assert.equal(existsSync(join(dir, 'm')), false);
});

test('in attended mode a confirmed destructive built-in runs', async () => {
  const dir = tempDir();
  const questions: string[] = [];
  const yes: Interaction = { canAsk: true, confirm: async (q) => (questions.push(q), true), waitForKey: async () => false };
  const { report } = await run(`tasks:\n  - { name: mark, builtin: write-marker, with: { path: ${dir}/m } }\n`, dir, { interaction: yes });
  assert.equal(report.status, 'ok');
  assert.match(questions[0]!, /Task "mark" \(writes a marker file\) writes to disks\. Run it now\?/);
});

test('a key pressed during the abort countdown switches to attended mode', async () => {
  const dir = tempDir();
  const ticks: number[] = [];
  const asked: string[] = [];
  const presser: Interaction = {
    canAsk: true,
    confirm: async (q) => (asked.push(q), false),
    waitForKey: async (s, tick) => (tick(s), ticks.push(s), true),
  };
  const { report, events } = await run(`unattended: true\nabort: { enable: true, timeout: 7 }\ntasks:\n  - { name: mark, builtin: write-marker, with: { path: ${dir}/m } }\n`, dir, { interaction: presser });
  assert.deepEqual(ticks, [7]);
  assert.ok(of(events, 'log').some((e) => /starts in 7 s — press any key/.test(e.message)));
  assert.equal(asked.length, 1, 'the destructive task asked first');
  assert.equal(report.status, 'failed');
  assert.equal(existsSync(join(dir, 'm')), false);
});

test('a missing state dir parent is created; the journal is valid JSON after every step', async () => {
  const dir = tempDir();
  script(dir, 'check.sh', `cat "$BOOTLINE_STATE_DIR/journal.json" > "${dir}/journal-during"`);
  await run(`unattended: true\ntasks:\n  - { name: check, script: check.sh, workdir: ${dir} }\n`, dir);
  const during = JSON.parse(readFileSync(join(dir, 'journal-during'), 'utf8'));
  assert.equal(during.tasks.check.status, 'running');
  const afterRun = JSON.parse(readFileSync(join(dir, 'state', 'journal.json'), 'utf8'));
  assert.equal(afterRun.tasks.check.status, 'ok');
  assert.equal(afterRun.result, 'ok');
});
