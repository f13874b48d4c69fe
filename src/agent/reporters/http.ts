// The http reporter: posts events in batches to the line's server. The network on a
// line is not always there, so events wait in a bounded queue, batches are retried
// with backoff, and at the end the reporter gives up by a deadline instead of hanging.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { BootlineEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import type { Reporter, Warn } from './reporter.ts';
import { enqueueBounded } from '../bounded-queue.ts';

// ---------------------------------------------------------------------------------
// Pure queue and retry policy

/** Exponential backoff with jitter, so that a line full of devices does not retry in lockstep. */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const d = Math.min(maxMs, baseMs * 2 ** attempt);
  return d / 2 + (d / 2) * random();
}

/** Retry-After as delta-seconds or an HTTP date, in ms; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | string[] | undefined, now: number): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\s*\d+\s*$/.test(v)) return Number(v) * 1000;
  const t = Date.parse(v);
  return Number.isFinite(t) ? Math.max(0, t - now) : undefined;
}

export type PostResult =
  | { kind: 'ok' }
  | { kind: 'retry'; reason: string; retryAfterMs?: number }
  | { kind: 'fatal'; reason: string };

export function classifyResponse(status: number, retryAfter: string | string[] | undefined, body: string, now: number): PostResult {
  if (status >= 200 && status < 300) return { kind: 'ok' };
  const snippet = body.replace(/\s+/g, ' ').trim().slice(0, 200);
  const reason = `server answered ${status}${snippet ? `: ${snippet}` : ''}`;
  if (status === 408 || status === 429 || status >= 500) return { kind: 'retry', reason, retryAfterMs: parseRetryAfter(retryAfter, now) };
  return { kind: 'fatal', reason };
}

/** The URL without user:password, for messages. */
export function redactUrl(url: URL): string {
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  return u.href;
}

// ---------------------------------------------------------------------------------
// I/O

export interface HttpReporterOptions {
  warn: Warn;
  /** First retry delay in ms, doubled per attempt (default 250). */
  backoffMs?: number;
  /** Longest retry delay in ms (default 5000). */
  maxBackoffMs?: number;
  /** Longest Retry-After honoured, in ms (default 30000). */
  maxRetryAfterMs?: number;
  random?: () => number;
}

const BODY_SNIPPET_BYTES = 4096;

export class HttpReporter implements Reporter {
  readonly name: string;
  private readonly url: URL | undefined;
  private readonly warn: Warn;
  private readonly agent: http.Agent | undefined;
  private readonly headers: Record<string, string>;
  private readonly batchSize: number;
  private readonly queueSize: number;
  private readonly retries: number;
  private readonly timeoutMs: number;
  private readonly flushTimeoutMs: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly random: () => number;

  private readonly queue: BootlineEvent[] = [];
  /** The batch being posted (taken off the queue), so close() can count it if it never arrives. */
  private sending: BootlineEvent[] = [];
  private pumping: Promise<void> | undefined;
  private inflight: http.ClientRequest | undefined;
  private wake: (() => void) | undefined;
  /** Time (ms since epoch) at which delivery stops; Infinity until close(). */
  private stopAt = Infinity;
  private closed = false;
  private dropped = 0;
  private lost = 0;
  private lastError: string | undefined;

