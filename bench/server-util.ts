// Helpers for bench/server.ts: the real `bootline serve` as a child process, what /proc says
// about a process tree (CPU time, peak RSS), a small JSON-over-HTTP client, percentiles.
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { callApi, startLineServer, stopChild as stopChildProcess } from '../src/lab/line-server.ts';

/** SIGTERM (or `signal`), then SIGKILL after `graceMs`; resolves once the process has exited. */
export const stopChild = (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> => stopChildProcess(child, graceMs, signal);

export const ROOT = resolve(import.meta.dirname, '..');
export const BUNDLE = join(ROOT, 'dist', 'bootline.mjs');
export const log = (m: string): void => void process.stderr.write(`bench: ${m}\n`);

// ---------------------------------------------------------------------------------
// /proc

const CLK_TCK = 100; // `getconf CLK_TCK` on Linux x86-64

/** Fields of /proc/PID/stat after the command name (index 0 = state, field 3 of the man page). */
function statFields(pid: number): string[] | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** User + system CPU seconds of one process (and, with `reaped`, of its children it has waited for). */
export function cpuSeconds(pid: number, reaped = false): number {
  const f = statFields(pid);
  if (!f) return 0;
  // utime, stime, cutime, cstime are fields 14-17: indexes 11-14 here.
  const ticks = Number(f[11]) + Number(f[12]) + (reaped ? Number(f[13]) + Number(f[14]) : 0);
  return ticks / CLK_TCK;
}

/** Every live descendant of `pid` (not `pid` itself). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const f = statFields(Number(d));
    if (!f) continue;
    const ppid = Number(f[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** CPU seconds of a process tree: the root (with its reaped children) and its live descendants. */
export function treeCpuSeconds(pid: number): number {
  return cpuSeconds(pid, true) + descendants(pid).reduce((s, p) => s + cpuSeconds(p), 0);
}

/** CPU seconds the whole machine spent in user and system mode (all cores; /proc/stat). */
export function machineCpuSeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  // cpu user nice system idle iowait irq softirq steal ...
  return (Number(f[1]) + Number(f[2]) + Number(f[3])) / CLK_TCK;
}

/**
 * CPU used by processes that are not ours while `ours()` runs: whole-machine user+system
 * time minus what `ours()` reports for our processes (interrupt time is left out on both
 * sides). Sampled between calls of the returned function.
 */
export function otherCpu(ours: () => number): () => number {
  const m0 = machineCpuSeconds();
  const o0 = ours();
  return () => Math.max(0, machineCpuSeconds() - m0 - (ours() - o0));
}

/** Waits (up to `maxSeconds`) until processes not ours use less than `threshold` cores; returns what they used last. */
export async function waitForQuiet(ours: () => number, maxSeconds: number, threshold = 0.25): Promise<number> {
  const deadline = Date.now() + maxSeconds * 1000;
  let announced = false;
  for (;;) {
    const other = otherCpu(ours);
    await new Promise((r) => setTimeout(r, 1000));
    const cores = other();
    if (cores < threshold || Date.now() > deadline) {
      if (cores >= threshold) log(`other processes still use ${cores.toFixed(2)} cores: measuring anyway (see the "other load" column)`);
      return cores;
    }
    if (!announced) log(`other processes use ${cores.toFixed(2)} cores: waiting up to ${maxSeconds} s for a quiet machine`);
    announced = true;
  }
}

/** A /proc/PID/status field in KiB (VmHWM: peak RSS, VmRSS: current). */
export function statusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): number {
  try {
    const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The pid of a running process whose command line contains every one of `parts` as an argument. */
export function findProcess(parts: string[]): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const args = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (parts.every((p) => args.includes(p))) return Number(d);
    } catch {
      // gone
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------
// The server under test

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  url: string;
  /** Only when this start created the database's first admin token. */
  adminToken: string | undefined;
  /** The command line, for the report. */
  command: string;
  stop(): Promise<void>;
}

/** Every child process still running: killed on exit, whatever happens. */
export const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/**
 * `bootline serve` on a free loopback port; resolves once it has printed its URL (and admin
 * token). What it prints afterwards (warnings and errors only, with --log-level warn) goes to
 * `logFile` when given.
 */
export async function startBootline(data: string, db?: string, nodeArgs: string[] = [], logFile?: string, logLevel = 'warn'): Promise<ServerProcess> {
  const s = await startLineServer({ cli: BUNDLE, data, ...(db ? { db } : {}), nodeArgs, ...(logFile ? { logFile } : {}), logLevel });
  track(s.child);
  const command = `node ${nodeArgs.length ? `${nodeArgs.join(' ')} ` : ''}dist/bootline.mjs serve --data DIR --listen 127.0.0.1:PORT --log-level ${logLevel}${db ? ' --db postgres://…' : ''}`;
  return { child: s.child, pid: s.pid, url: s.url, adminToken: s.adminToken, command, stop: () => s.stop() };
}

// ---------------------------------------------------------------------------------
// HTTP

export const call = (url: string, method: string, token: string | undefined, body?: unknown) => callApi(url, method, token, body);

/** Like call(), but throws unless the status is `expect`. */
export async function must(expect: number, url: string, method: string, token: string | undefined, body?: unknown): Promise<unknown> {
  const r = await call(url, method, token, body);
  if (r.status !== expect) throw new Error(`${method} ${url}: ${r.status} (expected ${expect}): ${r.text.slice(0, 500)}`);
  return r.json;
}

/** Sum of a Prometheus counter's samples (all label sets) in a /metrics text. */
export function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

// ---------------------------------------------------------------------------------
// Statistics

export const median = (a: number[]): number => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
};

/** The p-th percentile (0-100) of sorted values, nearest rank. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}
