// The event load generator of bench/server.ts, run as its own process so that its CPU is
// not the server's: simulated devices posting event batches to POST /api/v1/device/events.
//
//   node --import tsx bench/server-load.ts CONFIG.json   (prints one JSON result on stdout)
//
// Each device has its own keep-alive connection (opened before the clock starts) and posts one batch at a time, in the order
// an agent does: a run's events (run-start, per task: task-start, many task-progress and log
// events, task-end; run-end) with seq increasing, batches never spanning two runs, then the
// next run. Run lengths vary (half to 1.5 times the mean) so that the devices, all started
// together, do not keep starting and ending runs in lockstep. A batch refused or lost is re-sent as it was (like the agent's outbox), so every
// event is stored exactly once in the end.
// - `rate` 0: closed loop, each device posts again as soon as it has the answer.
// - `rate` R: each device posts every devices×batch/R seconds (start times spread over one
//   interval), so the offered load is R events/s. Latency is counted from the time a batch
//   was due, not from when it was sent: a server falling behind cannot hide it (no
//   coordinated omission).
// Throughput counts the events of the requests answered inside the measured window (after
// the warm-up); latency the requests due inside it.
import { Agent, request } from 'node:http';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { BootlineEvent } from '../src/events.ts';
import { runEvents } from '../test/server/events-fixture.ts';

export interface LoadConfig {
  /** Server base URLs; device i posts to targets[i % targets.length]. */
  targets: string[];
  devices: { id: string; credential: string }[];
  batch: number;
  /** Offered events/s over all devices; 0 = closed loop. */
  rate: number;
  warmupSeconds: number;
  seconds: number;
  /** Run ids are `<prefix>-<device index>-<run number>`. */
  prefix: string;
  tasks: number;
  progressPerTask: number;
  logsPerTask: number;
}

export interface LoadResult {
  mode: 'closed' | 'rate';
  /** The rate asked for (0: closed loop). */
  offered: number;
  /** Events in the batches due inside the measured window, per second (what was really offered). */
  offeredEventsPerSecond: number;
  seconds: number;
  /** Events acknowledged as stored by requests answered in the measured window. */
  measuredEvents: number;
  measuredRequests: number;
  eventsPerSecond: number;
  latencyMs: { p50: number; p99: number; max: number; mean: number; samples: number };
  /** Requests answered with anything but 200, or that failed on the network (each retried). */
  errors: Record<string, number>;
  /** Every event generated and acknowledged (warm-up and drain too). */
  acked: number;
  /** stored/duplicates as the server counted them over all acknowledged batches. */
  stored: number;
  duplicates: number;
  /** Events of batches given up on after the retries (should be 0). */
  unacked: number;
  meanBatch: number;
  /** Every run: its id and the number of its events acknowledged. */
  runs: [string, number][];
  loadGenCpuSeconds: number;
  loadGenLoopDelayP99Ms: number;
  /** Per second from the start (warm-up included): events acknowledged, and the slowest request due then (ms). */
  timeline: { events: number; maxLatencyMs: number }[];
  /** The slowest requests: which batch, when due (s from the start), how long (ms), attempts. */
  slowest: { runId: string; seq: number; events: number; dueS: number; ms: number; attempts: number; phases: Record<string, number> }[];
}

/**
 * One run's events, made one at a time as they are taken (so that starting 500 runs at once
 * costs the load generator nothing noticeable): run-start; `tasks` tasks, each task-start,
 * `progress` task-progress and `logs` log events interleaved, task-end; run-end. The shapes
 * are those of test/server/events-fixture.ts.
 */
export function* benchRun(runId: string, tasks: number, progress: number, logs: number): Generator<BootlineEvent, void> {
  const names = Array.from({ length: tasks }, (_, i) => `step-${i + 1}`);
  const share = 100 / tasks;
  const chunk = 8 * 1024 * 1024;
  const total = progress + logs;
  let seq = 0;
  for (const e of runEvents(runId, { tasks: names })) {
    if (e.type === 'log') continue;
    if (e.type !== 'task-progress') {
      yield { ...e, seq: seq++ };
      continue;
    }
    let p = 0;
    for (let i = 0; i < total; i++) {
      if (Math.floor(((i + 1) * logs) / total) > Math.floor((i * logs) / total)) {
        const message = `[${e.task}] wrote ${p * 8} MiB to /dev/nvme0n1 at 412.5 MiB/s, ${progress - p} chunks to go`;
        yield { type: 'log', runId, seq: seq++, ts: e.ts, progress: e.index * share + (share * p) / (progress + 1), task: e.task, index: e.index, stream: 'stdout', level: 'info', message };
      } else {
        p++;
        const frac = p / (progress + 1);
        yield {
          type: 'task-progress', runId, seq: seq++, ts: e.ts, progress: e.index * share + share * frac, task: e.task, index: e.index, count: e.count,
          taskProgress: 100 * frac, bytesDone: p * chunk, bytesTotal: (progress + 1) * chunk, rate: 432_537_600, etaSeconds: progress - p,
        };
      }
    }
  }
}

