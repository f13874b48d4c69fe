/* eslint-disable @typescript-eslint/no-explicit-any -- answers are whatever JSON the route sends; tests assert on them */
// Starts the real server in-process for a test suite (SQLite in a temp dir, or a given
// PostgreSQL URL) and gives typed little helpers to call it over real HTTP.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer, type ServeOptions } from '../../src/server/main.ts';

export interface TestServer {
  server: RunningServer;
  /** Stops the server and removes its data dir (when the helper made it). Call it in after(). */
  close(): Promise<void>;
  url: string;
  adminToken: string;
  data: string;
  /** fetch with the admin token; JSON bodies in and out. */
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string; headers: Headers }>;
  call(method: string, path: string, opts?: { body?: unknown; token?: string; headers?: Record<string, string>; raw?: string }): Promise<{ status: number; json: any; text: string; headers: Headers }>;
}

export async function startTestServer(opts: Partial<ServeOptions> = {}): Promise<TestServer> {
  const own = opts.data === undefined;
  const data = opts.data ?? mkdtempSync(join(tmpdir(), 'bootline-server-'));
  const server = await startServer({ data, listen: '127.0.0.1:0', ...opts }, false);
  const adminToken = server.adminToken ?? '';
  const call: TestServer['call'] = async (method, path, o = {}) => {
    const headers: Record<string, string> = { ...o.headers };
    if (o.token) headers.authorization = `Bearer ${o.token}`;
    let body: string | undefined = o.raw;
    if (o.body !== undefined) {
      body = JSON.stringify(o.body);
      headers['content-type'] = 'application/json';
    }
    const res = await fetch(`${server.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, headers: res.headers };
  };
  const close = async () => {
    try {
      await server.close();
    } finally {
      if (own) rmSync(data, { recursive: true, force: true });
    }
  };
  return { server, close, url: server.url, adminToken, data, call, admin: (m, p, b) => call(m, p, { token: adminToken, ...(b !== undefined ? { body: b } : {}) }) };
}
