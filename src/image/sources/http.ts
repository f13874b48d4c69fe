// HTTP(S) image source that resumes by itself: a dropped or stalled connection is
// re-requested with `Range: bytes=<reached>-` (validated with If-Range), so a flaky line
// network costs seconds, not a restart from byte 0. S3 reuses all of this via `sign`.
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import type { Source, SourceOptions } from '../types.ts';
import { PooledDownload } from './pooled-download.ts';

export const DEFAULT_RETRIES = 8;
export const DEFAULT_RETRY_DELAY_MS = 500;
export const DEFAULT_STALL_TIMEOUT_MS = 30_000;
const MAX_RETRY_DELAY_MS = 10_000;
/**
 * Bytes received since the last failure after which the retry budget is full again. Small: a
 * network that cuts often but lets the download move on must not exhaust it (at 1 MiB, 20 random
 * cuts in a 13 MB download gave up after 8 of them, each less than 1 MiB after the previous);
 * the budget is for a server that delivers nothing at all.
 */
const PROGRESS_RESETS_RETRIES = 64 * 1024;
const MAX_REDIRECTS = 5;
/** The PassThrough's buffer: bounds memory while the consumer (a disk) is slower than the net. */
const STREAM_BUFFER = 1024 * 1024;

/** A request as the sign hook sees it, just before it is sent. */
export interface HttpRequestInit {
  method: 'GET' | 'HEAD';
  url: URL;
  headers: Record<string, string>;
}

/** Returns the headers to send (e.g. with an AWS SigV4 Authorization); called for every request. */
export type SignHook = (req: HttpRequestInit) => Record<string, string>;

export interface HttpSourceInit {
  url: string | URL;
  options?: SourceOptions;
  /** Authenticates each request (S3); basic auth and the bearer token still apply when set. */
  sign?: SignHook;
  /** Overrides the redacted URL in messages (e.g. `s3://bucket/key`). */
  display?: string;
}

/** An error that retrying cannot fix (4xx, changed image, no Range support, bad certificate). */
export class PermanentError extends Error {
  override name = 'PermanentError';
}

const SECRET_PARAM = /signature|credential|token|secret|password|key/i;

/** The URL without password and signed query values, for messages. */
export function redactUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return String(url).replace(/\/\/([^/@:]*):[^/@]*@/, '//$1:***@');
  }
  if (u.password) u.password = '***';
  for (const name of [...u.searchParams.keys()]) {
    if (SECRET_PARAM.test(name)) u.searchParams.set(name, '***');
  }
  // URLSearchParams re-encodes '*' as %2A; keep messages readable.
  return u.toString().replaceAll('%2A%2A%2A', '***');
}

