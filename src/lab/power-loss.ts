// Power-loss trials: one real agent (`bootline run`) against a real line server, its power
// cut (the agent and everything it started, kill -9) at seeded random moments of its
// pipeline, then restarted on the same state dir until it finishes. Each trial's device
// must end as a clean run's did: the same disk bytes, no task that had finished run again,
// each run-once task ended exactly once, and the server's last run showing the same tasks
// (those finished before the cut skipped).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile as execFileCb } from 'node:child_process';
import { promisify } from 'node:util';
import { finishedTasks } from '../agent/journal.ts';
import { seededRandom } from './fault-proxy.ts';
import { makeImage, sha256File, writeFakeSysfs } from './fleet-sim.ts';
import { startLineServer, type LineServer } from './line-server.ts';
import { powerCut } from './power-cut.ts';

const execFile = promisify(execFileCb);

/** The run-once tasks: each appends `start <name>`, sleeps, appends `end <name>` to $BOOTLINE_TRIAL_MARKS (outside the state dir). */
export const ONCE_TASKS = ['prepare-data', 'write-serial', 'seal-device'] as const;

export function powerLossPlan(image: string, sleepSeconds: number) {
  return {
    description: 'power-loss trials: deploy the image, then three tasks that must run once',
    config: {
      unattended: true,
      tasks: [
        { name: 'deploy-image', builtin: 'deploy-image', effort: 5, with: { image: `image:${image}`, target: ['auto'], allowFile: true, overwrite: 'OVERWRITE' } },
        ...ONCE_TASKS.map((name) => ({
          name,
          script: '/bin/sh',
          args: ['-c', `echo "start $0" >> "$BOOTLINE_TRIAL_MARKS"; sleep ${sleepSeconds}; echo "end $0" >> "$BOOTLINE_TRIAL_MARKS"`, name],
        })),
      ],
    },
  };
}

export interface PowerLossOptions {
  /** The bootline CLI (dist/bootline.mjs). */
  cli: string;
  trials: number;
  seed: number;
  /** Work directory (server data, devices); emptied first. */
  work: string;
  /** Size of the generated image in MiB (half of it mapped); default 8. */
  imageMiB?: number;
  /** How long each run-once task sleeps between its start and end lines; default 0.3 s. */
  taskSeconds?: number;
  /** Share of trials whose power is cut twice; default 0.3. */
  twiceShare?: number;
  log?: (line: string) => void;
}

/** One power cut: when, and what the device had finished by then. */
export interface Cut {
  /** Milliseconds after the agent started. */
  atMs: number;
  /** The agent had already exited by then (nothing was cut). */
  missed: boolean;
  /** Tasks a restart would skip right after the cut: journalled ok, or witnessed (finishedTasks). */
  journalOk: string[];
  /** Run-once tasks whose `end` line had been written by then. */
  ended: string[];
  /** Lines in the marks file by then. */
  marks: number;
}

export interface TrialResult {
  trial: number;
  /** Replays this trial alone (its kill moments). */
  seed: number;
  cuts: Cut[];
  /** Exit status of each run after the cuts (the last is 0 when it finished). */
  exits: (number | null)[];
  /** Killed between a script's `end` line and the journal's record of it: the task ran again (at-least-once, see docs). */
  window: string[];
  problems: string[];
  ok: boolean;
}

export interface PowerLossResult {
  cleanSeconds: number;
  trials: TrialResult[];
  wallSeconds: number;
  ok: boolean;
}

interface Device {
  index: number;
  serial: string;
  dir: string;
  disk: string;
  marks: string;
  state: string;
  env: NodeJS.ProcessEnv;
  args: string[];
}

/** A trial's own seed from the series' seed, so that one trial can be replayed alone. */
export function trialSeed(seed: number, trial: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(trial, 0x85ebca6b)) >>> 0;
}

