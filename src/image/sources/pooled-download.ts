// One `openPooled()` of an HttpSource: the resuming download of http.ts (Range from the byte
// reached, If-Range, retries with backoff, stall timeout) as a pull loop over bodies whose chunks
// are views of reused buffers. Pulling makes two things simple: the stall clock only runs while
// we wait for the network (not while the consumer holds a chunk), and there is no stream buffer.
import type { IncomingMessage } from 'node:http';
import { http1Get, type PooledBody } from './http1-body.ts';
import {
  PermanentError,
  Retrier,
  DEFAULT_STALL_TIMEOUT_MS,
  abortErrorOf,
  describeNetworkError,
  formatMiB,
  ifRangeOf,
  judgeAnswer,
  statusError,
  type HttpSource,
} from './http.ts';

/** node's client response as a PooledBody (its chunks are fresh buffers: the contract holds trivially). */
function clientBody(res: IncomingMessage, stallMs: number): PooledBody {
  const it = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  return {
    async next() {
      const timer = setTimeout(() => res.destroy(new Error(`no data for ${stallMs / 1000} s`)), stallMs);
      try {
        const r = await it.next();
        return r.done ? undefined : r.value;
      } catch (e) {
        const msg = (e as Error).message;
        throw new Error(/^no data for/.test(msg) ? msg : `connection lost (${msg})`, { cause: e });
      } finally {
        clearTimeout(timer);
      }
    },
    close() {
      res.destroy();
    },
  };
}

export class PooledDownload {
  private readonly ac = new AbortController();
  private readonly retrier: Retrier;
  private readonly stallMs: number;
  private reached: number;
  private end: number | undefined;
  private body: PooledBody | undefined;
  /** No body left to read (a 416 at the end). */
  private nothingLeft = false;
  /** A response was accepted once: later failures are "resuming", earlier ones "retrying". */
  private accepted = false;
  private readonly onExternalAbort = (): void => this.ac.abort(abortErrorOf(this.signal as AbortSignal));

  constructor(
    private readonly source: HttpSource,
    offset: number,
    private readonly signal: AbortSignal | undefined,
    /** Stop before this byte (asked for with a bounded Range); undefined reads to the end. */
    private readonly until?: number,
  ) {
    this.reached = offset;
    this.retrier = new Retrier(source.options, source.display);
    this.stallMs = source.options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
  }

  /** Connects (retrying as `open` does) and returns the chunks; throws what `open` would throw. */
  async start(): Promise<AsyncGenerator<Buffer>> {
    this.signal?.addEventListener('abort', this.onExternalAbort, { once: true });
    try {
      await this.connect(undefined);
    } catch (e) {
      this.signal?.removeEventListener('abort', this.onExternalAbort);
      throw e;
    }
    return this.chunks();
  }

  private async *chunks(): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        if (this.nothingLeft || (this.until !== undefined && this.reached >= this.until)) return;
        const body = this.body as PooledBody;
        let c: Buffer | undefined;
        try {
          c = await body.next();
          const stop = Math.min(this.until ?? Infinity, this.end ?? Infinity);
          if (!c && stop !== Infinity && this.reached < stop) throw new Error('connection closed early');
        } catch (e) {
          body.close();
          this.body = undefined;
          if (this.ac.signal.aborted) throw abortErrorOf(this.ac.signal);
          await this.dropped(e as Error);
          continue;
        }
        if (!c) return;
        // A server that ignored the bounded Range (a 200 from byte 0) sends more: cut it there.
        if (this.until !== undefined && this.reached + c.length > this.until) c = c.subarray(0, this.until - this.reached);
        this.reached += c.length;
        this.retrier.progress(c.length);
        yield c;
      }
    } finally {
      this.body?.close();
      this.body = undefined;
      this.signal?.removeEventListener('abort', this.onExternalAbort);
    }
  }

  private async dropped(err: Error): Promise<void> {
    if (this.source.rangeSupport === false) {
      throw new PermanentError(
        `${this.source.display}: ${err.message} at ${formatMiB(this.reached)} and the server cannot resume (it does not support Range requests)`,
      );
    }
    await this.connect(err);
  }

  /** Requests from `reached` until an answer is accepted; `cause` is the failure that led here. */
  private async connect(cause: Error | undefined): Promise<void> {
    for (;;) {
      if (cause) {
        if (!this.accepted) {
          await this.retrier.wait(cause, `cannot reach the server (${cause.message})`, 'retrying', this.ac.signal);
        } else {
          await this.retrier.wait(cause, `${cause.message} at ${formatMiB(this.reached)}`, 'resuming', this.ac.signal);
        }
      }
      try {
        await this.request();
        this.accepted = true;
        return;
      } catch (e) {
        if (this.ac.signal.aborted) throw abortErrorOf(this.ac.signal);
        if (e instanceof PermanentError) throw e;
        cause = e as Error;
      }
    }
  }

  private async request(): Promise<void> {
    const extra: Record<string, string> = {};
    const known = this.source.knownValidator;
    if (this.reached > 0 || this.until !== undefined) {
      extra.range = `bytes=${this.reached}-${this.until === undefined ? '' : this.until - 1}`;
      const ifRange = known && ifRangeOf(known);
      if (ifRange) extra['if-range'] = ifRange;
    }
    const url = this.source.target;
    if (url.protocol === 'http:') {
      const fast = await http1Get(url, this.source.headersFor('GET', url, extra), {
        signal: this.ac.signal,
        stallMs: this.stallMs,
        display: this.source.display,
      }).catch((e: NodeJS.ErrnoException) => {
        const err = describeNetworkError(e, this.source.display);
        // A redirect target that cannot be reached: node's client tries it, then the URL given (as `open` does).
        if (this.source.redirected && !(err instanceof PermanentError) && !this.ac.signal.aborted) return undefined;
        throw err;
      });
      if (fast?.body) {
        this.take(fast.head.status, fast.head.headers, fast.body);
        return;
      }
      // Not streamed here (redirect, error status, chunked...): node's client asks again.
    }
    const { res, url: at } = await this.source.request('GET', extra, this.ac.signal);
    const verdict = this.take(res.statusCode ?? 0, res.headers, clientBody(res, this.stallMs));
    if (verdict === 'other') throw await statusError(res, at);
  }

  /** Accepts a body per judgeAnswer, or closes it and throws. */
  private take(status: number, headers: Parameters<typeof judgeAnswer>[2], body: PooledBody): 'taken' | 'other' {
    let verdict: ReturnType<typeof judgeAnswer>;
    try {
      verdict = judgeAnswer(this.source, status, headers, this.reached, this.end);
    } catch (e) {
      body.close();
      throw e;
    }
    if (verdict === 'other') return 'other';
    if (verdict === 'nothing-left') {
      body.close();
      this.nothingLeft = true;
      return 'taken';
    }
    this.end = verdict.end;
    this.body = body;
    return 'taken';
  }
}
