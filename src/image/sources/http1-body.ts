// One plain-http GET whose body is read into two reused 1 MiB segments. node's HTTP client
// allocates a fresh 64 KiB buffer per socket read; at 100-400 MB/s that external memory makes V8
// run a full GC every few MiB (measured: 108 mark-compacts, about 1 s of the main thread, in a
// 450 MB download). Here the socket reads into one buffer (net `onread`) and each read is copied
// into a segment: memcpy is cheap, allocation is not. Only a 200/206 with Content-Length and no
// Transfer-Encoding is streamed this way; anything else is left to node's client (`body` unset).
import net from 'node:net';
import { PermanentError, abortErrorOf } from './http.ts';
import { SegmentRing } from '../segment-ring.ts';
import { BufferPool } from '../buffer-pool.ts';

/** Bytes handed to the consumer at once. */
export const SEGMENT = 1024 * 1024;
/** What one socket read may bring. */
const READ_BUFFER = 256 * 1024;
/** Status line and headers together; a larger head is refused (node's own limit is 16 KiB). */
export const MAX_HEAD = 64 * 1024;
/**
 * Buffers of finished requests, for the next: an xz lane asks for each block anew, and each
 * request's 2.3 MiB outlive a young-generation GC, so fresh ones piled up in the old generation
 * until a full GC (measured: node's array buffers grew 35 → 49 MiB over one 22 s copy, with one
 * mark-compact). Four lanes' worth are kept.
 */
const spare = { segments: new BufferPool(SEGMENT, 8), reads: new BufferPool(READ_BUFFER, 4), heads: new BufferPool(MAX_HEAD, 4) };

/** A response's status and headers (names lower-case, repeated values joined with ", "). */
export interface ResponseHead {
  status: number;
  statusMessage: string;
  headers: Record<string, string>;
}

/** A body read on demand. A chunk is valid only until `next` is called again or `close`. */
export interface PooledBody {
  next(): Promise<Buffer | undefined>;
  close(): void;
}

export interface Http1Response {
  head: ResponseHead;
  /** Unset when the response is not streamed here (redirect, error status, chunked...): the socket is closed. */
  body: PooledBody | undefined;
}

/** Counts bodies streamed on the fast path (tests prove it was taken; logs may show it). */
export const fastPathStats = { bodies: 0, /** Body bytes read by the kernel straight into a segment. */ directBytes: 0 };

/**
 * Parses a response head (without the blank line ending it). Throws a PermanentError naming
 * `display` for anything that is not HTTP/1.x: a wrong port or a broken proxy will not get better.
 */
export function parseHead(text: string, display: string): ResponseHead {
  const lines = text.split('\r\n');
  const statusLine = lines[0] ?? '';
  const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) {
    throw new PermanentError(
      `${display}: the server's answer is not HTTP/1.x (status line ${JSON.stringify(printable(statusLine))}); check the URL and port`,
    );
  }
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon <= 0 || /\s/.test(line.slice(0, colon))) {
      throw new PermanentError(`${display}: the server sent a malformed header line ${JSON.stringify(printable(line))}`);
    }
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(m[1]), statusMessage: m[2] ?? '', headers };
}

/** The body length the head announces, undefined when there is none; a bad value throws. */
export function contentLengthOf(head: ResponseHead, display: string): number | undefined {
  const raw = head.headers['content-length'];
  if (raw === undefined) return undefined;
  // Repeated identical values ("5, 5") are allowed by RFC 9110; differing ones are not.
  const values = [...new Set(raw.split(',').map((v) => v.trim()))];
  const only = values[0] ?? '';
  if (values.length !== 1 || !/^\d{1,15}$/.test(only)) {
    throw new PermanentError(`${display}: the server sent an invalid Content-Length ${JSON.stringify(printable(raw))}; it cannot be downloaded safely`);
  }
  return Number(only);
}

function printable(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.slice(0, 120).replace(/[\x00-\x1f\x7f]/g, '?');
}

/**
 * Sends `GET url` with `headers` on a socket of its own (Connection: close) and reads the head.
 * `stallMs` bounds both the wait for the head and every wait for body bytes while the consumer
 * is ready for more; time the consumer holds both segments does not count.
 */
