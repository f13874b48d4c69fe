// Server crash trials: a fleet of real agents (src/lab/fleet-sim.ts) while the line server is
// killed (kill -9) at seeded moments and started again on the same data dir and port. Each
// agent also writes every event it emits to a file; afterwards every run's events on the
// server are compared with it: none missing, none stored twice, each run's final state the
// one the agent ended it with.
import { readFileSync } from 'node:fs';
import { seededRandom } from './fault-proxy.ts';
import { runFleet, type DeviceResult, type FleetControl } from './fleet-sim.ts';

export interface ServerCrashOptions {
  cli: string;
  devices: number;
  /** How often the server is killed. */
  kills: number;
  seed: number;
  work: string;
  imageMiB?: number;
  db?: string;
  /** Seconds the server runs before each kill: drawn from [min, max] (default 2–6). */
  upSeconds?: [number, number];
  /** Seconds the server stays down after each kill: drawn from [min, max] (default 0.5–3). */
  downSeconds?: [number, number];
  timeoutSeconds?: number;
  log?: (line: string) => void;
}

export interface RunCheck {
  serial: string;
  runId: string;
  /** Events the agent emitted (its events file). */
  sent: number;
  /** Events the server holds for the run. */
  stored: number;
  missing: number[];
  /** Seqs stored more than once, or that the agent never sent. */
  extra: number[];
  agentStatus?: string;
  serverStatus?: string;
}

export interface ServerCrashResult {
  seed: number;
  devices: number;
  /** Seconds after the fleet started at which the server was killed, and how long each outage lasted. */
  kills: { atSeconds: number; downSeconds: number; restartSeconds: number }[];
  wallSeconds: number;
  serverPeakMiB?: number;
  eventsSent: number;
  eventsStored: number;
  eventsLost: number;
  eventsDuplicated: number;
  runs: number;
  problems: string[];
  fleet: DeviceResult[];
  ok: boolean;
}

/** Seconds a restart may take, added per kill to how long the devices' script runs. */
const RESTART_ALLOWANCE_S = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const draw = (random: () => number, [lo, hi]: [number, number]) => lo + (hi - lo) * random();

/** The events an agent wrote to its --events file, by run. */
function agentRuns(file: string): Map<string, { seqs: number[]; status?: string }> {
  const runs = new Map<string, { seqs: number[]; status?: string }>();
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return runs;
  }
  for (const line of text.split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as { runId: string; seq: number; type: string; status?: string };
    const run = runs.get(e.runId) ?? { seqs: [] };
    run.seqs.push(e.seq);
    if (e.type === 'run-end') run.status = e.status;
    runs.set(e.runId, run);
  }
  return runs;
}

/** Every stored event of a run (paged), or undefined when the server does not know the run. */
async function storedSeqs(line: FleetControl, runId: string): Promise<number[] | undefined> {
  const seqs: number[] = [];
  for (let after = -1; ; ) {
    const r = await line.server.api('GET', `/api/v1/runs/${runId}/events?after=${after}&limit=10000`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) throw new Error(`GET events of run ${runId}: ${r.status} ${r.text.slice(0, 200)}`);
    const page = r.json as { seq: number }[];
    for (const e of page) seqs.push(e.seq);
    if (page.length < 10000) return seqs;
    after = page.at(-1)!.seq;
  }
}