/** The moments (ms after start) to cut power in one trial: one or two, each in (0, D). */
export function cutMoments(seed: number, cleanMs: number, twiceShare: number): number[] {
  const random = seededRandom(seed);
  const n = random() < twiceShare ? 2 : 1;
  return Array.from({ length: n }, () => Math.round((0.01 + 0.98 * random()) * cleanMs));
}

function marks(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

const count = (lines: string[], line: string) => lines.filter((l) => l === line).length;

export async function runPowerLoss(o: PowerLossOptions): Promise<PowerLossResult> {
  if (!Number.isInteger(o.trials) || o.trials < 1 || o.trials > 10_000) throw new Error(`--trials must be a whole number from 1 to 10000, not ${o.trials}`);
  if (!Number.isInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff) throw new Error(`--seed must be a whole number from 0 to 4294967295, not ${o.seed}`);
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const t0 = performance.now();
  rmSync(o.work, { recursive: true, force: true });
  const data = join(o.work, 'server');
  mkdirSync(data, { recursive: true });
  const imagePath = join(o.work, 'trial.img');
  makeImage(imagePath, o.imageMiB ?? 8);
  await execFile(process.execPath, [o.cli, 'image', 'add', imagePath, '--data', data, '--name', 'trial']);
  const server: LineServer = await startLineServer({ cli: o.cli, data, logFile: join(o.work, 'server.log') });
  try {
    const must = async (expect: number, method: string, path: string, body?: unknown) => {
      const r = await server.api(method, path, body);
      if (r.status !== expect) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
      return r.json;
    };
    await must(200, 'PUT', '/api/v1/plans/trial', powerLossPlan('trial', o.taskSeconds ?? 0.3));
    await must(201, 'POST', '/api/v1/rules', { match: 'default', plan: 'trial' });
    const { token } = (await must(201, 'POST', '/api/v1/tokens', { label: 'power-loss trials' })) as { token: string };

    const device = (index: number): Device => {
      const dir = join(o.work, 'devices', index === 0 ? 'clean' : `trial${index}`);
      const sysfs = join(dir, 'sys');
      const { serial } = writeFakeSysfs(sysfs, index);
      const disk = join(dir, 'disk.img');
      const state = join(dir, 'state');
      const marksFile = join(dir, 'marks.txt');
      writeFileSync(join(dir, 'cmdline'), `bootline.server=${server.url} bootline.token=${token} installer.target.dev=${disk}\n`);
      return {
        index,
        serial,
        dir,
        disk,
        marks: marksFile,
        state,
        env: { ...process.env, BOOTLINE_SYSFS_ROOT: sysfs, BOOTLINE_TRIAL_MARKS: marksFile },
        args: [o.cli, 'run', '--unattended', '--cmdline', join(dir, 'cmdline'), '--state-dir', state],
      };
    };
    const start = (d: Device, n: number): { child: ChildProcess; exit: Promise<number | null> } => {
      const fd = openSync(join(d.dir, `agent-${n}.log`), 'w');
      const child = spawn(process.execPath, d.args, { env: d.env, stdio: ['ignore', fd, fd] });
      closeSync(fd);
      const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      return { child, exit };
    };
    /** Runs to the end (no cut); gives up after `limitMs`. */
    const runToEnd = async (d: Device, n: number, limitMs = 120_000): Promise<number | null> => {
      const { child, exit } = start(d, n);
      const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
      try {
        return await exit;
      } finally {
        clearTimeout(timer);
      }
    };
    /** The server's view of a device: its state and its last run's task outcomes (from the run's events). */
    const serverView = async (serial: string) => {
      const devices = (await must(200, 'GET', '/api/v1/devices')) as { id: string; serial: string | null; state: string }[];
      const dev = devices.find((x) => x.serial === serial);
      if (!dev) return undefined;
      const runs = (await must(200, 'GET', `/api/v1/devices/${dev.id}/runs`)) as { id: string; status: string }[];
      const run = runs[0];
      if (!run) return { state: dev.state, runs: 0 };
      const events = (await must(200, 'GET', `/api/v1/runs/${run.id}/events?limit=10000`)) as { seq: number; body: Record<string, unknown> }[];
      const start = events.find((e) => e.body.type === 'run-start')?.body as { tasks?: { name: string }[] } | undefined;
      const outcomes = new Map<string, { status: string; message?: string }>();
      for (const e of events) if (e.body.type === 'task-end') outcomes.set(String(e.body.task), { status: String(e.body.status), ...(e.body.message ? { message: String(e.body.message) } : {}) });
      const lastSeq = events.reduce((m, e) => Math.max(m, e.seq), -1);
      return {
        state: dev.state,
        runs: runs.length,
        runStatus: run.status,
        tasks: start?.tasks?.map((t) => t.name) ?? [],
        outcomes,
        complete: events.length === lastSeq + 1 && events.some((e) => e.body.type === 'run-end'),
      };
    };

    // The clean run: its duration bounds the cut moments; its disk and records are the reference.
    const clean = device(0);
    const c0 = performance.now();
    const cleanExit = await runToEnd(clean, 1);
    const cleanMs = performance.now() - c0;
    if (cleanExit !== 0) throw new Error(`the clean run failed (exit ${cleanExit}): see ${join(clean.dir, 'agent-1.log')}`);
    const wantDisk = await sha256File(clean.disk);
    const cleanView = await serverView(clean.serial);
    const cleanMarks = marks(clean.marks);
    const wantMarks = ONCE_TASKS.flatMap((t) => [`start ${t}`, `end ${t}`]);
    if (cleanMarks.join('\n') !== wantMarks.join('\n')) throw new Error(`the clean run's tasks did not each run once: ${cleanMarks.join(', ')}`);
    if (cleanView?.state !== 'succeeded' || !cleanView.complete) throw new Error(`the server did not record the clean run as a complete success (${JSON.stringify(cleanView)})`);
    log(`clean run: ${(cleanMs / 1000).toFixed(2)} s, disk sha256 ${wantDisk.slice(0, 16)}…, server: ${cleanView.tasks!.join(', ')} ok`);
    // The cuts fall in (0, window). A clean run slowed by other work on the machine would put
    // many cuts after the pipeline's end: a trial's first run that ends before its cut is a
    // whole run too, and the window shrinks to the fastest such run.
    let windowMs = cleanMs;

    const trials: TrialResult[] = [];
    for (let trial = 1; trial <= o.trials; trial++) {
      const seed = trialSeed(o.seed, trial);
      const d = device(trial);
      const cuts: Cut[] = [];
      const exits: (number | null)[] = [];
      const problems: string[] = [];
      let runs = 0;
      let finished = false;
      let journalBeforeLast: string[] = [];
      const cutState = (atMs: number, missed: boolean): Cut => {
        const lines = marks(d.marks);
        return { atMs, missed, journalOk: finishedTasks(d.state), ended: ONCE_TASKS.filter((t) => lines.includes(`end ${t}`)), marks: lines.length };
      };
      const trialWindow = windowMs;
      for (const atMs of cutMoments(seed, trialWindow, o.twiceShare ?? 0.3)) {
        journalBeforeLast = finishedTasks(d.state);
        const startedAt = performance.now();
        const { child, exit } = start(d, ++runs);
        const early = await Promise.race([exit.then((code) => ({ code })), new Promise<undefined>((r) => setTimeout(r, atMs))]);
        if (early) {
          exits.push(early.code);
          cuts.push(cutState(atMs, true));
          if (early.code === 0) {
            if (runs === 1) windowMs = Math.min(windowMs, performance.now() - startedAt);
            finished = true;
            break;
          }
          continue;
        }
        await powerCut(child, `BOOTLINE_TRIAL_MARKS=${d.marks}`);
        cuts.push(cutState(atMs, false));
      }
      // Restarted until it finishes (a few times at most: a run that fails is a finding too).
      while (!finished && exits.filter((e) => e !== 0).length < 3) {
        journalBeforeLast = finishedTasks(d.state);
        const code = await runToEnd(d, ++runs);
        exits.push(code);
        if (code === 0) finished = true;
        else problems.push(`run ${runs} exited ${code} (see ${join(d.dir, `agent-${runs}.log`)})`);
      }
      if (!finished) problems.push('never finished');

      if ((await sha256File(d.disk).catch(() => 'none')) !== wantDisk) problems.push('the disk differs from the clean run');
      const lines = marks(d.marks);
      const window: string[] = [];
      for (const t of ONCE_TASKS) {
        const ends = count(lines, `end ${t}`);
        // A task that had ended and was journalled as ok before a cut must not start again.
        const doneCut = cuts.findIndex((c) => c.ended.includes(t) && c.journalOk.includes(t));
        if (doneCut >= 0 && lines.slice(cuts[doneCut]!.marks).includes(`start ${t}`)) problems.push(`${t} ran again after it had finished (cut ${doneCut + 1})`);
        if (ends === 1) continue;
        const inWindow = ends === 2 && cuts.some((c) => !c.missed && c.ended.includes(t) && !c.journalOk.includes(t));
        if (inWindow) window.push(t);
        else problems.push(`${t} ended ${ends} times`);
      }
      const view = await serverView(d.serial);
      if (!view) problems.push('the server has no record of the device');
      else {
        if (view.state !== 'succeeded') problems.push(`the server's device state is ${view.state}`);
        if (view.runStatus !== 'ok') problems.push(`the server's last run is ${view.runStatus}`);
        if (!view.complete) problems.push("the server's last run misses events");
        if (view.tasks?.join(',') !== cleanView.tasks!.join(',')) problems.push(`the last run's tasks are ${view.tasks?.join(', ')}, not ${cleanView.tasks!.join(', ')}`);
        for (const t of cleanView.tasks!) {
          const got = view.outcomes?.get(t);
          const skipped = journalBeforeLast.includes(t);
          const want = skipped ? 'skipped' : 'ok';
          if (got?.status !== want) problems.push(`the server shows ${t} as ${got?.status ?? 'missing'} in the last run, not ${want}`);
          else if (skipped && got.message !== 'finished in an earlier run (journal)') problems.push(`${t} is skipped with "${got.message}"`);
        }
      }
      const r: TrialResult = { trial, seed, cuts, exits, window, problems, ok: problems.length === 0 };
      trials.push(r);
      const cutText = cuts.map((c) => `${(c.atMs / 1000).toFixed(2)} s${c.missed ? ' (after it had finished)' : ` (done: ${c.journalOk.join(', ') || 'nothing'})`}`).join('; ');
      log(
        `trial ${trial} (seed ${seed}${trialWindow < cleanMs ? `, cuts within ${(trialWindow / 1000).toFixed(2)} s` : ''}): cut at ${cutText}; ${runs} runs; ${r.ok ? 'identical to the clean run' : `DIFFERS: ${problems.join('; ')}`}` +
          (window.length ? `; ${window.join(', ')} ran twice: cut between its end and the journal's record` : ''),
      );
    }
    const failed = trials.filter((t) => !t.ok).length;
    const twice = trials.filter((t) => t.ok && t.window.length > 0).length;
    const wallSeconds = (performance.now() - t0) / 1000;
    log(
      `${trials.length - failed - twice} of ${trials.length} trials identical to the clean run` +
        (twice ? `, ${twice} identical but for a task run twice (the cut fell between its end and the journal's record of it)` : '') +
        `, ${failed} differ (seed ${o.seed}, ${wallSeconds.toFixed(1)} s)`,
    );
    return { cleanSeconds: cleanMs / 1000, trials, wallSeconds, ok: failed === 0 };
  } finally {
    await server.stop();
  }
}