  constructor(cfg: ReporterConfigOf<'http'>, opts: HttpReporterOptions) {
    this.warn = opts.warn;
    this.batchSize = cfg.batchSize ?? 100;
    this.queueSize = cfg.queueSize ?? 1000;
    this.retries = cfg.retries ?? 5;
    this.timeoutMs = (cfg.timeout ?? 10) * 1000;
    this.flushTimeoutMs = (cfg.flushTimeout ?? 15) * 1000;
    this.backoffMs = opts.backoffMs ?? 250;
    this.maxBackoffMs = opts.maxBackoffMs ?? 5000;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? 30_000;
    this.random = opts.random ?? Math.random;

    let url: URL | undefined;
    let problem: string | undefined;
    try {
      url = new URL(cfg.url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') problem = `unsupported protocol ${url.protocol}`;
    } catch (err) {
      problem = (err as Error).message;
    }
    this.url = problem ? undefined : url;
    this.name = `http(${this.url ? redactUrl(this.url) : cfg.url})`;
    if (problem) this.warn(`${this.name}: not a usable http(s) URL (${problem}); no events are sent`);

    this.headers = { 'user-agent': 'bootline-agent', ...cfg.headers, 'content-type': 'application/json' };
    if (cfg.token) this.headers.authorization = `Bearer ${cfg.token}`;

    if (url?.protocol === 'https:') {
      let ca: Buffer | undefined;
      if (cfg.ca) {
        try {
          ca = readFileSync(cfg.ca);
        } catch (err) {
          this.warn(`${this.name}: cannot read CA bundle ${cfg.ca} (${(err as NodeJS.ErrnoException).code ?? String(err)}); using the system CAs`);
        }
      }
      this.agent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
    } else if (url) {
      this.agent = new http.Agent({ keepAlive: true });
    }
  }

  handle(event: BootlineEvent): void {
    if (!this.url || this.closed) return;
    const dropped = enqueueBounded(this.queue, event, this.queueSize);
    if (dropped > 0) {
      if (this.dropped === 0) {
        this.warn(`${this.name}: more than ${this.queueSize} events waiting (${this.lastError ?? 'server slow'}); dropping old progress and log events`);
      }
      this.dropped += dropped;
    }
    this.kick();
  }

  async close(deadline: number): Promise<void> {
    if (!this.url) return;
    this.closed = true;
    this.stopAt = Math.min(this.stopAt, deadline, Date.now() + this.flushTimeoutMs);
    // Interrupt a backoff sleep so it re-reads stopAt, and cut a request still open at stopAt.
    this.wake?.();
    const stopper = setTimeout(() => this.inflight?.destroy(new Error('flush deadline reached')), Math.max(0, this.stopAt - Date.now()));
    this.kick();
    while (this.pumping) await this.pumping;
    clearTimeout(stopper);
    const undelivered = this.queue.length + this.sending.length;
    if (undelivered > 0) {
      this.warn(`${this.name}: ${undelivered} events not delivered by the deadline${this.lastError ? ` (last error: ${this.lastError})` : ''}`);
    }
    if (this.dropped > 0 || this.lost > 0) {
      this.warn(`${this.name}: ${this.dropped} events dropped because the queue was full, ${this.lost} given up after retries or refused`);
    }
    this.agent?.destroy();
  }

  private stopped(): boolean {
    return Date.now() >= this.stopAt;
  }

  private kick(): void {
    if (this.pumping || this.queue.length === 0 || this.stopped()) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = undefined;
      // Events that arrived while the last batch settled.
      this.kick();
    });
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped()) {
      this.sending = this.queue.splice(0, this.batchSize);
      const delivered = await this.send(this.sending);
      if (!delivered) return;
      this.sending = [];
    }
  }

  /** Posts one batch with retries; false only when stopped before it was settled. */
  private async send(batch: BootlineEvent[]): Promise<boolean> {
    const body = Buffer.from(JSON.stringify({ events: batch }));
    for (let attempt = 0; ; attempt++) {
      const r = await this.post(body);
      if (r.kind === 'ok') {
        this.lastError = undefined;
        return true;
      }
      if (r.kind === 'fatal') {
        this.lost += batch.length;
        this.warn(`${this.name}: ${r.reason}; dropped ${batch.length} events (not retried: fix the request or the server)`);
        return true;
      }
      this.lastError = r.reason;
      if (this.stopped()) return false;
      if (attempt >= this.retries) {
        this.lost += batch.length;
        this.warn(`${this.name}: giving up on ${batch.length} events after ${attempt + 1} attempts: ${r.reason}`);
        return true;
      }
      const delay =
        r.retryAfterMs !== undefined
          ? Math.min(r.retryAfterMs, this.maxRetryAfterMs)
          : backoffDelay(attempt, this.backoffMs, this.maxBackoffMs, this.random);
      await this.sleepUntil(Date.now() + delay);
      if (this.stopped()) return false;
    }
  }

  private async sleepUntil(t: number): Promise<void> {
    for (;;) {
      const ms = Math.min(t, this.stopAt) - Date.now();
      if (ms <= 0) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.wake = undefined;
          resolve();
        }, ms);
        this.wake = () => {
          clearTimeout(timer);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }

  private post(body: Buffer): Promise<PostResult> {
    const url = this.url as URL;
    const request = url.protocol === 'https:' ? https.request : http.request;
    return new Promise<PostResult>((resolve) => {
      let settled = false;
      const limit = Math.max(1, Math.min(this.timeoutMs, this.stopAt - Date.now()));
      const done = (r: PostResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.inflight = undefined;
        resolve(r);
      };
      let req: http.ClientRequest;
      try {
        req = request(
          url,
          { method: 'POST', agent: this.agent, headers: { ...this.headers, 'content-length': String(body.length) } },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (c: Buffer) => {
              // Keep reading past the snippet so the keep-alive socket can be reused.
              if (size < BODY_SNIPPET_BYTES) chunks.push(c);
              size += c.length;
            });
            res.on('end', () => {
              const text = Buffer.concat(chunks).subarray(0, BODY_SNIPPET_BYTES).toString('utf8');
              done(classifyResponse(res.statusCode ?? 0, res.headers['retry-after'], text, Date.now()));
            });
            res.on('error', (err) => done({ kind: 'retry', reason: describe(err) }));
            res.on('close', () => done({ kind: 'retry', reason: 'connection closed during the response' }));
          },
        );
      } catch (err) {
        // e.g. a header value the http module refuses: no retry can fix it.
        resolve({ kind: 'fatal', reason: describe(err) });
        return;
      }
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${(limit / 1000).toFixed(1)} s`)), limit);
      req.on('error', (err) => done({ kind: 'retry', reason: describe(err) }));
      this.inflight = req;
      req.end(body);
    });
  }
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (e.code && e.message && !e.message.includes(e.code)) return `${e.code}: ${e.message}`;
  return e.message ?? String(err);
}
