// The pipeline: runs the tasks in order with retries and timeouts, hooks around each,
// a journal for resuming after power loss, effort-weighted progress, and a report.
import { randomUUID } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join, isAbsolute, resolve } from 'node:path';
import type { Config, Task } from '../config/schema.ts';
import type { LogEvent, RunReport, RunStatus, TaskReport, TaskStatus } from '../events.ts';
import { Emitter, type Sink } from './emitter.ts';
import { Journal, taskDefinitionHash, writeAtomic } from './journal.ts';
import { canWitness, clearWitness, notRunnable, shellSignal, witnessed, witnessPath } from './exit-witness.ts';
import { ProgressTracker } from './progress.ts';
import { ProgressFifo } from './progress-fifo.ts';
import { runProcess, describeResult } from './process.ts';
import { runHooks } from './hooks.ts';
import { taskEnv } from './task-env.ts';
import { Tail } from './tail.ts';
import { TaskError, type BuiltinTask, type DeviceServer, type TaskProgress } from './tasks/builtin.ts';
import type { Interaction } from './interaction.ts';
import { sleep } from './timing.ts';
import { readInstallerInfo } from './installer-info.ts';

export interface RunOptions {
  config: Config;
  stateDir: string;
  fresh: boolean;
  builtins: Record<string, BuiltinTask>;
  /** Receives every event (the reporter dispatcher, the --events file...). */
  sinks: Sink[];
  interaction: Interaction;
  version: string;
  /** Aborted when the agent is told to stop (SIGTERM/SIGINT). */
  signal?: AbortSignal;
  /** The line's server, for built-ins that send it documents (the inventory). */
  server?: DeviceServer;
}

type Level = LogEvent['level'];

interface TaskOutcome {
  status: TaskStatus;
  attempts: number;
  durationMs: number;
  message?: string;
  exitCode?: number | null;
  taskProgress: number;
}