export function formatMiB(bytes: number): string {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

/** Exponential backoff with jitter, shared by the network sources. */
export class Retrier {
  private attempt = 0;
  private sinceFailure = 0;
  readonly retries: number;
  private readonly baseDelay: number;

  constructor(
    options: SourceOptions,
    private readonly display: string,
  ) {
    this.retries = options.retries ?? DEFAULT_RETRIES;
    this.baseDelay = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.onRetry = options.onRetry;
  }

  private readonly onRetry: ((message: string) => void) | undefined;

  /** Counts delivered bytes; enough progress since the last failure restores the budget. */
  progress(bytes: number): void {
    this.sinceFailure += bytes;
    if (this.sinceFailure >= PROGRESS_RESETS_RETRIES) this.attempt = 0;
  }

  /**
   * Tells the user and waits before the next attempt; throws when the budget is spent.
   * `situation` says what happened ("connection lost at 1.3 MiB"), `action` what comes next.
   */
  async wait(cause: Error, situation: string, action: string, signal: AbortSignal): Promise<void> {
    this.sinceFailure = 0;
    this.attempt++;
    if (this.attempt > this.retries) {
      throw new Error(`${this.display}: ${situation}; gave up after ${this.retries} retries`, { cause });
    }
    this.onRetry?.(`${this.display}: ${situation}; ${action} (attempt ${this.attempt}/${this.retries})`);
    const exp = Math.min(this.baseDelay * 2 ** (this.attempt - 1), MAX_RETRY_DELAY_MS);
    // Jitter spreads the reconnects of a whole line of devices after a switch reboots.
    await sleep(Math.round(exp * (0.75 + Math.random() * 0.25)), undefined, { signal });
  }
}

/** The image's identity on the server; a change mid-download must not be spliced. */
export interface Validator {
  etag?: string;
  lastModified?: string;
}

/** Response headers as node's client or the fast path (http1-body.ts) give them. */
export type AnswerHeaders = Record<string, string | string[] | undefined>;

function one(v: string | string[] | undefined): string | undefined {
  return typeof v === 'string' ? v : v?.[0];
}

function validatorOf(res: { headers: AnswerHeaders }): Validator {
  const v: Validator = {};
  const etag = one(res.headers.etag);
  const lm = one(res.headers['last-modified']);
  if (etag) v.etag = etag;
  if (lm) v.lastModified = lm;
  return v;
}

/** The If-Range value: a strong ETag, else Last-Modified (weak ETags are not allowed there). */
export function ifRangeOf(v: Validator): string | undefined {
  if (v.etag && !v.etag.startsWith('W/')) return v.etag;
  return v.lastModified;
}

/** Describes how `now` differs from `was`, or undefined if it is the same image. */
function changeOf(was: Validator, now: Validator): string | undefined {
  if (was.etag && now.etag && was.etag !== now.etag) return `ETag was ${was.etag}, now ${now.etag}`;
  if (was.etag && now.etag) return undefined;
  if (was.lastModified && now.lastModified && was.lastModified !== now.lastModified) {
    return `Last-Modified was ${was.lastModified}, now ${now.lastModified}`;
  }
  return undefined;
}

export function changedError(display: string, change: string): PermanentError {
  return new PermanentError(`${display}: the image changed on the server while downloading (${change}); start again`);
}

interface ContentRange {
  start: number;
  end: number;
  total: number | undefined;
}

function parseContentRange(value: string | undefined): ContentRange | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value?.trim() ?? '');
  if (!m) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

export function abortErrorOf(signal: AbortSignal): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error) return r;
  const e = new Error('the download was aborted');
  e.name = 'AbortError';
  return e;
}

/** Certificate problems and DNS typos will not get better by retrying. */
export function describeNetworkError(err: NodeJS.ErrnoException, display: string): Error {
  const code = err.code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ERR_TLS/.test(code)) {
    return new PermanentError(
      `${display}: TLS certificate not trusted (${err.message}); pass the server's CA bundle (the \`ca\` option)`,
      { cause: err },
    );
  }
  if (code === 'ENOTFOUND') return new PermanentError(`${display}: host not found (${err.message})`, { cause: err });
  return err;
}

/** Reads a little of an error body: S3 and most servers say what went wrong there. */
async function errorDetail(res: IncomingMessage): Promise<string> {
  let body = '';
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      body += chunk.toString('utf8');
      if (body.length > 2048) break;
    }
  } catch {
    // the detail is a courtesy; the status says enough
  }
  res.destroy();
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
  if (code) return ` (${code}${message ? `: ${message}` : ''})`;
  const text = body.trim().split('\n')[0]?.slice(0, 200);
  return text && !/^<!DOCTYPE|^<html/i.test(text) ? ` (${text})` : '';
}

export async function statusError(res: IncomingMessage, url: URL): Promise<Error> {
  const status = res.statusCode ?? 0;
  const detail = await errorDetail(res);
  const msg = `HTTP ${status} ${res.statusMessage ?? ''}`.trimEnd() + `${detail} from ${redactUrl(url)}`;
  // 5xx, timeouts and rate limits pass; anything else (404, 403...) will not change by itself.
  return status >= 500 || status === 408 || status === 429 ? new Error(msg) : new PermanentError(msg);
}

