// The agent's client of the server's device API (src/api/device.ts): enrollment, the
// plan, events, last run, report, log, inventory, recovery-key escrow. A line's server may
// be restarting or the network still coming up when a device boots, so every call is
// retried with backoff and jitter on connection errors, 5xx, 408 and 429 (honouring
// Retry-After), but not on other 4xx: no retry changes the answer to a bad request or credential.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Value } from '@sinclair/typebox/value';
import type { TSchema, Static } from '@sinclair/typebox';
import {
  API_PREFIX,
  EnrollResponse,
  EventBatchResult,
  LastRunResponse,
  PlanResponse,
  type EnrollRequest,
  type EventBatch,
} from '../api/device.ts';
import type { RunReport } from '../events.ts';
import { recoveryKeyEscrowProblems, type RecoveryKeyEscrow } from '../api/recovery-key.ts';
import { backoffDelay, parseRetryAfter, redactUrl } from './reporters/http.ts';
import { sleep } from './timing.ts';

export interface ServerClientOptions {
  /** The server's base URL (http or https; may have a path prefix). */
  url: string;
  /** The device credential, sent as `Authorization: Bearer`. */
  credential?: string;
  /** PEM CA bundle (file path or contents) for an https server with its own CA. */
  ca?: string | Buffer;
  /** Milliseconds per request (default 15000). */
  timeoutMs?: number;
  /** Further attempts after the first (default 6), while the server has never answered. */
  retries?: number;
  /**
   * Once the server has answered (in this process, or `reached` is set: the device holds its
   * credential), a call is retried for this long however many attempts that takes (default
   * 60000): the server exists and is probably restarting, and giving up would cost the device.
   */
  outageMs?: number;
  /** The server answered this device before (it holds a credential from it). */
  reached?: boolean;
  /** First retry delay in ms, doubled per attempt (default 500). */
  backoffMs?: number;
  /** Longest retry delay in ms (default 8000). */
  maxBackoffMs?: number;
  /** Longest Retry-After honoured, in ms (default 30000). */
  maxRetryAfterMs?: number;
  random?: () => number;
  /** Told about each retry (what failed, how long until the next attempt). */
  onRetry?: (message: string) => void;
  signal?: AbortSignal;
}

/** The server answered, and not with success: status, its error code and message. */
export class ServerError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly serverMessage: string,
    readonly what: string,
  ) {
    super(`${what}: the server answered ${status}${code ? ` ${code}` : ''}${serverMessage ? `: ${serverMessage}` : ''}`);
    this.name = 'ServerError';
  }
}

/** No answer from the server (or only 5xx/429) after every attempt. */
export class ServerUnreachableError extends Error {
  constructor(
    readonly attempts: number,
    readonly lastError: string,
    readonly what: string,
  ) {
    super(`${what}: no usable answer after ${attempts} attempt${attempts === 1 ? '' : 's'} (last: ${lastError})`);
    this.name = 'ServerUnreachableError';
  }
}

export type Attempt =
  | { kind: 'ok'; status: number; body: string }
  | { kind: 'retry'; reason: string; retryAfterMs?: number; status?: number; code?: string; message?: string }
  | { kind: 'fatal'; status: number; code: string; message: string };

interface Call {
  method: 'GET' | 'POST' | 'PUT';
  path: string;
  what: string;
  body?: Buffer;
  contentType?: string;
  /** Send the credential (every call but enrollment). */
  auth: boolean;
}

const MAX_BODY = 16 * 1024 * 1024;

export class ServerClient {
  readonly url: URL;
  /** The base URL without user:password, for messages. */
  readonly shown: string;
  credential: string | undefined;
  private readonly agent: http.Agent;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly outageMs: number;
  /** The server has answered (any status): a later failure is an outage, not a wrong address. */
  reached: boolean;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly random: () => number;
  private readonly onRetry: ((m: string) => void) | undefined;
  private readonly signal: AbortSignal | undefined;