interface Device {
  index: number;
  credential: string;
  target: URL;
  agent: Agent;
  run: Generator<BootlineEvent, void> | undefined;
  runNo: number;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as LoadConfig;
  const devices: Device[] = cfg.devices.map((d, index) => {
    const t = cfg.targets[index % cfg.targets.length]!;
    return { index, credential: d.credential, target: new URL('/api/v1/device/events', t), agent: new Agent({ keepAlive: true, maxSockets: 1 }), run: undefined, runNo: -1 };
  });
  const runs = new Map<string, number>();
  const errors: Record<string, number> = {};
  const latencies: number[] = [];
  let measuredEvents = 0;
  let measuredRequests = 0;
  let acked = 0;
  let stored = 0;
  let duplicates = 0;
  let unacked = 0;
  let batches = 0;
  let batchEvents = 0;
  let offeredEvents = 0;
  const timeline: { events: number; maxLatencyMs: number }[] = [];
  const slowest: LoadResult['slowest'] = [];
  const slot = (t: number) => {
    const i = Math.max(0, Math.floor((t - t0) / 1000));
    while (timeline.length <= i) timeline.push({ events: 0, maxLatencyMs: 0 });
    return timeline[i]!;
  };

  const nextBatch = (d: Device): BootlineEvent[] => {
    const batch: BootlineEvent[] = [];
    while (batch.length < cfg.batch) {
      const next = d.run?.next();
      if (next && !next.done) {
        batch.push(next.value);
        continue;
      }
      // A batch never spans two runs.
      d.run = undefined;
      if (batch.length > 0) break;
      // Runs of different lengths (half to 1.5 times the mean), so that devices started
      // together do not all end and start runs together.
      const f = 0.5 + Math.random();
      d.runNo++;
      d.run = benchRun(`${cfg.prefix}-${d.index}-${d.runNo}`, cfg.tasks, Math.round(cfg.progressPerTask * f), Math.round(cfg.logsPerTask * f));
    }
    const ts = new Date().toISOString();
    for (const e of batch) e.ts = ts;
    return batch;
  };

