// A seeded fault proxy for HTTP/1.1 on loopback: it relays between clients (agents) and a
// server, and at byte offsets of the answers it was told to tamper with it cuts the connection,
// stalls, or flips one byte; it can also answer requests with 503 instead of passing them on.
// Offsets count answer *body* bytes across all connections, so "20 cuts during one download"
// means 20 cuts spread over that download however often the client reconnects. Same seed, same
// faults: a failing run can be replayed.
import { startTcpRelay } from './tcp-relay.ts';

export interface FaultPlan {
  /** Answers to requests whose path matches are tampered with (default: every answer). */
  match?: RegExp;
  /** Cut the connection when the matching answers' bodies have relayed this many bytes in total (ascending). */
  cutAt?: number[];
  /** Flip one byte (XOR 0xff) at these body offsets (ascending). */
  flipAt?: number[];
  /** Stop relaying for `ms` at these body offsets. */
  stallAt?: { at: number; ms: number }[];
  /** Answer this many of the first matching requests with 503 (Retry-After: 1) instead of passing them on. */
  errors503?: number;
}

export interface FaultLog {
  cuts: number;
  flips: number;
  stalls: number;
  errors503: number;
  /** Body bytes of matching answers relayed to clients. */
  bodyBytes: number;
  /** Requests seen (all paths). */
  requests: number;
}

export interface FaultProxy {
  url: string;
  port: number;
  log: FaultLog;
  close(): Promise<void>;
}

/** A small seeded PRNG (mulberry32): reproducible offsets from a seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` distinct ascending offsets in [from, to), drawn with the seed. */
export function spreadOffsets(seed: number, n: number, from: number, to: number): number[] {
  if (!(to > from) || n < 0 || n > to - from) throw new RangeError(`cannot place ${n} offsets in [${from}, ${to})`);
  const rnd = seededRandom(seed);
  const set = new Set<number>();
  while (set.size < n) set.add(from + Math.floor(rnd() * (to - from)));
  return [...set].sort((a, b) => a - b);
}

/** Where one answer on a connection is: its headers, then `remaining` body bytes (content-length). */
interface Answer {
  matching: boolean;
  head: boolean;
  inHeaders: boolean;
  header: Buffer;
  remaining: number;
}

/** Starts the proxy on 127.0.0.1 (a free port) in front of `127.0.0.1:targetPort`. */
export async function startFaultProxy(targetPort: number, plan: FaultPlan): Promise<FaultProxy> {
  const log: FaultLog = { cuts: 0, flips: 0, stalls: 0, errors503: 0, bodyBytes: 0, requests: 0 };
  const cutAt = [...(plan.cutAt ?? [])];
  const flipAt = [...(plan.flipAt ?? [])];
  const stallAt = [...(plan.stallAt ?? [])];
  let errorsLeft = plan.errors503 ?? 0;
  const matches = (path: string) => plan.match?.test(path) ?? true;

  const relay = await startTcpRelay(targetPort, (client, upstream) => {
    // Paths of requests sent upstream, in order: answers come back in the same order (no pipelining surprises).
    const pending: { path: string; head: boolean }[] = [];
    let answer: Answer | undefined;
    let stalled = false;
    const queue: Buffer[] = [];

    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1', 0, Math.min(chunk.length, 4096));
      const m = /^(GET|HEAD|POST|PUT|DELETE|PATCH) (\S+) HTTP\/1\.[01]\r\n/.exec(text);
      if (m) {
        log.requests++;
        const path = m[2] as string;
        if (errorsLeft > 0 && matches(path)) {
          errorsLeft--;
          log.errors503++;
          const body = 'fault proxy: injected 503\n';
          client.end(`HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
          upstream.destroy();
          return;
        }
        pending.push({ path, head: m[1] === 'HEAD' });
      }
      upstream.write(chunk);
    });

    const relay = (chunk: Buffer) => {
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    };

    /** Passes on one upstream chunk, tampering with the body bytes of matching answers. */
    const handle = (chunk: Buffer): void => {
      let off = 0;
      while (off < chunk.length) {
        if (!answer || (!answer.inHeaders && answer.remaining === 0)) {
          const req = pending.shift();
          answer = { matching: req !== undefined && !req.head && matches(req.path), inHeaders: true, header: Buffer.alloc(0), remaining: 0, head: req?.head ?? false };
        }
        if (answer.inHeaders) {
          const hdr = Buffer.concat([answer.header, chunk.subarray(off)]);
          const end = hdr.indexOf('\r\n\r\n');
          if (end < 0) {
            answer.header = hdr;
            relay(chunk.subarray(off));
            return;
          }
          const used = end + 4 - answer.header.length;
          const head = hdr.toString('latin1', 0, end);
          // An answer to HEAD, a 204 and a 304 carry no body whatever content-length says.
          const bodyless = answer.head || /^HTTP\/1\.[01] (?:204|304)/.test(head);
          answer.remaining = bodyless ? 0 : Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
          answer.inHeaders = false;
          answer.header = Buffer.alloc(0);
          relay(chunk.subarray(off, off + used));
          off += used;
          continue;
        }
        let n = Math.min(answer.remaining, chunk.length - off);
        if (!answer.matching) {
          relay(chunk.subarray(off, off + n));
          answer.remaining -= n;
          off += n;
          continue;
        }
        // The next fault inside this piece, if any.
        const next = Math.min(cutAt[0] ?? Infinity, flipAt[0] ?? Infinity, stallAt[0]?.at ?? Infinity);
        if (next < log.bodyBytes + n) n = next - log.bodyBytes;
        const piece = Buffer.from(chunk.subarray(off, off + n));
        log.bodyBytes += n;
        answer.remaining -= n;
        off += n;
        if (n > 0) relay(piece);
        if (log.bodyBytes === cutAt[0]) {
          cutAt.shift();
          log.cuts++;
          client.end(() => client.destroy());
          upstream.destroy();
          return;
        }
        if (log.bodyBytes === flipAt[0] && answer.remaining > 0 && off < chunk.length) {
          flipAt.shift();
          log.flips++;
          chunk[off] = (chunk[off] as number) ^ 0xff;
        }
        if (stallAt[0] && log.bodyBytes === stallAt[0].at) {
          const { ms } = stallAt.shift() as { at: number; ms: number };
          log.stalls++;
          stalled = true;
          upstream.pause();
          queue.push(chunk.subarray(off));
          setTimeout(() => {
            stalled = false;
            const rest = queue.splice(0);
            for (const b of rest) if (!client.destroyed) handle(b);
            if (!stalled && !client.destroyed) upstream.resume();
          }, ms).unref();
          return;
        }
      }
    };

    upstream.on('data', (chunk: Buffer) => {
      if (stalled) queue.push(chunk);
      else handle(chunk);
    });
    upstream.on('end', () => client.end());
  });
  return { ...relay, log };
}