export class HttpSource implements Source {
  readonly display: string;
  private readonly origin: string;
  private readonly original: URL;
  /** Where the last redirect led; resumes go straight there. */
  private current: URL;
  private readonly auth: string | undefined;
  /** @internal */ readonly options: SourceOptions;
  private readonly sign: SignHook | undefined;
  private readonly httpAgent = new http.Agent({ keepAlive: true });
  private readonly httpsAgent: https.Agent;
  private validator: Validator | undefined;
  /** @internal False once the server showed it ignores Range (or says `Accept-Ranges: none`). */
  rangeSupport: boolean | undefined;
  private probed: Promise<{ size: number | undefined; status: number }> | undefined;

  constructor(init: HttpSourceInit) {
    const url = new URL(init.url);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`not an http(s) URL: ${redactUrl(url)}`);
    }
    this.options = init.options ?? {};
    this.display = init.display ?? redactUrl(url);
    this.sign = init.sign;
    if (this.options.token) {
      this.auth = `Bearer ${this.options.token}`;
    } else if (url.username || url.password) {
      const user = decodeURIComponent(url.username);
      const pass = decodeURIComponent(url.password);
      this.auth = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    }
    url.username = '';
    url.password = '';
    url.hash = '';
    this.original = url;
    this.current = url;
    this.origin = url.origin;
    let ca: string[] | undefined;
    if (this.options.ca) {
      let pem: string;
      try {
        pem = readFileSync(this.options.ca, 'utf8');
      } catch (e) {
        throw new Error(`cannot read the CA bundle ${this.options.ca}: ${(e as Error).message}`, { cause: e });
      }
      // Added to the public roots, so a redirect to a public CDN still verifies.
      ca = [...rootCertificates, pem];
    }
    this.httpsAgent = new https.Agent({ keepAlive: true, ...(ca ? { ca } : {}) });
  }

  /** True unless the server showed it cannot serve ranges. */
  get seekable(): boolean {
    return this.rangeSupport !== false;
  }

  async size(): Promise<number | undefined> {
    return (await this.probe()).size;
  }

  /** True when the URL answers 2xx (used to look for a bmap next to the image). */
  async exists(): Promise<boolean> {
    try {
      const { status } = await this.probe();
      return status >= 200 && status < 300;
    } catch (e) {
      if (e instanceof PermanentError && /^HTTP 4\d\d/.test(e.message)) return false;
      throw e;
    }
  }

  async open(offset: number, signal?: AbortSignal): Promise<Readable> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
    signal?.throwIfAborted();
    const download = new Download(this, offset, signal);
    return download.start();
  }

  /** Closes idle keep-alive sockets. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  // --- used by Download ---

  /** @internal Records the image's identity, or reports how it changed. */
  check(res: { headers: AnswerHeaders }): string | undefined {
    const now = validatorOf(res);
    if (!this.validator) {
      if (now.etag || now.lastModified) this.validator = now;
      return undefined;
    }
    return changeOf(this.validator, now);
  }

  /** @internal */ get knownValidator(): Validator | undefined {
    return this.validator;
  }

  /** @internal */ noteRanges(res: { headers: AnswerHeaders }, answeredRange: boolean): void {
    if (answeredRange) this.rangeSupport = true;
    else if (one(res.headers['accept-ranges']) === 'none') this.rangeSupport = false;
  }

  /** A GET of one byte: size, identity and Range support in one request (HEAD breaks presigned URLs). */
  private probe(): Promise<{ size: number | undefined; status: number }> {
    this.probed ??= (async () => {
      const retrier = new Retrier(this.options, this.display);
      const never = new AbortController().signal;
      for (;;) {
        try {
          const { res } = await this.request('GET', { range: 'bytes=0-0' }, never);
          const status = res.statusCode ?? 0;
          if (status === 206) {
            res.resume();
            const change = this.check(res);
            if (change) throw changedError(this.display, change);
            this.rangeSupport = true;
            return { size: parseContentRange(res.headers['content-range'])?.total, status };
          }
          if (status === 200) {
            res.destroy(); // the whole image is coming; one header was all we wanted
            this.check(res);
            this.rangeSupport = false;
            const len = res.headers['content-length'];
            return { size: len === undefined ? undefined : Number(len), status };
          }
          if (status === 416) {
            res.resume();
            const total = /\/(\d+)/.exec(res.headers['content-range'] ?? '')?.[1];
            return { size: total === undefined ? undefined : Number(total), status: 200 };
          }
          throw await statusError(res, this.current);
        } catch (e) {
          if (e instanceof PermanentError) throw e;
          await retrier.wait(e as Error, `cannot reach the server (${(e as Error).message})`, 'retrying', never);
        }
      }
    })();
    // A failed probe may succeed later (the server came back); do not cache failures.
    this.probed.catch(() => (this.probed = undefined));
    return this.probed;
  }

  /** @internal Sends a request to where the last redirect led, else to the URL given. */
  async request(method: 'GET' | 'HEAD', extra: Record<string, string>, signal: AbortSignal): Promise<{ res: IncomingMessage; url: URL }> {
    if (this.current !== this.original) {
      const r = await this.follow(method, this.current, extra, signal).catch(() => undefined);
      if (r && (r.res.statusCode ?? 0) < 400) return r;
      r?.res.resume();
      // The remembered target (e.g. an expired signed URL) failed: ask the original URL again.
      this.current = this.original;
    }
    return this.follow(method, this.original, extra, signal);
  }

  private async follow(
    method: 'GET' | 'HEAD',
    start: URL,
    extra: Record<string, string>,
    signal: AbortSignal,
  ): Promise<{ res: IncomingMessage; url: URL }> {
    let url = start;
    for (let hop = 0; ; hop++) {
      const res = await this.send(method, url, extra, signal);
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(status) && location) {
        res.resume();
        const next = new URL(location, url);
        if (hop >= MAX_REDIRECTS) {
          throw new PermanentError(`${this.display}: more than ${MAX_REDIRECTS} redirects (last to ${redactUrl(next)})`);
        }
        if (next.protocol !== 'http:' && next.protocol !== 'https:') {
          throw new PermanentError(`${this.display}: redirected to an unsupported URL ${redactUrl(next)}`);
        }
        url = next;
        continue;
      }
      if (status < 300) this.current = url;
      return { res, url };
    }
  }

  /** @internal Where the next request goes: where the last redirect led, else the URL given. */
  get target(): URL {
    return this.current;
  }

  /** @internal True when `target` is where a redirect led, not the URL given. */
  get redirected(): boolean {
    return this.current !== this.original;
  }

  /** @internal The headers for a request to `url` (credentials only to the image's own origin). */
  headersFor(method: 'GET' | 'HEAD', url: URL, extra: Record<string, string>): Record<string, string> {
    const sameOrigin = url.origin === this.origin;
    const headers: Record<string, string> = {
      // Ranges and sizes must refer to the stored bytes, not a transfer encoding of them.
      'accept-encoding': 'identity',
      'user-agent': 'bootline',
    };
    for (const [k, v] of Object.entries(this.options.headers ?? {})) {
      // Credentials never follow a redirect to another host (curl does the same).
      if (!sameOrigin && /^(authorization|cookie|proxy-authorization)$/i.test(k)) continue;
      headers[k.toLowerCase()] = v;
    }
    if (this.auth && sameOrigin) headers.authorization = this.auth;
    Object.assign(headers, extra);
    return this.sign ? this.sign({ method, url, headers }) : headers;
  }

  /**
   * The bytes from `offset` as views of two reused 1 MiB buffers, each valid until the next is
   * asked for. Plain http: bodies with a Content-Length are read without node's client (which
   * allocates per socket read); redirects, chunked bodies, errors and https take the client.
   * Resumes, retries and checks are those of `open`.
   */
  async openPooled(offset: number, signal?: AbortSignal, until?: number): Promise<AsyncGenerator<Buffer>> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
    if (until !== undefined && !(Number.isSafeInteger(until) && until > offset)) throw new RangeError(`invalid end ${until} for offset ${offset}`);
    signal?.throwIfAborted();
    return new PooledDownload(this, offset, signal, until).start();
  }

  private send(
    method: 'GET' | 'HEAD',
    url: URL,
    extra: Record<string, string>,
    signal: AbortSignal,
  ): Promise<IncomingMessage> {
    const stallMs = this.options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const isHttps = url.protocol === 'https:';
      const req = (isHttps ? https : http).request(url, {
        method,
        headers: this.headersFor(method, url, extra),
        agent: isHttps ? this.httpsAgent : this.httpAgent,
      });
      const abort = (err: Error): void => {
        req.destroy(err);
      };
      const onAbort = (): void => abort(abortErrorOf(signal));
      // Not the socket's idle timeout: that would also fire while the disk holds us back.
      const timer = setTimeout(() => abort(new Error(`no response for ${stallMs / 1000} s`)), stallMs);
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('response', (res) => {
        done();
        resolve(res);
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        done();
        reject(signal.aborted ? abortErrorOf(signal) : describeNetworkError(err, this.display));
      });
      req.end();
    });
  }
}