  /** When the request got its socket, connected (a new socket), was written, got its answer's headers (ms from the start). */
  type Phases = { socket?: number; connect?: number; sent?: number; headers?: number; port?: number };
  const at = () => Math.round(performance.now() - t0);
  const post = (d: Device, body: string, phases: Phases): Promise<{ status: number; text: string }> =>
    new Promise((resolve, reject) => {
      const req = request(
        d.target,
        {
          method: 'POST',
          agent: d.agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${d.credential}` },
          timeout: 60_000,
        },
        (res) => {
          phases.headers = at();
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('socket', (sock) => {
        phases.socket = at();
        phases.port = sock.localPort ?? 0;
        if (sock.connecting) sock.once('connect', () => (phases.connect = at()));
      });
      req.on('finish', () => (phases.sent = at()));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(body);
    });

  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  // Every device's connection is opened before the clock starts (GET /healthz, 50 at a time):
  // a Node server kept busy admits new connections only slowly (one per turn of its event
  // loop, seen with a bare node:http server too), which would otherwise hold some devices
  // back for seconds at the start and make the warm-up a connection storm.
  let t0 = performance.now();
  {
    let next = 0;
    const connect = async () => {
      while (next < devices.length) {
        const d = devices[next++]!;
        await new Promise<void>((resolve, reject) => {
          const req = request(new URL('/healthz', d.target), { agent: d.agent }, (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`GET /healthz: ${res.statusCode}`))));
          });
          req.on('error', reject);
          req.end();
        });
      }
    };
    await Promise.all(Array.from({ length: 50 }, connect));
  }
  const loop = monitorEventLoopDelay({ resolution: 10 });
  t0 = performance.now();
  const measureFrom = t0 + cfg.warmupSeconds * 1000;
  const endAt = measureFrom + cfg.seconds * 1000;
  let cpuAtMeasure: NodeJS.CpuUsage | undefined;
  let cpuAtEnd: NodeJS.CpuUsage | undefined;
  const cpuTimers = [
    setTimeout(() => {
      cpuAtMeasure = process.cpuUsage();
      loop.enable();
      process.stderr.write('@measure-start\n');
    }, measureFrom - t0),
    setTimeout(() => {
      cpuAtEnd = process.cpuUsage(cpuAtMeasure);
      loop.disable();
      process.stderr.write('@measure-end\n');
    }, endAt - t0),
  ];
  const interval = cfg.rate > 0 ? (cfg.devices.length * cfg.batch * 1000) / cfg.rate : 0;

  /** Posts a batch until it is acknowledged (at most 6 attempts). */
  const send = async (d: Device, batch: BootlineEvent[], due: number): Promise<void> => {
    const body = JSON.stringify({ events: batch });
    let phases: Phases = {};
    for (let attempt = 0; ; attempt++) {
      let r: { status: number; text: string } | undefined;
      phases = {};
      try {
        r = await post(d, body, phases);
      } catch (e) {
        const k = `network: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
        errors[k] = (errors[k] ?? 0) + 1;
      }
      const done = performance.now();
      if (r?.status === 200) {
        const j = JSON.parse(r.text) as { stored: number; duplicates: number };
        stored += j.stored;
        duplicates += j.duplicates;
        acked += batch.length;
        const runId = batch[0]!.runId;
        runs.set(runId, (runs.get(runId) ?? 0) + batch.length);
        if (done >= measureFrom && done <= endAt) {
          measuredEvents += batch.length;
          measuredRequests++;
        }
        if (due >= measureFrom && due < endAt) latencies.push(done - due);
        slot(done).events += batch.length;
        if (slowest.length < 10 || done - due > slowest[slowest.length - 1]!.ms) {
          slowest.push({ runId, seq: batch[0]!.seq, events: batch.length, dueS: (due - t0) / 1000, ms: done - due, attempts: attempt + 1, phases });
          slowest.sort((a, b) => b.ms - a.ms);
          slowest.length = Math.min(slowest.length, 10);
        }
        const due1 = slot(due);
        due1.maxLatencyMs = Math.max(due1.maxLatencyMs, done - due);
        return;
      }
      if (r) errors[`HTTP ${r.status}`] = (errors[`HTTP ${r.status}`] ?? 0) + 1;
      if (attempt >= 5) {
        unacked += batch.length;
        process.stderr.write(`load: giving up on a batch of ${batch.length} events of ${batch[0]!.runId}: ${r ? `${r.status} ${r.text.slice(0, 200)}` : 'network error'}\n`);
        return;
      }
      await sleep(200);
    }
  };

  const runDevice = async (d: Device): Promise<void> => {
    let due = t0 + (interval > 0 ? Math.random() * interval : 0);
    for (;;) {
      if (interval > 0) {
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
      }
      const now = performance.now();
      if (now >= endAt) return;
      if (interval === 0) due = now;
      const batch = nextBatch(d);
      if (due >= measureFrom && due < endAt) offeredEvents += batch.length;
      batches++;
      batchEvents += batch.length;
      await send(d, batch, due);
      due += interval;
    }
  };

  await Promise.all(devices.map(runDevice));
  for (const t of cpuTimers) clearTimeout(t);
  const cpu = cpuAtEnd ?? process.cpuUsage(cpuAtMeasure);
  for (const d of devices) d.agent.destroy();

  const sorted = Float64Array.from(latencies).sort();
  const pct = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]! : NaN);
  const result: LoadResult = {
    mode: cfg.rate > 0 ? 'rate' : 'closed',
    offered: cfg.rate,
    offeredEventsPerSecond: offeredEvents / cfg.seconds,
    seconds: cfg.seconds,
    measuredEvents,
    measuredRequests,
    eventsPerSecond: measuredEvents / cfg.seconds,
    latencyMs: {
      p50: pct(50),
      p99: pct(99),
      max: sorted.length ? sorted[sorted.length - 1]! : NaN,
      mean: sorted.reduce((s, x) => s + x, 0) / (sorted.length || 1),
      samples: sorted.length,
    },
    errors,
    acked,
    stored,
    duplicates,
    unacked,
    meanBatch: batchEvents / (batches || 1),
    runs: [...runs],
    loadGenCpuSeconds: (cpu.user + cpu.system) / 1e6,
    loadGenLoopDelayP99Ms: loop.percentile(99) / 1e6,
    timeline,
    slowest,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

if (process.argv[1] === import.meta.filename) await main();