  constructor(o: ServerClientOptions) {
    const url = new URL(o.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`${o.url}: the server URL must be http:// or https://`);
    this.url = url;
    this.shown = redactUrl(url).replace(/\/+$/, '');
    this.credential = o.credential;
    this.timeoutMs = o.timeoutMs ?? 15_000;
    this.retries = o.retries ?? 6;
    this.outageMs = o.outageMs ?? 60_000;
    this.reached = o.reached ?? false;
    this.backoffMs = o.backoffMs ?? 500;
    this.maxBackoffMs = o.maxBackoffMs ?? 8000;
    this.maxRetryAfterMs = o.maxRetryAfterMs ?? 30_000;
    this.random = o.random ?? Math.random;
    this.onRetry = o.onRetry;
    this.signal = o.signal;
    if (url.protocol === 'https:') {
      const ca = typeof o.ca === 'string' && !o.ca.includes('-----BEGIN') ? readFileSync(o.ca) : o.ca;
      this.agent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
    } else {
      this.agent = new http.Agent({ keepAlive: true });
    }
  }

  /** `<server>/api/v1<path>`, keeping a path prefix the server URL has. */
  endpoint(path: string): string {
    const u = new URL(this.url.href);
    u.pathname = `${u.pathname.replace(/\/+$/, '')}${API_PREFIX}${path}`;
    u.search = '';
    u.hash = '';
    return u.href;
  }

  async enroll(req: EnrollRequest): Promise<EnrollResponse> {
    return this.json(EnrollResponse, { method: 'POST', path: '/enroll', what: 'enrollment', auth: false, body: jsonBody(req) });
  }

  async plan(): Promise<PlanResponse> {
    return this.json(PlanResponse, { method: 'GET', path: '/device/plan', what: 'fetching the plan', auth: true });
  }

  async postEvents(batch: EventBatch): Promise<EventBatchResult> {
    return this.json(EventBatchResult, { method: 'POST', path: '/device/events', what: 'posting events', auth: true, body: jsonBody(batch) });
  }

  async lastRun(): Promise<LastRunResponse> {
    return this.json(LastRunResponse, { method: 'GET', path: '/device/last-run', what: 'asking for the last run', auth: true });
  }

  async putReport(report: RunReport): Promise<void> {
    await this.call({ method: 'PUT', path: `/device/runs/${encodeURIComponent(report.runId)}/report`, what: 'uploading the report', auth: true, body: jsonBody(report) });
  }

  async putLog(runId: string, text: string | Buffer): Promise<void> {
    const body = typeof text === 'string' ? Buffer.from(text) : text;
    await this.call({ method: 'PUT', path: `/device/runs/${encodeURIComponent(runId)}/log`, what: 'uploading the log', auth: true, body, contentType: 'text/plain; charset=utf-8' });
  }

  async putInventory(doc: Record<string, unknown>): Promise<void> {
    await this.call({ method: 'PUT', path: '/device/inventory', what: 'uploading the inventory', auth: true, body: jsonBody(doc) });
  }

  async putRecoveryKey(escrow: RecoveryKeyEscrow): Promise<void> {
    const what = `escrowing the recovery key of volume ${escrow.volumeUuid}`;
    // Checked here too: a malformed key is the task's bug, and no retry would fix it.
    const problems = recoveryKeyEscrowProblems(escrow);
    if (problems.length > 0) throw new ServerError(0, 'invalid-recovery-key-escrow', `not sent: ${problems.join('; ')}`, what);
    await this.call({ method: 'PUT', path: `/device/recovery-keys/${encodeURIComponent(escrow.volumeUuid)}`, what, auth: true, body: jsonBody(escrow) });
  }

  close(): void {
    this.agent.destroy();
  }