export async function runServerCrash(o: ServerCrashOptions): Promise<ServerCrashResult> {
  if (!Number.isInteger(o.kills) || o.kills < 0) throw new Error(`--kills must be a whole number, not ${o.kills}`);
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const random = seededRandom(o.seed);
  // The schedule is drawn first: the devices' script must outlast it, or a fast machine
  // finishes the fleet before the last kill.
  const schedule = Array.from({ length: o.kills }, () => ({ up: draw(random, o.upSeconds ?? [2, 6]) * 1000, down: draw(random, o.downSeconds ?? [0.5, 3]) * 1000 }));
  const scriptSeconds = schedule.reduce((t, k) => t + (k.up + k.down) / 1000 + RESTART_ALLOWANCE_S, 0);
  const kills: ServerCrashResult['kills'] = [];
  const problems: string[] = [];
  const checks: RunCheck[] = [];
  let t0 = 0;

  const during = async (line: FleetControl, running: () => boolean) => {
    t0 = performance.now();
    for (let k = 0; k < o.kills; k++) {
      const { up, down } = schedule[k]!;
      const until = performance.now() + up;
      while (running() && performance.now() < until) await sleep(50);
      if (!running()) {
        problems.push(`the fleet finished before kill ${k + 1} of ${o.kills}`);
        return;
      }
      const at = (performance.now() - t0) / 1000;
      await line.killServer();
      await sleep(down);
      const s0 = performance.now();
      await line.startServer();
      const restartSeconds = (performance.now() - s0) / 1000;
      kills.push({ atSeconds: at, downSeconds: down / 1000, restartSeconds });
      log(`server killed at ${at.toFixed(1)} s, down ${(down / 1000).toFixed(1)} s, listening again ${restartSeconds.toFixed(1)} s after its start`);
    }
  };

  const after = async (line: FleetControl, devices: DeviceResult[]) => {
    for (const d of devices) {
      if (!d.eventsFile) continue;
      const runs = agentRuns(d.eventsFile);
      if (runs.size === 0) problems.push(`${d.serial}: the agent wrote no events`);
      for (const [runId, run] of runs) {
        const sent = [...run.seqs].sort((a, b) => a - b);
        const stored = (await storedSeqs(line, runId)) ?? [];
        const storedSet = new Set(stored);
        const sentSet = new Set(sent);
        const missing = sent.filter((s) => !storedSet.has(s));
        const seen = new Set<number>();
        const extra = stored.filter((s) => {
          const twice = seen.has(s);
          seen.add(s);
          return twice || !sentSet.has(s);
        });
        const r = await line.server.api('GET', `/api/v1/runs/${runId}`);
        const serverStatus = r.status === 200 ? (r.json as { status: string }).status : undefined;
        const check: RunCheck = { serial: d.serial, runId, sent: sent.length, stored: stored.length, missing, extra, ...(run.status ? { agentStatus: run.status } : {}), ...(serverStatus ? { serverStatus } : {}) };
        checks.push(check);
        if (sent.length !== sent.at(-1)! + 1 || sent[0] !== 0) problems.push(`${d.serial} run ${runId}: the agent's own events are not seq 0..${sent.at(-1)}`);
        if (missing.length) problems.push(`${d.serial} run ${runId}: ${missing.length} events lost (seq ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''})`);
        if (extra.length) problems.push(`${d.serial} run ${runId}: ${extra.length} events stored twice or never sent (seq ${extra.slice(0, 10).join(', ')})`);
        if (stored.length !== sent.at(-1)! + 1) problems.push(`${d.serial} run ${runId}: ${stored.length} events stored, the agent's last seq is ${sent.at(-1)}`);
        if ((run.status ?? 'running') !== serverStatus) problems.push(`${d.serial} run ${runId}: the agent ended it ${run.status ?? '(no run-end)'}, the server says ${serverStatus ?? 'unknown run'}`);
      }
    }
  };

  const fleet = await runFleet({
    cli: o.cli,
    devices: o.devices,
    work: o.work,
    ...(o.imageMiB ? { imageMiB: o.imageMiB } : {}),
    ...(o.db ? { db: o.db } : {}),
    ...(o.timeoutSeconds ? { timeoutSeconds: o.timeoutSeconds } : {}),
    log,
    eventFiles: true,
    scriptSeconds,
    during,
    after,
  });
  if (!fleet.ok) problems.push('not every device was provisioned (see above)');
  const eventsSent = checks.reduce((n, c) => n + c.sent, 0);
  const eventsStored = checks.reduce((n, c) => n + c.stored, 0);
  const eventsLost = checks.reduce((n, c) => n + c.missing.length, 0);
  const eventsDuplicated = checks.reduce((n, c) => n + c.extra.length, 0);
  const ok = problems.length === 0 && kills.length === o.kills;
  log(
    `server killed ${kills.length} times (seed ${o.seed}); ${o.devices} devices in ${fleet.wallSeconds.toFixed(1)} s; ` +
      `events: ${eventsSent} sent, ${eventsStored} stored, ${eventsLost} lost, ${eventsDuplicated} duplicated, in ${checks.length} runs` +
      `${fleet.serverPeakMiB ? `; server peak RSS ${fleet.serverPeakMiB.toFixed(0)} MiB` : ''}; ${ok ? 'OK' : `FAILED: ${problems.slice(0, 20).join('; ')}`}`,
  );
  return {
    seed: o.seed,
    devices: o.devices,
    kills,
    wallSeconds: fleet.wallSeconds,
    ...(fleet.serverPeakMiB !== undefined ? { serverPeakMiB: fleet.serverPeakMiB } : {}),
    eventsSent,
    eventsStored,
    eventsLost,
    eventsDuplicated,
    runs: checks.length,
    problems,
    fleet: fleet.devices,
    ok,
  };
}