/** One `open()`: a PassThrough fed by as many HTTP responses as it takes. */
class Download {
  private readonly out = new PassThrough({ highWaterMark: STREAM_BUFFER });
  private readonly ac = new AbortController();
  private readonly retrier: Retrier;
  private readonly stallMs: number;
  private reached: number;
  private end: number | undefined;
  /** Bumped per response, so late events from a dropped one are ignored. */
  private generation = 0;
  private response: IncomingMessage | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private finished = false;
  /** Set once `open()` returned the stream: only then may it carry an error. */
  private started = false;
  private readonly onExternalAbort = (): void => this.cancel(abortErrorOf(this.signal!));

  constructor(
    private readonly source: HttpSource,
    offset: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.reached = offset;
    this.retrier = new Retrier(source.options, source.display);
    this.stallMs = source.options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  }

  async start(): Promise<Readable> {
    this.signal?.addEventListener('abort', this.onExternalAbort, { once: true });
    // The consumer going away (destroy) ends the download too.
    this.out.once('close', () => this.cancel(undefined));
    try {
      await this.connect(undefined);
    } catch (e) {
      this.cancel(undefined);
      throw e;
    }
    this.started = true;
    return this.out;
  }

  private cancel(err: Error | undefined): void {
    this.signal?.removeEventListener('abort', this.onExternalAbort);
    this.clearStall();
    this.generation++;
    if (!this.ac.signal.aborted) this.ac.abort(err);
    this.response?.destroy();
    this.response = undefined;
    if (!this.finished && !this.out.destroyed) this.out.destroy(this.started ? err : undefined);
  }

