// For the agent-with-server tests: the real server in-process on a temp data dir, its
// admin API, and the agent as a user runs it (the bundle, a real process, async so
// that the in-process server keeps answering while the agent runs).
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import https from 'node:https';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
/** A recorded /sys of a PC: serial PF3XK2A9, three NIC MACs. */
export const RECORDED_SYSFS = join(import.meta.dirname, '..', 'fixtures', 'sysfs-pc');
export const RECORDED_SERIAL = 'PF3XK2A9';
export const RECORDED_MACS = ['3c:ec:ef:12:34:56', '00:1b:21:aa:00:02', 'a4:c3:f0:aa:bb:cc'];

export interface LineServer {
  url: string;
  data: string;
  db: string;
  /** An admin API call; the body parsed as JSON when it is JSON. */
  admin<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
  /** A new enrollment token: its secret and id. */
  token(opts?: { label?: string; expiresInSeconds?: number }): Promise<{ token: string; id: string }>;
  /** With `tls`: the self-signed certificate (PEM file) the server uses. */
  ca?: string;
  /** A plan and a default rule that assigns it (or `none`). */
  defaultPlan(config: Record<string, unknown> | 'none', name?: string): Promise<void>;
  close(): Promise<void>;
}

/** The real server on a temp data dir with SQLite; closed when the test file ends. */
export async function lineServer(before?: (paths: { data: string; db: string }) => Promise<void>, o: { tls?: boolean } = {}): Promise<LineServer> {
  const root = mkdtempSync(join(tmpdir(), 'bootline-line-'));
  const data = join(root, 'data');
  const db = `sqlite:${data}/db`;
  let closed = false;
  let close = async () => {};
  // The server closes before its data dir goes.
  after(async () => {
    await close();
    rmSync(root, { recursive: true, force: true });
  });
  if (before) await before({ data, db });
  // Imported here, so that a test that needs no server does not load it.
  const { startServer } = await import('../../src/server/main.ts');
  let ca: string | undefined;
  let key: string | undefined;
  if (o.tls) {
    ca = join(root, 'cert.pem');
    key = join(root, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', ca, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  }
  const s = await startServer({ data, db, listen: '127.0.0.1:0', ...(ca && key ? { tlsCert: ca, tlsKey: key } : {}) }, false);
  assert.ok(s.adminToken, 'a new data dir gets an admin token');
  close = async () => {
    if (closed) return;
    closed = true;
    await s.close();
  };
  const caPem = ca ? readFileSync(ca) : undefined;
  const admin = async <T,>(method: string, path: string, body?: unknown) => {
    const res = caPem ? await httpsCall(`${s.url}/api/v1${path}`, method, s.adminToken!, body, caPem) : await fetchCall(`${s.url}/api/v1${path}`, method, s.adminToken!, body);
    let parsed: unknown = res.text;
    try {
      parsed = JSON.parse(res.text);
    } catch {
      // text/plain (a log) or empty (204)
    }
    return { status: res.status, body: parsed as T };
  };
  return {
    url: s.url,
    data,
    db,
    ...(ca ? { ca } : {}),
    admin,
    async token(o = {}) {
      const r = await admin<{ token: string; id: string }>('POST', '/tokens', { label: o.label ?? 'line-a', ...(o.expiresInSeconds ? { expiresInSeconds: o.expiresInSeconds } : {}) });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body;
    },
    async defaultPlan(config, name = 'plan-a') {
      if (config !== 'none') {
        const p = await admin('PUT', `/plans/${name}`, { config });
        assert.equal(p.status, 200, JSON.stringify(p.body));
      }
      const r = await admin('POST', '/rules', config === 'none' ? { match: 'default', action: 'none', priority: 100 } : { match: 'default', action: 'run', plan: name, priority: 100 });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    },
    close: () => close(),
  };
}

async function fetchCall(url: string, method: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, text: await res.text() };
}

/** fetch cannot be given a CA: node's https can. */
function httpsCall(url: string, method: string, token: string, body: unknown, ca: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body !== undefined ? JSON.stringify(body) : undefined);
  });
}

export interface AgentResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface Agent {
  child: ChildProcess;
  done: Promise<AgentResult>;
}

/**
 * Starts `bootline run` as on a device whose kernel command line is `cmdline`:
 * `--cmdline <dir>/cmdline --state-dir <stateDir>`, the recorded sysfs as its identity.
 */
export function startAgent(dir: string, cmdline: string, stateDir: string, more: string[] = [], env: Record<string, string> = {}): Agent {
  const cmdlineFile = join(dir, 'cmdline');
  writeFileSync(cmdlineFile, `BOOT_IMAGE=/vmlinuz initrd=initrd.img quiet ${cmdline}\n`);
  const child = spawn(process.execPath, [BUNDLE, 'run', '--cmdline', cmdlineFile, '--state-dir', stateDir, ...more], {
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, BOOTLINE_SYSFS_ROOT: RECORDED_SYSFS, ...env },
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<AgentResult>((resolve) =>
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    }),
  );
  return { child, done };
}

/** Runs the agent to its end. */
export function runAgentOn(dir: string, cmdline: string, stateDir: string, more: string[] = [], env: Record<string, string> = {}): Promise<AgentResult> {
  return startAgent(dir, cmdline, stateDir, more, env).done;
}

/** The events of an --events file. */
export function eventsFile(path: string): Array<Record<string, unknown> & { type: string; seq: number; runId: string }> {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l));
}

/** Polls `check` every 50 ms until it returns a value other than undefined (fails after `ms`). */
export async function waitFor<T>(what: string, check: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface StoredEventRow {
  runId: string;
  seq: number;
  type: string;
  body: Record<string, unknown>;
}

/** Every stored event of a run, in seq order (paged). */
export async function runEvents(line: LineServer, runId: string): Promise<StoredEventRow[]> {
  const all: StoredEventRow[] = [];
  for (;;) {
    const after = all.length ? all[all.length - 1]!.seq : -1;
    const r = await line.admin<StoredEventRow[]>('GET', `/runs/${runId}/events?after=${after}&limit=1000`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    all.push(...r.body);
    if (r.body.length < 1000) return all;
  }
}

/** Fails unless the seqs are exactly 0..n-1, each once. */
export function assertContiguous(events: readonly { seq: number }[]): void {
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i),
    'stored seqs are 0..N-1, each once',
  );
}
