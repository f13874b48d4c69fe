// A fleet of simulated devices: real agents (`bootline run`, one process each) against a real
// line server, each with its own identity (a small sysfs tree: SMBIOS serial, UUID, a NIC's
// MAC), its own state dir and a sparse file as its disk. They enroll with a token, get the
// line's plan (deploy an image the server serves, run a script), report every event, and the
// result is checked on both sides: each disk holds the image, the server saw each run succeed.
import { execFile as execFileCb, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { setPriority } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { callApi, startLineServer, stopChild, type LineServer } from './line-server.ts';
import { eventLatencies, eventPostTimes, summarize, type LatencySummary } from './event-latency.ts';
import { watchMachineMemory } from './machine-memory.ts';
import { startPostgres, type PgServer } from './postgres.ts';

const execFile = promisify(execFileCb);

/** Niceness of the simulated devices' agents. */
const AGENT_NICE = 19;

export interface FleetOptions {
  /** The bootline CLI (dist/bootline.mjs). */
  cli: string;
  devices: number;
  /** Work directory (server data, devices); emptied first. */
  work: string;
  /** Size of the generated image in MiB (half of it mapped). */
  imageMiB?: number;
  /** A PostgreSQL URL for the server, or `auto-postgres` (a throwaway PostgreSQL in the system temp dir, src/lab/postgres.ts); default SQLite. */
  db?: string;
  /** Server processes on the same database (PostgreSQL only, default 1); device i talks to server i mod n. */
  servers?: number;
  /** Give up after this long (default 600 s). */
  timeoutSeconds?: number;
  /** Options for node in every agent process (e.g. --max-semi-space-size=1). */
  agentNodeArgs?: string[];
  /** How long each device's script runs, printing a line every quarter second (default 0). */
  scriptSeconds?: number;
  log?: (line: string) => void;
  /** Each agent also writes every event it emits to `<device>/events.jsonl` (--events), to compare with what the server stored. */
  eventFiles?: boolean;
  /** Runs alongside the fleet (e.g. kills and restarts the server); `running()` is false once every agent has exited. */
  during?: (line: FleetControl, running: () => boolean) => Promise<void>;
  /** Runs once every agent has exited, before the server stops (further checks of its records). */
  after?: (line: FleetControl, devices: DeviceResult[]) => Promise<void>;
}

/** The line server of a running fleet, for `during`. */
export interface FleetControl {
  readonly server: LineServer;
  /** kill -9 of the server process; resolves once it has exited. */
  killServer(): Promise<void>;
  /** Starts the server again on the same data dir and port. */
  startServer(): Promise<void>;
}

export interface DeviceResult {
  serial: string;
  exitCode: number | null;
  seconds: number;
  /** The disk file holds the image byte for byte. */
  diskOk: boolean;
  /** The server's device state at the end. */
  serverState?: string;
  /** The agent's events file (with `eventFiles`). */
  eventsFile?: string;
}

export interface FleetResult {
  devices: DeviceResult[];
  wallSeconds: number;
  /** Peak resident memory of the server process (VmHWM), MiB; the highest of its processes when it was restarted or there are several. */
  serverPeakMiB?: number;
  /** VmHWM of each server process at the end, MiB, in start order. */
  serverPeaksMiB: number[];
  /** Events each server process stored (its bootline_events_ingested_total since its last start), in start order. */
  serverEvents: number[];
  /** The machine's used memory (MemTotal − MemAvailable) before the agents started and its peak while they ran, MiB. */
  machineMiB: { before: number; peak: number };
  /** From each stored event's time to the server's taking it (event-latency.ts); undefined when none was stored. */
  latency?: LatencySummary;
  /** The server's own time per event batch, from the request's arrival to its answer after the commit (its log); undefined when none. */
  serverBatchTimes?: LatencySummary;
  /** How often the server was started (1 + restarts). */
  serverStarts: number;
  ok: boolean;
}

/**
 * The line's plan: deploy the image, then a customer script. Each device's kernel command line names its disk file (installer.target.dev=), which overrules target: [auto].
 * With `scriptSeconds`, the script goes on for that long, printing a line (an event) every quarter second.
 */
export function fleetPlan(image: string, scriptSeconds = 0) {
  const ticks = Math.round(scriptSeconds * 4);
  const work = ticks > 0 ? `; i=0; while [ $i -lt ${ticks} ]; do sleep 0.25; echo "working $i"; i=$((i+1)); done` : '';
  return {
    description: 'fleet simulation: deploy the image, run a script',
    config: {
      unattended: true,
      tasks: [
        { name: 'deploy-image', builtin: 'deploy-image', effort: 5, with: { image: `image:${image}`, target: ['auto'], allowFile: true, overwrite: 'OVERWRITE' } },
        { name: 'customer-script', script: '/bin/sh', args: ['-c', `echo "provisioned $BOOTLINE_TARGET"${work}`] },
      ],
    },
  };
}

/** The identity an agent reads from sysfs: SMBIOS serial and UUID, one NIC with a MAC. */
export function writeFakeSysfs(root: string, i: number): { serial: string; mac: string } {
  const serial = `SIM-${String(i + 1).padStart(4, '0')}`;
  const mac = `52:54:00:${((i >> 16) & 0xff).toString(16).padStart(2, '0')}:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
  const dmi = join(root, 'class', 'dmi', 'id');
  const nic = join(root, 'class', 'net', 'eth0');
  mkdirSync(dmi, { recursive: true });
  mkdirSync(join(nic, 'device'), { recursive: true });
  writeFileSync(join(dmi, 'product_serial'), `${serial}\n`);
  writeFileSync(join(dmi, 'product_uuid'), `00000000-0000-4000-8000-${(i + 1).toString(16).padStart(12, '0')}\n`);
  writeFileSync(join(nic, 'address'), `${mac}\n`);
  return { serial, mac };
}

/** A sparse raw image: random MiB blocks every other MiB, holes between. */
export function makeImage(path: string, mib: number): void {
  writeFileSync(path, '');
  truncateSync(path, mib * 1024 * 1024);
  const fd = openSync(path, 'r+');
  try {
    const block = Buffer.alloc(1024 * 1024);
    for (let m = 0; m < mib; m += 2) {
      for (let i = 0; i < block.length; i += 32) createHash('sha256').update(`${m}:${i}`).digest().copy(block, i);
      writeSync(fd, block, 0, block.length, m * 1024 * 1024);
    }
  } finally {
    closeSync(fd);
  }
}

export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(path)
      .on('data', (b) => h.update(b))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

/** Peak RSS of a process in MiB (VmHWM), if it still runs. */
export function peakMiB(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Most server processes a fleet may have (each holds up to 10 PostgreSQL connections). */
const MAX_SERVERS = 8;

export async function runFleet(o: FleetOptions): Promise<FleetResult> {
  if (!Number.isInteger(o.devices) || o.devices < 1 || o.devices > 2000) throw new Error(`--devices must be a whole number from 1 to 2000, not ${o.devices}`);
  const servers = o.servers ?? 1;
  if (!Number.isInteger(servers) || servers < 1 || servers > MAX_SERVERS) throw new Error(`--servers must be a whole number from 1 to ${MAX_SERVERS}, not ${servers}`);
  if (servers > 1 && !o.db) throw new Error(`--servers ${servers} needs PostgreSQL (--db postgres://… or --db auto-postgres): a SQLite database belongs to one server process`);
  if (servers > 1 && (o.during || o.after)) throw new Error('a fleet with several servers cannot be given a during or after step (they act on one server)');
  if (o.db !== 'auto-postgres') return fleetOn(o, o.db, servers);
  // A throwaway cluster, stopped and removed whatever happens (also if this process dies).
  const pg: PgServer = await startPostgres();
  try {
    (o.log ?? ((l: string) => process.stdout.write(`${l}\n`)))(`PostgreSQL (throwaway, fsync off) at ${pg.url}`);
    return await fleetOn(o, pg.url, servers);
  } finally {
    await pg.stop();
  }
}

async function fleetOn(o: FleetOptions, db: string | undefined, serverCount: number): Promise<FleetResult> {
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const mib = o.imageMiB ?? 16;
  rmSync(o.work, { recursive: true, force: true });
  const data = join(o.work, 'server');
  mkdirSync(data, { recursive: true });
  const imagePath = join(o.work, 'fleet.img');
  makeImage(imagePath, mib);
  await execFile(process.execPath, [o.cli, 'image', 'add', imagePath, '--data', data, '--name', 'fleet', ...(db ? ['--db', db] : [])]);
  const want = await sha256File(imagePath);

  // The server logs at its default level (info): a line per request, with its response time.
  const serverOptions = { cli: o.cli, data, logFile: join(o.work, 'server.log'), logLevel: 'info', ...(db ? { db } : {}) };
  let server: LineServer = await startLineServer(serverOptions);
  const firstServer = server;
  // More processes on the same database and data dir; the first one printed the admin token.
  const others: LineServer[] = [];
  // The peak of each server process, read just before it is killed or stopped.
  const peaks: number[] = [];
  let serverStarts = 1;
  const control: FleetControl = {
    get server() {
      return server;
    },
    async killServer() {
      const peak = peakMiB(server.pid);
      if (peak !== undefined) peaks.push(peak);
      await stopChild(server.child, 0, 'SIGKILL');
    },
    async startServer() {
      // Under a fleet's load a start takes far longer than on an idle machine.
      server = await startLineServer({ ...serverOptions, startTimeoutMs: 180_000, listen: new URL(firstServer.url).host, ...(firstServer.adminToken ? { adminToken: firstServer.adminToken } : {}) });
      serverStarts++;
    },
  };
  try {
    for (let k = 1; k < serverCount; k++) others.push(await startLineServer({ ...serverOptions, ...(firstServer.adminToken ? { adminToken: firstServer.adminToken } : {}) }));
    const must = async (expect: number, method: string, path: string, body?: unknown) => {
      const r = await server.api(method, path, body);
      if (r.status !== expect) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
      return r.json;
    };
    await must(200, 'PUT', '/api/v1/plans/fleet', fleetPlan('fleet', o.scriptSeconds ?? 0));
    await must(201, 'POST', '/api/v1/rules', { match: 'default', plan: 'fleet' });
    const { token } = (await must(201, 'POST', '/api/v1/tokens', { label: 'fleet simulation' })) as { token: string };
    // Device i talks to server i mod n, as devices a line's DHCP points at two boot servers would.
    const urlOf = (i: number) => (i % serverCount === 0 ? server.url : others[(i % serverCount) - 1]!.url);
    log(`${serverCount === 1 ? `server ${server.url}` : `servers ${[server, ...others].map((x) => x.url).join(', ')}`}; ${o.devices} devices start${o.agentNodeArgs?.length ? ` (node ${o.agentNodeArgs.join(' ')})` : ''}`);

    const memory = watchMachineMemory();
    const t0 = performance.now();
    const deadline = Date.now() + (o.timeoutSeconds ?? 600) * 1000;
    let agentsRunning = true;
    const agents = new Set<ChildProcess>();
    const fleet = Promise.all(
      Array.from({ length: o.devices }, async (_, i): Promise<DeviceResult> => {
        const dir = join(o.work, 'devices', `dev${i + 1}`);
        const sysfs = join(dir, 'sys');
        const { serial } = writeFakeSysfs(sysfs, i);
        const disk = join(dir, 'disk.img');
        writeFileSync(join(dir, 'cmdline'), `bootline.server=${urlOf(i)} bootline.token=${token} installer.target.dev=${disk}\n`);
        const start = performance.now();
        const eventsFile = o.eventFiles ? join(dir, 'events.jsonl') : undefined;
        const exitCode = await new Promise<number | null>((resolve) => {
          const logFd = openSync(join(dir, 'agent.log'), 'w');
          const args = [...(o.agentNodeArgs ?? []), o.cli, 'run', '--unattended', '--cmdline', join(dir, 'cmdline'), '--state-dir', join(dir, 'state'), ...(eventsFile ? ['--events', eventsFile] : [])];
          const child = spawn(process.execPath, args, {
            env: { ...process.env, BOOTLINE_SYSFS_ROOT: sysfs },
            stdio: ['ignore', logFd, logFd],
          });
          // The child has its own copy; a fleet of hundreds must not keep one per device here.
          closeSync(logFd);
          agents.add(child);
          // The devices share this machine's cores with the server; on a line each has its own
          // CPU. Lower priority keeps hundreds of agents from starving the server under test.
          try {
            if (child.pid !== undefined) setPriority(child.pid, AGENT_NICE);
          } catch {
            // not allowed here: they compete as equals
          }
          const timer = setTimeout(() => child.kill('SIGTERM'), Math.max(1000, deadline - Date.now()));
          child.on('exit', (code) => {
            agents.delete(child);
            clearTimeout(timer);
            resolve(code);
          });
        });
        const seconds = (performance.now() - start) / 1000;
        let diskOk = false;
        try {
          diskOk = (await sha256File(disk)) === want;
        } catch {
          diskOk = false;
        }
        // A checked disk is the image again: 500 of them hold gigabytes. One that differs stays.
        if (diskOk) rmSync(disk, { force: true });
        return { serial, exitCode, seconds, diskOk, ...(eventsFile ? { eventsFile } : {}) };
      }),
    ).finally(() => {
      agentsRunning = false;
    });
    let results: DeviceResult[];
    let machinePeak: number;
    try {
      [results] = await Promise.all([fleet, o.during?.(control, () => agentsRunning)]);
    } catch (e) {
      // No agent may outlive a failed fleet run.
      for (const a of agents) a.kill('SIGKILL');
      await fleet.catch(() => undefined);
      throw e;
    } finally {
      machinePeak = memory.stop();
    }
    const wallSeconds = (performance.now() - t0) / 1000;
    const rows = (await must(200, 'GET', '/api/v1/devices?limit=5000')) as { id: string; serial: string | null; state: string }[];
    for (const r of results) r.serverState = rows.find((x) => x.serial === r.serial)?.state;
    // The servers' peaks before the reads below, which are not part of the fleet's load.
    const last = peakMiB(server.pid);
    if (last !== undefined) peaks.push(last);
    const serverPeaksMiB = [...(peaks.length ? [Math.max(...peaks)] : []), ...others.map((x) => peakMiB(x.pid)).filter((m) => m !== undefined)];
    await o.after?.(control, results);
    const latency = summarize(eventLatencies(await storedEvents(server, rows.map((r) => r.id))));
    const serverBatchTimes = summarize(eventPostTimes(readFileSync(serverOptions.logFile, 'utf8')));
    const serverPeakMiB = serverPeaksMiB.length ? Math.max(...serverPeaksMiB) : undefined;
    const serverEvents = await Promise.all([server, ...others].map((x) => eventsIngested(x.url)));
    const machineMiB = { before: memory.beforeMiB, peak: machinePeak };
    const ok = results.every((r) => r.exitCode === 0 && r.diskOk && r.serverState === 'succeeded');
    const bad = results.filter((r) => !(r.exitCode === 0 && r.diskOk && r.serverState === 'succeeded'));
    const mem = serverPeaksMiB.length ? `; server peak RSS ${serverPeaksMiB.map((m) => m.toFixed(0)).join(' + ')} MiB` : '';
    log(
      `${results.length - bad.length} of ${results.length} devices provisioned in ${wallSeconds.toFixed(1)} s${mem}` +
        (bad.length ? `; failed: ${bad.map((r) => `${r.serial} (exit ${r.exitCode}, disk ${r.diskOk ? 'ok' : 'differs'}, server ${r.serverState ?? 'no record'})`).join(', ')} — logs in ${join(o.work, 'devices')}` : ''),
    );
    log(`  machine's used memory (MemTotal - MemAvailable): ${(machineMiB.before / 1024).toFixed(1)} GiB before the agents started, peak ${(machineMiB.peak / 1024).toFixed(1)} GiB`);
    log(
      latency
        ? `  event latency, from the agent making an event to the server taking its batch: p50 ${latency.p50Ms} ms, p99 ${latency.p99Ms} ms, max ${latency.maxMs} ms, over ${latency.count} events` +
            (serverEvents.length > 1 ? ` (stored by the servers: ${serverEvents.join(' + ')})` : '')
        : '  no events stored',
    );
    if (serverBatchTimes) log(`  the server's answer to an event batch, from its arrival to the answer after the commit: p50 ${serverBatchTimes.p50Ms.toFixed(0)} ms, p99 ${serverBatchTimes.p99Ms.toFixed(0)} ms, over ${serverBatchTimes.count} batches`);
    return { devices: results, wallSeconds, ...(serverPeakMiB !== undefined ? { serverPeakMiB } : {}), serverPeaksMiB, serverEvents, machineMiB, ...(latency ? { latency } : {}), ...(serverBatchTimes ? { serverBatchTimes } : {}), serverStarts, ok };
  } finally {
    for (const x of others) await x.stop();
    await server.stop();
  }
}

/** A server's count of events it stored (all types), from its Prometheus metrics. */
async function eventsIngested(url: string): Promise<number> {
  const r = await callApi(`${url}/metrics`, 'GET', undefined);
  if (r.status !== 200) throw new Error(`GET ${url}/metrics: ${r.status}`);
  let n = 0;
  for (const m of r.text.matchAll(/^bootline_events_ingested_total\{[^}]*\} (\d+)$/gm)) n += Number(m[1]);
  return n;
}

/** Every stored event (its times) of every run of the given devices, read over the admin API. */
async function storedEvents(server: LineServer, deviceIds: string[]): Promise<{ runId: string; seq: number; ts: string; receivedAt: string }[]> {
  const get = async (path: string) => {
    const r = await server.api('GET', path);
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status} ${r.text.slice(0, 300)}`);
    return r.json as unknown;
  };
  const events: { runId: string; seq: number; ts: string; receivedAt: string }[] = [];
  for (const id of deviceIds) {
    for (const run of (await get(`/api/v1/devices/${encodeURIComponent(id)}/runs`)) as { id: string }[]) {
      for (let after = -1; ; ) {
        const page = (await get(`/api/v1/runs/${encodeURIComponent(run.id)}/events?after=${after}&limit=10000`)) as { runId: string; seq: number; ts: string; receivedAt: string }[];
        // Only the times are kept: a 500-device fleet stores tens of thousands of events.
        for (const e of page) events.push({ runId: e.runId, seq: e.seq, ts: e.ts, receivedAt: e.receivedAt });
        if (page.length < 10000) break;
        after = page.at(-1)!.seq;
      }
    }
  }
  return events;
}