export async function runPipeline(o: RunOptions): Promise<RunReport> {
  const { config } = o;
  const runId = randomUUID();
  const startedAt = new Date();
  const stop = o.signal ?? new AbortController().signal;
  const logDir = join(o.stateDir, 'logs');
  await mkdir(logDir, { recursive: true });
  const logFile = join(logDir, `${runId}.log`);
  const logStream = createWriteStream(logFile, { flags: 'a', mode: 0o644 });
  logStream.on('error', () => {});

  const emitter = new Emitter(runId, config.deviceId, [...o.sinks]);
  const tasks = config.tasks;
  const count = tasks.length;
  const tracker = new ProgressTracker(tasks.map((t) => t.effort));
  const reports: TaskReport[] = tasks.map((t) => ({ name: t.name, status: 'not-run', attempts: 0, durationMs: 0, optional: t.optional, lastLines: [] }));
  const outputs: Record<string, string> = {};
  let unattended = config.unattended;

  const log = (level: Level, message: string, extra: { task?: string; index?: number; stream?: LogEvent['stream'] } = {}) => {
    writeLog(logStream, extra.task, extra.stream ?? 'agent', message);
    emitter.emit<LogEvent>({ type: 'log', progress: tracker.current, stream: extra.stream ?? 'agent', level, message, ...taskFields(extra) });
  };

  const { journal, previous, witnessed: witnessedTasks } = await Journal.open(o.stateDir, runId, o.fresh, (m) => log('warn', m));
  const resumed = tasks.filter((t) => t.rerun !== 'always' && journal.finished(t)).map((t) => t.name);

  const shares = tracker.shares();
  const boot = await bootSeconds();
  const installer = await readInstallerInfo(boot.bootSeconds);
  emitter.emit({
    type: 'run-start',
    progress: 0,
    count,
    tasks: tasks.map((t, i) => ({ name: t.name, kind: t.kind, effort: t.effort, share: round2(shares[i]!) })),
    version: o.version,
    hostname: hostname(),
    resumed,
    ...boot,
    ...(installer ? { installer } : {}),
  });
  for (const name of witnessedTasks) log('info', `${name} had ended (exit status 0) just before the agent stopped, before the journal recorded it: not run again`, { task: name });
  if (previous && resumed.length > 0) log('info', `resuming run ${previous.runId}: ${resumed.join(', ')} finished before and will be skipped (--fresh runs everything)`);

  if (unattended && config.abort.enable && !o.interaction.canAsk) {
    log('info', 'abort countdown skipped: there is no console TTY to press a key on');
  } else if (unattended && config.abort.enable) {
    const pressed = await o.interaction.waitForKey(config.abort.timeout, (left) =>
      log('info', `Unattended bootstrapping starts in ${left} s — press any key on the console to switch to attended mode`),
    );
    if (pressed) {
      unattended = false;
      log('warn', 'key pressed: switching to attended mode; destructive tasks will ask before they run');
    }
  }

  let runStatus: RunStatus = 'ok';
  let runMessage: string | undefined;

  for (let index = 0; index < count; index++) {
    const task = tasks[index]!;
    const report = reports[index]!;
    if (stop.aborted) {
      runStatus = 'aborted';
      runMessage = 'stopped before all tasks ran';
      break;
    }
    if (task.rerun !== 'always' && journal.finished(task)) {
      const progress = tracker.finish(index);
      emitter.emit({ type: 'task-end', progress, task: task.name, index, count, status: 'skipped', attempt: 0, durationMs: 0, taskProgress: 100, optional: task.optional, message: 'finished in an earlier run (journal)' });
      Object.assign(report, { status: 'skipped', message: 'finished in an earlier run (journal)' });
      continue;
    }

    const tail = new Tail(config.logs.reportLines);
    const envFor = (extra: Record<string, string>) => ({
      ...taskEnv({ runId, task: task.name, index, count, stateDir: o.stateDir, deviceId: config.deviceId, server: config.server, unattended, progressPercent: tracker.current, outputs, logFile }),
      ...extra,
    });

    const hookFailed = await hooks('before', task, index, envFor({ BOOTLINE_EVENT: 'before', BOOTLINE_STATUS: 'running' }));

    const outcome: TaskOutcome = hookFailed
      ? { status: 'failed', attempts: 0, durationMs: 0, message: `before-hook failed: ${hookFailed}`, taskProgress: 0 }
      : await runTask(task, index, tail, envFor);

    // The journal first: between the task's end and this record, a power cut makes the task
    // run again (at-least-once), so this window is kept as short as it can be.
    await journal.record(task, { status: outcome.status, attempts: outcome.attempts, endedAt: new Date().toISOString(), durationMs: outcome.durationMs });
    if (task.kind !== 'builtin') clearWitness(o.stateDir, taskDefinitionHash(task));
    const progress = outcome.status === 'failed' && !task.optional ? tracker.current : tracker.finish(index);
    emitter.emit({
      type: 'task-end',
      progress,
      task: task.name,
      index,
      count,
      status: outcome.status,
      attempt: outcome.attempts,
      durationMs: outcome.durationMs,
      taskProgress: outcome.taskProgress,
      optional: task.optional,
      ...(outcome.exitCode !== undefined ? { exitCode: outcome.exitCode } : {}),
      ...(outcome.message ? { message: outcome.message } : {}),
    });
    Object.assign(report, { status: outcome.status, attempts: outcome.attempts, durationMs: outcome.durationMs, lastLines: tail.get() }, outcome.message ? { message: outcome.message } : {});

    const afterFailed = await hooks('after', task, index, envFor({ BOOTLINE_EVENT: 'after', BOOTLINE_STATUS: outcome.status }));

    if (stop.aborted) {
      runStatus = 'aborted';
      runMessage = `stopped during ${task.name}`;
      break;
    }
    if (outcome.status === 'failed' && !task.optional) {
      runStatus = 'failed';
      runMessage = `${task.name} failed: ${outcome.message ?? 'unknown error'}`;
      break;
    }
    if (outcome.status === 'failed') log('warn', `${task.name} failed but is optional: the run goes on`, { task: task.name, index });
    if (afterFailed) {
      runStatus = 'failed';
      runMessage = `after-hook of ${task.name} failed: ${afterFailed}`;
      break;
    }
  }

  const endedAt = new Date();
  const progress = runStatus === 'ok' ? tracker.complete() : tracker.current;
  const runReport: RunReport = {
    runId,
    ...(config.deviceId ? { deviceId: config.deviceId } : {}),
    status: runStatus,
    startedAt: startedAt.toISOString(),
    endedAt: endedAt.toISOString(),
    durationMs: endedAt.getTime() - startedAt.getTime(),
    progress,
    tasks: reports,
    ...(runMessage ? { message: runMessage } : {}),
  };
  await journal.finish(runStatus);
  await writeAtomic(join(o.stateDir, 'report.json'), JSON.stringify(runReport, null, 2) + '\n');
  emitter.emit({ type: 'run-end', progress, status: runStatus, durationMs: runReport.durationMs, report: runReport, ...(runMessage ? { message: runMessage } : {}) });
  await new Promise<void>((r) => logStream.end(r));
  return runReport;

  /** Runs the hooks of one phase; returns a failure description when the run must fail. */
  async function hooks(phase: 'before' | 'after', task: Task, index: number, env: Record<string, string>): Promise<string | undefined> {
    const commands = config.hooks[phase];
    if (commands.length === 0) return undefined;
    const results = await runHooks(commands, { ...process.env, ...env }, config.hooks.timeout, stop, (line) =>
      log('info', line, { task: task.name, index, stream: 'hook' }),
    );
    for (const r of results.filter((x) => !x.ok)) {
      log(config.hooks.failRun ? 'error' : 'warn', `${phase}-hook "${r.command}" failed: ${r.detail}${config.hooks.failRun ? '' : ' (ignored: hooks.failRun is false)'}`, { task: task.name, index });
    }
    const failed = results.find((x) => !x.ok);
    return config.hooks.failRun && failed ? `"${failed.command}" ${failed.detail}` : undefined;
  }

  async function runTask(task: Task, index: number, tail: Tail, envFor: (extra: Record<string, string>) => Record<string, string>): Promise<TaskOutcome> {
    const started = Date.now();
    let last: TaskOutcome = { status: 'failed', attempts: 0, durationMs: 0, taskProgress: 0 };
    for (let attempt = 1; attempt <= task.retries + 1; attempt++) {
      let taskProgress = 0;
      let logEvents = 0;
      let cutNoted = false;
      emitter.emit({ type: 'task-start', progress: tracker.current, task: task.name, index, count, attempt, taskProgress: 0 });
      await journal.record(task, { status: 'running', attempts: attempt, startedAt: new Date().toISOString() });

      const onProgress = (p: TaskProgress) => {
        taskProgress = Math.max(0, Math.min(100, p.taskProgress));
        const progress = tracker.update(index, taskProgress);
        const { taskProgress: _, ...detail } = p;
        emitter.emit({ type: 'task-progress', progress, task: task.name, index, count, taskProgress, ...detail });
      };
      const onOutput = (stream: 'stdout' | 'stderr', line: string, level: Level = stream === 'stderr' ? 'warn' : 'info') => {
        tail.push(line);
        writeLog(logStream, task.name, stream, line);
        // Output goes whole to the log file; only a bounded number of lines become events.
        if (logEvents < config.logs.eventsPerTask) {
          logEvents++;
          emitter.emit<LogEvent>({ type: 'log', progress: tracker.current, task: task.name, index, stream, level, message: line });
        } else if (!cutNoted) {
          cutNoted = true;
          log('warn', `more output than logs.eventsPerTask (${config.logs.eventsPerTask}) lines: the rest is only in ${logFile}`, { task: task.name, index });
        }
      };

      const attemptStart = Date.now();
      const r =
        task.kind === 'builtin'
          ? await runBuiltin(task, envFor({}), onProgress, onOutput)
          : await runScript(task, envFor, onProgress, onOutput);
      last = { ...r, attempts: attempt, durationMs: Date.now() - started, taskProgress: r.status === 'ok' ? 100 : taskProgress };
      if (r.status === 'ok' && taskProgress < 100) onProgress({ taskProgress: 100 });
      if (r.status === 'ok' || stop.aborted) break;
      if (attempt <= task.retries) {
        log('warn', `${task.name} attempt ${attempt}/${task.retries + 1} failed after ${((Date.now() - attemptStart) / 1000).toFixed(1)} s: ${r.message} — retrying in ${task.retryDelay} s`, { task: task.name, index });
        await sleep(task.retryDelay * 1000, stop);
      }
    }
    return last;
  }

  async function runBuiltin(
    task: Task,
    env: Record<string, string>,
    onProgress: (p: TaskProgress) => void,
    onOutput: (stream: 'stdout' | 'stderr', line: string, level?: Level) => void,
  ): Promise<Omit<TaskOutcome, 'attempts' | 'durationMs' | 'taskProgress'>> {
    const b = o.builtins[task.builtin!];
    if (!b) return { status: 'failed', message: `unknown built-in ${task.builtin}` };
    if (b.destructive && !unattended) {
      const yes = await o.interaction.confirm(`Task "${task.name}" (${b.description}) writes to disks. Run it now?`);
      if (!yes) {
        return {
          status: 'failed',
          message: o.interaction.canAsk
            ? 'not confirmed at the console'
            : 'attended mode needs someone at the console to confirm, and there is no TTY — set unattended: true (or installer.unattended on the kernel command line) to run without asking',
        };
      }
    }
    const ac = new AbortController();
    const onStop = () => ac.abort(new Error('stopped'));
    stop.addEventListener('abort', onStop, { once: true });
    const timer = task.timeout ? setTimeout(() => ac.abort(new Error(`timed out after ${task.timeout} s`)), task.timeout * 1000) : undefined;
    try {
      const run = b.run({
        name: task.name,
        options: task.with,
        env,
        stateDir: o.stateDir,
        unattended,
        signal: ac.signal,
        progress: onProgress,
        log: (level, message) => onOutput(level === 'error' || level === 'warn' ? 'stderr' : 'stdout', message, level),
        confirm: (q) => (unattended ? Promise.resolve(true) : o.interaction.confirm(q)),
        setOutput: (k, v) => {
          outputs[k] = v;
        },
        agentVersion: o.version,
        ...(o.server ? { server: o.server } : {}),
        following: tasks.slice(tasks.indexOf(task) + 1).map((t) => ({ name: t.name, ...(t.builtin ? { builtin: t.builtin } : {}), options: t.with })),
      });
      // A built-in that ignores its signal must still not outlive its timeout.
      const aborted = new Promise<never>((_, reject) => ac.signal.addEventListener('abort', () => reject(ac.signal.reason), { once: true }));
      await Promise.race([run, aborted]);
      return { status: 'ok' };
    } catch (e) {
      const err = e as Error;
      return { status: 'failed', message: err instanceof TaskError || ac.signal.aborted ? err.message : `${err.name}: ${err.message}` };
    } finally {
      clearTimeout(timer);
      stop.removeEventListener('abort', onStop);
    }
  }

  async function runScript(
    task: Task,
    envFor: (extra: Record<string, string>) => Record<string, string>,
    onProgress: (p: TaskProgress) => void,
    onOutput: (stream: 'stdout' | 'stderr', line: string) => void,
  ): Promise<Omit<TaskOutcome, 'attempts' | 'durationMs' | 'taskProgress'>> {
    const fifoPath = join(o.stateDir, `progress-${process.pid}.fifo`);
    // MSG-only commands keep the last percentage; PROGRESS-only ones keep the last message.
    let percent = 0;
    let message: string | undefined;
    let fifo: ProgressFifo | undefined;
    try {
      fifo = ProgressFifo.create(fifoPath, (c) => {
        if ('message' in c) message = c.message;
        else percent = c.progress;
        onProgress({ taskProgress: percent, ...(message !== undefined ? { message } : {}) });
      });
    } catch (e) {
      log('warn', `${(e as Error).message}; the script's progress will not be shown`, { task: task.name });
    }
    // Isar runs ./script from the workdir; an absolute script path is run as is.
    const workdir = resolve(task.workdir);
    const file = isAbsolute(task.script!) || task.script!.includes('/') ? resolve(workdir, task.script!) : `./${task.script}`;
    // Through the exit witness (exit-witness.ts), so that a restart after a crash just past the
    // script's exit does not run it again. The shell would hide why a script cannot start.
    const definition = taskDefinitionHash(task);
    clearWitness(o.stateDir, definition);
    const witness = canWitness();
    const unrunnable = witness ? notRunnable(resolve(workdir, file)) : undefined;
    if (unrunnable) {
      await fifo?.close();
      return { status: 'failed', exitCode: null, message: `${task.script} ${describeResult({ exitCode: null, signal: null, timedOut: false, aborted: false, spawnError: unrunnable })}` };
    }
    const command = witness ? witnessed(file, task.args, witnessPath(o.stateDir, definition)) : { file, args: task.args };
    const r = await runProcess({
      ...command,
      cwd: workdir,
      env: { ...process.env, ...task.env, ...envFor(fifo ? { BOOTLINE_PROGRESS: fifoPath } : {}) },
      ...(task.timeout ? { timeoutMs: task.timeout * 1000 } : {}),
      signal: stop,
      maxLine: config.logs.lineLength,
      onLine: onOutput,
    });
    await fifo?.close();
    const ok = !r.spawnError && !r.timedOut && !r.aborted && r.exitCode === 0;
    if (ok) return { status: 'ok', exitCode: 0 };
    const killedBy = witness && !r.signal ? shellSignal(r.exitCode) : undefined;
    return { status: 'failed', exitCode: r.exitCode, message: `${task.script} ${describeResult(r, task.timeout)}${killedBy ? ` (killed by ${killedBy})` : ''}` };
  }
}

function taskFields(extra: { task?: string; index?: number }) {
  return { ...(extra.task !== undefined ? { task: extra.task } : {}), ...(extra.index !== undefined ? { index: extra.index } : {}) };
}

function writeLog(stream: WriteStream, task: string | undefined, source: string, message: string) {
  stream.write(`${new Date().toISOString()} ${task ?? '-'} ${source}: ${message}\n`);
}

async function bootSeconds(): Promise<{ bootSeconds?: number }> {
  try {
    const up = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
    return Number.isFinite(up) ? { bootSeconds: up } : {};
  } catch {
    return {};
  }
}

const round2 = (n: number) => Math.round(n * 100) / 100;