  /** Requests from `reached` until a response is accepted; `cause` is the failure that led here. */
  private async connect(cause: Error | undefined): Promise<void> {
    for (;;) {
      if (cause) {
        if (this.generation === 0) {
          await this.retrier.wait(cause, `cannot reach the server (${cause.message})`, 'retrying', this.ac.signal);
        } else {
          await this.retrier.wait(cause, `${cause.message} at ${formatMiB(this.reached)}`, 'resuming', this.ac.signal);
        }
      }
      try {
        const headers: Record<string, string> = {};
        const known = this.source.knownValidator;
        if (this.reached > 0) {
          headers.range = `bytes=${this.reached}-`;
          const ifRange = known && ifRangeOf(known);
          if (ifRange) headers['if-range'] = ifRange;
        }
        const { res, url } = await this.source.request('GET', headers, this.ac.signal);
        await this.accept(res, url);
        return;
      } catch (e) {
        if (this.ac.signal.aborted) throw abortErrorOf(this.ac.signal);
        if (e instanceof PermanentError) throw e;
        cause = e as Error;
      }
    }
  }

  private async accept(res: IncomingMessage, url: URL): Promise<void> {
    let verdict: Verdict;
    try {
      verdict = judgeAnswer(this.source, res.statusCode ?? 0, res.headers, this.reached, this.end);
    } catch (e) {
      res.destroy();
      throw e;
    }
    if (verdict === 'other') throw await statusError(res, url);
    if (verdict === 'nothing-left') {
      res.resume();
      this.finish();
      return;
    }
    this.end = verdict.end;
    this.pump(res);
  }

