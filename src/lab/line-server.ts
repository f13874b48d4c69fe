// A line server for the lab, the demo and the benchmarks: `bootline serve` as its own
// process, as a line runs it, with its URL and first admin token read from what it prints,
// and a small admin API client.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';

export interface LineServerOptions {
  /** The bootline CLI to run (dist/bootline.mjs). */
  cli: string;
  data: string;
  /** Default 127.0.0.1:0 (a free port). */
  listen?: string;
  /** A PostgreSQL URL; default SQLite in the data dir. */
  db?: string;
  logLevel?: string;
  /** Where the server's output goes once it has started (default: dropped). */
  logFile?: string;
  /** Extra options for node (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /** How long to wait for it to print its URL (default 30 s). */
  startTimeoutMs?: number;
  /** The admin token of an earlier start on this data dir (a restart prints none). */
  adminToken?: string;
}

export interface ApiAnswer {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- whatever JSON the route sends
  json: any;
  text: string;
}

export interface LineServer {
  child: ChildProcess;
  pid: number;
  url: string;
  /** The admin token printed on the first start of a data dir (undefined afterwards). */
  adminToken: string | undefined;
  /** A request with the admin token; JSON in and out. */
  api(method: string, path: string, body?: unknown): Promise<ApiAnswer>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/** One HTTP request with an optional bearer token; JSON in and out. */
export async function callApi(url: string, method: string, token: string | undefined, body?: unknown): Promise<ApiAnswer> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text };
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export function stopChild(child: ChildProcess, graceMs = 10_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill(signal);
  });
}

export function startLineServer(o: LineServerOptions): Promise<LineServer> {
  const args = [...(o.nodeArgs ?? []), o.cli, 'serve', '--data', o.data, '--listen', o.listen ?? '127.0.0.1:0', '--log-level', o.logLevel ?? 'warn', ...(o.db ? ['--db', o.db] : [])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    let started = false;
    const limit = o.startTimeoutMs ?? 30_000;
    const fail = (e: Error) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${e.message}\nstdout: ${out}\nstderr: ${err.slice(-2000)}`));
    };
    const timer = setTimeout(() => fail(new Error(`bootline serve did not print its URL within ${limit / 1000} s`)), limit);
    const after = (d: Buffer) => {
      if (o.logFile) appendFileSync(o.logFile, d);
    };
    const onExit = (code: number | null) => fail(new Error(`bootline serve exited (${code})`));
    child.on('exit', onExit);
    child.on('error', (e) => fail(e));
    child.stderr!.on('data', (d: Buffer) => (started ? after(d) : (err = (err + d.toString()).slice(-4000))));
    child.stdout!.on('data', (d: Buffer) => {
      if (started) return void after(d);
      out += d.toString();
      const m = /bootline server listening on (\S+)/.exec(out);
      // The token, when there is one, comes in the same write as the URL.
      if (!m || !out.endsWith('\n')) return;
      clearTimeout(timer);
      started = true;
      child.off('exit', onExit);
      const url = m[1]!;
      const adminToken = /admin token \(shown once, stored hashed\): (\S+)/.exec(out)?.[1] ?? o.adminToken;
      resolve({
        child,
        pid: child.pid!,
        url,
        adminToken,
        api: (method, path, body) => callApi(`${url}${path}`, method, adminToken, body),
        stop: (graceMs) => stopChild(child, graceMs),
      });
    });
  });
}