  private async json<S extends TSchema>(schema: S, c: Call): Promise<Static<S>> {
    const text = await this.call(c);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new ServerError(0, 'bad-response', `not JSON: ${snippet(text)}`, c.what);
    }
    if (!Value.Check(schema, parsed)) {
      const first = [...Value.Errors(schema, parsed)][0];
      throw new ServerError(0, 'bad-response', `unexpected answer${first ? ` (${first.path || '/'}: ${first.message})` : ''} — is ${this.shown} a bootline server of this version?`, c.what);
    }
    return parsed;
  }

  /** One call with retries; the response body on success. */
  private async call(c: Call): Promise<string> {
    let last = '';
    let firstFailure: number | undefined;
    for (let attempt = 0; ; attempt++) {
      if (this.signal?.aborted) throw new ServerUnreachableError(attempt, 'stopped', c.what);
      const r = await this.attempt(c);
      // A 5xx may come from a proxy in front of a server that never existed; a 2xx or 4xx is the server's own.
      if (r.kind === 'ok' || r.kind === 'fatal') this.reached = true;
      if (r.kind === 'ok') return r.body;
      if (r.kind === 'fatal') throw new ServerError(r.status, r.code, r.message, c.what);
      last = r.reason;
      firstFailure ??= Date.now();
      const riding = this.reached && Date.now() - firstFailure < this.outageMs;
      if (attempt >= this.retries && !riding) {
        if (r.status !== undefined) throw new ServerError(r.status, r.code ?? '', r.message ?? r.reason, c.what);
        throw new ServerUnreachableError(attempt + 1, last, c.what);
      }
      const delay =
        r.retryAfterMs !== undefined ? Math.min(r.retryAfterMs, this.maxRetryAfterMs) : backoffDelay(attempt, this.backoffMs, this.maxBackoffMs, this.random);
      const of = this.reached ? `, for up to ${Math.round(this.outageMs / 1000)} s: the server answered before` : ` of ${this.retries + 1}`;
      this.onRetry?.(`${c.what} at ${this.shown}: ${r.reason} — retrying in ${(delay / 1000).toFixed(1)} s (attempt ${attempt + 2}${of})`);
      await sleep(delay, this.signal);
    }
  }

  private attempt(c: Call): Promise<Attempt> {
    const url = this.endpoint(c.path);
    const request = this.url.protocol === 'https:' ? https.request : http.request;
    const headers: Record<string, string> = { 'user-agent': 'bootline-agent', accept: 'application/json' };
    if (c.auth && this.credential) headers.authorization = `Bearer ${this.credential}`;
    if (c.body) {
      headers['content-type'] = c.contentType ?? 'application/json';
      headers['content-length'] = String(c.body.length);
    }
    return new Promise<Attempt>((resolve) => {
      let settled = false;
      const done = (a: Attempt) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(a);
      };
      let req: http.ClientRequest;
      try {
        req = request(url, { method: c.method, agent: this.agent, headers }, (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size <= MAX_BODY) chunks.push(d);
          });
          res.on('end', () => done(classify(res.statusCode ?? 0, res.headers['retry-after'], Buffer.concat(chunks).toString('utf8'))));
          res.on('error', (e) => done({ kind: 'retry', reason: describe(e) }));
          res.on('close', () => done({ kind: 'retry', reason: 'connection closed during the response' }));
        });
      } catch (e) {
        resolve({ kind: 'fatal', status: 0, code: 'bad-request', message: describe(e) });
        return;
      }
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${(this.timeoutMs / 1000).toFixed(1)} s`)), this.timeoutMs);
      req.on('error', (e) => done({ kind: 'retry', reason: describe(e) }));
      req.end(c.body);
    });
  }
}

/** The server's error body ({error, message}) or a snippet of whatever it sent. */
function errorOf(body: string): { code: string; message: string } {
  try {
    const j = JSON.parse(body) as { error?: unknown; message?: unknown };
    if (typeof j.error === 'string' || typeof j.message === 'string') {
      return { code: typeof j.error === 'string' ? j.error : '', message: typeof j.message === 'string' ? j.message : '' };
    }
  } catch {
    // not JSON: a proxy's error page, say
  }
  return { code: '', message: snippet(body) };
}

export function classify(status: number, retryAfter: string | string[] | undefined, body: string, now = Date.now()): Attempt {
  if (status >= 200 && status < 300) return { kind: 'ok', status, body };
  const { code, message } = errorOf(body);
  if (status === 408 || status === 429 || status >= 500) {
    const retryAfterMs = parseRetryAfter(retryAfter, now);
    return { kind: 'retry', reason: `HTTP ${status}${message ? ` ${message}` : ''}`, status, code, message, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
  }
  return { kind: 'fatal', status, code, message };
}

function jsonBody(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

const snippet = (s: string) => s.replace(/\s+/g, ' ').trim().slice(0, 200);

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code && e.message && !e.message.includes(e.code)) return `${e.code}: ${e.message}`;
  return e.message ?? String(err);
}
