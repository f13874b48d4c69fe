// A socket read into a few reused segments (a SegmentRing), each handed to the consumer whole,
// instead of node's new 64 KiB buffer per read: at GiB/s that external memory made V8 run a
// full GC every few tens of MiB. Used for a program's output (decompress/tool-output.ts) and
// for an image piped into the process (sources/stdin.ts).
import type { Socket } from 'node:net';
import { SegmentRing } from './segment-ring.ts';

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
  /**
   * Bytes a segment must hold before it is handed to a consumer that is waiting (default: any).
   * Only for a writer that never waits on the consumer to go on writing: a segment below it
   * waits for more bytes, or for the end.
   */
  minHandOver?: number;
  /**
   * After a read smaller than 64 KiB, stop reading for this many ms (default 0: read on), so
   * that the writer fills the socket meanwhile and the next read takes more: each read is a
   * system call, and xz writes 8 KiB at a time.
   */
  gatherMs?: number;
}

/**
 * Reads a socket into `count` reused segments of `size` bytes (a SegmentRing), each handed over
 * whole: when it is full, or at the first read while the consumer is waiting (once it holds
 * `minHandOver` bytes); after a small read, reading may pause `gatherMs`. Node asks for the
 * buffer of the next read right after each read (net.Socket `onread`), so every choice is made
 * there: when the ring is blocked, reading pauses with the next read aimed at the segment the
 * consumer gives back first, and resumes when it has.
 */
export function segments(open: (onread: object) => Socket, { size = 1024 * 1024, count = 2, minHandOver = 0, gatherMs = 0 }: SegmentOptions = {}): Segments {
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
  let gatherTimer: NodeJS.Timeout | undefined;
  const sock = open({
    buffer: () => ring.room(),
    callback: (n: number) => {
      ring.added(n);
      // Handed over when too full for another read, or when the consumer waits with nothing queued.
      const waited = wake !== undefined && ring.queued === 0 && ring.fill >= minHandOver;
      if (size - ring.fill < MIN_ROOM || waited) {
        ring.handOver();
        notify();
        if (ring.blocked) {
          paused = true;
          return false;
        }
      }
      if (gatherMs > 0 && n < MIN_ROOM) {
        // Reading stops as when the ring is blocked: the buffer for the next read is already the room.
        paused = true;
        clearTimeout(gatherTimer);
        gatherTimer = setTimeout(() => {
          gatherTimer = undefined;
          if (paused && !ring.blocked && !failed) {
            paused = false;
            sock.resume();
          }
        }, gatherMs);
        return false;
      }
      return true;
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
      clearTimeout(gatherTimer);
      failed ??= err;
      notify();
      sock.destroy();
    },
  };
}