export function http1Get(
  url: URL,
  headers: Record<string, string>,
  opts: { signal: AbortSignal; stallMs: number; display: string },
): Promise<Http1Response> {
  if (url.protocol !== 'http:') throw new Error(`not a plain http URL: ${url.protocol}`);
  const { signal, stallMs, display } = opts;
  signal.throwIfAborted();
  for (const [k, v] of Object.entries(headers)) {
    // node's client refuses these too: a line break would end the header early (header injection).
    if (/[\r\n\0]/.test(k + v)) throw new PermanentError(`${display}: the header ${JSON.stringify(printable(k))} contains a line break; remove it from the headers given`);
  }
  const readBuf = spare.reads.take();
  let headBuf: Buffer | undefined = spare.heads.take();
  let headLen = 0;

  // Body state: the ring's filling segment receives bytes; a full one waits for the consumer.
  let ring: SegmentRing | undefined;
  /** Bytes of a read that did not fit: they stay in `readBuf` (the socket is paused) until a segment is free. */
  let left: { from: number; to: number } | undefined;
  let remaining = 0;
  let complete = false;
  let failure: Error | undefined;
  let paused = false;
  let wake: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;

  let resolveHead!: (r: Http1Response) => void;
  let rejectHead!: (e: Error) => void;
  let headDone = false;
  const headPromise = new Promise<Http1Response>((res, rej) => {
    resolveHead = res;
    rejectHead = rej;
  });

  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const clearStall = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
  };
  const fail = (e: Error): void => {
    clearStall();
    failure ??= e;
    sock.destroy();
    signal.removeEventListener('abort', onAbort);
    if (!headDone) {
      headDone = true;
      rejectHead(e);
    }
    // Bytes already received are still handed on: the resume starts after them.
    if (ring && !ring.blocked && ring.fill > 0) ring.handOver();
    notify();
  };
  const armStall = (): void => {
    clearStall();
    const msg = headDone ? `no data for ${stallMs / 1000} s` : `no response for ${stallMs / 1000} s`;
    timer = setTimeout(() => fail(new Error(msg)), stallMs);
  };
  const onAbort = (): void => fail(abortErrorOf(signal));

  /** The whole body has come. */
  const endBody = (): void => {
    if (complete) return;
    complete = true;
    clearStall();
    sock.destroy(); // Connection: close; anything after the body is not ours
    signal.removeEventListener('abort', onAbort);
  };

  /** `n` body bytes are in the ring's room (copied or read there): a full segment, or the last, is handed on. */
  const bodyAdded = (n: number): void => {
    const r = ring as SegmentRing;
    r.added(n);
    remaining -= n;
    if (r.fill === SEGMENT || remaining === 0) r.handOver();
    if (remaining === 0) endBody();
  };

  /** Copies body bytes into segments; returns false when the rest must wait for a free one. */
  const take = (buf: Buffer, from: number, to: number): boolean => {
    const r = ring as SegmentRing;
    while (from < to && remaining > 0) {
      if (r.blocked) {
        left = { from, to };
        return false;
      }
      const n = buf.copy(r.room(), 0, from, Math.min(to, from + remaining));
      bodyAdded(n);
      from += n;
    }
    // An empty body is whole at once.
    if (remaining === 0) endBody();
    return true;
  };

  const onHead = (text: string, rest: Buffer, restFrom: number, restTo: number): boolean => {
    headDone = true;
    let head: ResponseHead;
    let length: number | undefined;
    try {
      head = parseHead(text, display);
      length = contentLengthOf(head, display);
    } catch (e) {
      headDone = false;
      fail(e as Error);
      return false;
    }
    const streamed = (head.status === 200 || head.status === 206) && length !== undefined && head.headers['transfer-encoding'] === undefined;
    if (!streamed) {
      clearStall();
      sock.destroy();
      signal.removeEventListener('abort', onAbort);
      resolveHead({ head, body: undefined });
      return false;
    }
    fastPathStats.bodies++;
    ring = new SegmentRing(SEGMENT, 2, spare.segments);
    remaining = length as number;
    resolveHead({ head, body });
    const more = take(rest, restFrom, restTo);
    if (remaining === 0 && ring.queued === 0) notify();
    return more;
  };

  /**
   * Where the next read goes: body bytes straight into the ring's room, sparing a copy per byte
   * on the main thread; the head, and a read after one that did not fit (its rest waits in
   * `readBuf`, and is taken into the ring before reading resumes) and a read while the ring is
   * blocked (the consumer holds the segment) into `readBuf`. Node asks right after each read,
   * so a room handed out is not written by anyone else before the read into it.
   */
  const nextBuffer = (): Buffer => (ring && !ring.blocked && !left && !failure && !complete ? ring.room() : readBuf);

  /** `n` body bytes were read into the ring's room. */
  const tookDirect = (n: number): boolean => {
    const k = Math.min(n, remaining);
    fastPathStats.directBytes += k;
    bodyAdded(k);
    notify();
    if (!complete && (ring as SegmentRing).blocked) {
      paused = true;
      clearStall();
      return false;
    }
    if (!complete) armStall();
    return !complete;
  };

  const onRead = (n: number, buf: Buffer): boolean => {
    if (failure || complete) return false;
    if (buf !== readBuf) return tookDirect(n);
    if (!headDone) {
      const h = headBuf as Buffer;
      // The blank line may straddle two reads: search from a little before the new bytes.
      const searchFrom = Math.max(0, headLen - 3);
      const copied = Math.min(n, MAX_HEAD - headLen);
      readBuf.copy(h, headLen, 0, copied);
      headLen += copied;
      const end = h.subarray(0, headLen).indexOf('\r\n\r\n', searchFrom);
      if (end < 0) {
        if (headLen >= MAX_HEAD) {
          fail(new PermanentError(`${display}: the server's response headers are larger than ${MAX_HEAD / 1024} KiB; refusing them`));
          return false;
        }
        armStall();
        return true;
      }
      const text = h.toString('latin1', 0, end);
      // Body bytes that came with the head: the part of this read after the blank line.
      const bodyFrom = end + 4 - (headLen - copied);
      spare.heads.give(h);
      headBuf = undefined;
      const more = onHead(text, readBuf, bodyFrom, n);
      if (!more) {
        paused = !complete && !failure;
        if (paused) clearStall();
        notify();
        return false;
      }
      armStall();
      notify();
      return true;
    }
    const more = take(readBuf, 0, n);
    notify();
    if (!more) {
      paused = true;
      clearStall();
      return false;
    }
    if (!complete) armStall();
    return true;
  };

  const sock = net.connect({
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: Number(url.port || 80),
    onread: { buffer: nextBuffer, callback: onRead },
  });
  sock.on('error', (e) => fail(e));
  sock.on('end', () => {
    if (!headDone) fail(new Error(headLen > 0 ? 'connection lost inside the response headers' : 'connection closed without a response'));
    else if (!complete) fail(new Error('connection closed early'));
  });
  sock.on('close', () => {
    if (!complete && !failure) fail(new Error('connection lost'));
    // The handle is closed: the socket reads into neither buffer again, and bytes left in
    // readBuf are never taken (failure or complete is set).
    spare.reads.give(readBuf);
    if (headBuf) spare.heads.give(headBuf);
    headBuf = undefined;
  });
  signal.addEventListener('abort', onAbort, { once: true });
  armStall();
  const target = `${url.pathname}${url.search}`;
  const lines = [`GET ${target} HTTP/1.1`];
  // A signer (S3) may give Host itself; one Host only, and this path's own Connection.
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'host')) lines.push(`host: ${url.host}`);
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() !== 'connection') lines.push(`${k}: ${v}`);
  lines.push('connection: close', '', '');
  sock.write(lines.join('\r\n'), 'latin1');

  /** Frees the held segment, moves waiting bytes into it and lets the socket read again. */
  const release = (): void => {
    const r = ring as SegmentRing;
    const wasBlocked = r.blocked;
    r.release();
    if (wasBlocked && !r.blocked && !failure) {
      if (left) {
        const { from, to } = left;
        left = undefined;
        if (!take(readBuf, from, to)) return;
      }
      if (paused && !complete) {
        paused = false;
        armStall();
        sock.resume();
      }
    }
  };

  const body: PooledBody = {
    async next(): Promise<Buffer | undefined> {
      release();
      for (;;) {
        const c = (ring as SegmentRing).take();
        if (c) return c;
        if (complete) return undefined;
        if (failure) throw failure;
        await new Promise<void>((r) => (wake = r));
      }
    },
    close(): void {
      clearStall();
      signal.removeEventListener('abort', onAbort);
      failure ??= new Error('closed');
      sock.destroy();
      // The socket reads no more (failure is set) and the consumer holds no chunk after close.
      ring?.dispose();
      notify();
    },
  };
  return headPromise;
}
