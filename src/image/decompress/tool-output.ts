// A program's output, read into reused segments over a unix socket pair, so that the program
// keeps writing while the consumer works on what it wrote before.
//
// Not a pipe: a pipe holds 64 KiB and node cannot ask for more (F_SETPIPE_SZ), so the writer
// stopped after every 64 KiB until node had woken up and read it. A unix stream socket takes
// about 200 KiB (net.core.wmem_default). Measured, zstd -dc of the benchmark's 2 GiB image
// counting the bytes in node (page cache warm): zstd alone to /dev/null 2.6 s; through this
// socket pair into these segments 2.55-2.6 s; through a FIFO 3.4-3.6 s, into one buffer or
// into these segments alike; through node's own child stdout (a socket pair, but a new 64 KiB
// buffer per read) 3.0 s.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type NetConnectOpts, type Socket } from 'node:net';
import { SegmentRing } from '../segment-ring.ts';

export interface Segments {
  /** The next chunk: a view of a segment, valid until the next call. Undefined at the end. */
  next(): Promise<Buffer | undefined>;
  /** Stops reading and closes the socket; a waiting next() rejects with `err`. */
  destroy(err: Error): void;
}

/** A segment with less room than this left is handed over (a read is given at least a pipe's worth). */
const MIN_ROOM = 64 * 1024;

export interface SegmentOptions {
  /** Bytes per segment; 1 MiB by default. */
  size?: number;
  /** Segments; 2 by default (one being filled while the consumer holds the other). */
  count?: number;
}

/**
 * A connected pair of unix stream sockets (abstract namespace: nothing on disk): `writeEnd` is for
 * a child's stdio (close it once the child is started), `reader` reads what arrives at the other end.
 */
export async function toolOutput(opts: SegmentOptions = {}): Promise<{ writeEnd: Socket; reader: Segments }> {
  const name = `\0bootline-out-${process.pid}-${randomBytes(8).toString('hex')}`;
  const server = createServer({ pauseOnConnect: true });
  try {
    server.listen(name);
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    let client: Socket | undefined;
    // `onread` is documented for sockets; @types/node only declares it on some connect options.
    const reader = segments((onread) => (client = connect({ path: name, onread } as unknown as NetConnectOpts)), opts);
    const refused = once(client as unknown as Socket, 'error').then(([e]) => Promise.reject(e as Error));
    const [writeEnd] = await Promise.race([accepted, refused]);
    return { writeEnd, reader };
  } finally {
    server.close();
  }
}

/**
 * Reads a socket into `count` reused segments of `size` bytes (a SegmentRing), each handed over
 * whole: when it is full, or at the first read while the consumer is waiting. Node asks for the
 * buffer of the next read right after each read (net.Socket `onread`), so every choice is made
 * there: when the ring is blocked, reading pauses with the next read aimed at the segment the
 * consumer gives back first, and resumes when it has.
 */
export function segments(open: (onread: object) => Socket, { size = 1024 * 1024, count = 2 }: SegmentOptions = {}): Segments {
  if (count < 2 || size < MIN_ROOM * 2) throw new Error('segments: at least two segments of 128 KiB');
  const ring = new SegmentRing(size, count);
  /** Reading stopped until the ring is no longer blocked. */
  let paused = false;
  let ended = false;
  let failed: Error | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const sock = open({
    buffer: () => ring.room(),
    callback: (n: number) => {
      ring.added(n);
      if (size - ring.fill >= MIN_ROOM && !(wake && ring.queued === 0)) return true;
      ring.handOver();
      notify();
      if (!ring.blocked) return true;
      paused = true;
      return false;
    },
  });
  sock.on('end', () => {
    ended = true;
    notify();
  });
  sock.on('error', (e) => {
    failed ??= e;
    notify();
  });

  return {
    async next() {
      ring.release();
      if (paused && !ring.blocked) {
        paused = false;
        sock.resume();
      }
      for (;;) {
        if (failed) throw failed;
        const c = ring.take();
        if (c) return c;
        if (ended) {
          if (ring.fill === 0) return undefined;
          // No read comes after the end: the last bytes can go whatever segment is next.
          ring.handOver();
          continue;
        }
        await new Promise<void>((r) => (wake = r));
      }
    },
    destroy(err) {
      failed ??= err;
      notify();
      sock.destroy();
    },
  };
}