  private pump(res: IncomingMessage): void {
    const gen = ++this.generation;
    this.response = res;
    let settled = false;
    const fail = (err: Error): void => {
      if (settled || gen !== this.generation) return;
      settled = true;
      this.clearStall();
      this.response = undefined;
      res.destroy();
      this.dropped(err);
    };
    res.on('data', (chunk: Buffer) => {
      if (gen !== this.generation) return;
      this.reached += chunk.length;
      this.retrier.progress(chunk.length);
      if (this.out.write(chunk)) {
        this.armStall(fail);
      } else {
        // Backpressure: the disk is slower; stop reading (and the stall clock) until it drains.
        this.clearStall();
        res.pause();
        this.out.once('drain', () => {
          if (gen !== this.generation) return;
          res.resume();
          this.armStall(fail);
        });
      }
    });
    res.on('end', () => {
      if (settled || gen !== this.generation) return;
      if (this.end !== undefined && this.reached < this.end) {
        fail(new Error(`connection closed early`));
        return;
      }
      settled = true;
      this.finish();
    });
    res.on('error', (err) => fail(new Error(`connection lost (${err.message})`)));
    res.on('close', () => {
      if (!res.complete) fail(new Error('connection lost'));
    });
    this.armStall(fail);
  }

  private dropped(err: Error): void {
    if (this.ac.signal.aborted) return;
    if (this.source.rangeSupport === false) {
      this.cancel(
        new PermanentError(
          `${this.source.display}: ${err.message} at ${formatMiB(this.reached)} and the server cannot resume (it does not support Range requests)`,
        ),
      );
      return;
    }
    this.connect(err).catch((e: Error) => this.cancel(e));
  }

  private finish(): void {
    this.finished = true;
    this.clearStall();
    this.response = undefined;
    this.signal?.removeEventListener('abort', this.onExternalAbort);
    this.out.end();
  }

  private armStall(fail: (err: Error) => void): void {
    this.clearStall();
    this.stallTimer = setTimeout(() => fail(new Error(`no data for ${this.stallMs / 1000} s`)), this.stallMs);
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }
}

/** How a download takes an answer to a GET from `wanted`: its body up to `end`, nothing left, or not at all ('other'). */
export type Verdict = { end: number | undefined } | 'nothing-left' | 'other';

/**
 * @internal Checks a 200/206 answer against what the download asked for and knows (range start,
 * identity, size); throws a PermanentError for what cannot be spliced. Statuses it does not take
 * are 'other' (the caller reports them).
 */
export function judgeAnswer(source: HttpSource, status: number, headers: AnswerHeaders, wanted: number, knownEnd: number | undefined): Verdict {
  const display = source.display;
  const answer = { headers };
  const contentRange = one(headers['content-range']);
  if (status === 206) {
    const range = parseContentRange(contentRange);
    if (!range || range.start !== wanted) {
      throw new PermanentError(
        `${display}: asked for bytes from ${wanted}, the server sent ${contentRange ?? 'no Content-Range'}; cannot resume safely`,
      );
    }
    const change = source.check(answer);
    if (change) throw changedError(display, change);
    const end = range.total ?? range.end + 1;
    if (knownEnd !== undefined && end !== knownEnd) throw changedError(display, `size was ${knownEnd}, now ${end}`);
    source.noteRanges(answer, true);
    return { end };
  }
  if (status === 200) {
    const change = source.check(answer);
    if (wanted > 0) {
      // Only the If-Range validator can make a Range-capable server send everything.
      if (change) throw changedError(display, change);
      source.rangeSupport = false;
      throw new PermanentError(
        `${display}: the server cannot resume (it answered a Range request with the whole file); ` +
          `download from the start or serve the image from a server with Range support`,
      );
    }
    if (change) throw changedError(display, change);
    const len = one(headers['content-length']);
    source.noteRanges(answer, false);
    return { end: len === undefined ? undefined : Number(len) };
  }
  // Asked to start exactly at the end: nothing left to send.
  if (status === 416 && wanted > 0 && /\/(\d+)/.exec(contentRange ?? '')?.[1] === String(wanted)) return 'nothing-left';
  return 'other';
}

/** The source for an http:// or https:// URL. */
export function httpSource(url: string | URL, options?: SourceOptions): HttpSource {
  return new HttpSource({ url, ...(options ? { options } : {}) });
}
