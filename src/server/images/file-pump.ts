// Sends a byte range of an open file to an HTTP response through a few reused buffers.
//
// Why not fs.createReadStream().pipe(res): it allocates a fresh Buffer per chunk, and at
// a GiB/s that external memory keeps triggering full garbage collections whose cost grows
// with the server's heap. Measured here (1 GiB file, `wrk -c50`, node 20): a plain script
// streaming with createReadStream used 0.9 CPU s per GiB served; the same code with 150 MB
// of live objects in its heap, as the server has (Fastify, schemas, caches), 4.5 s.
// Buffers taken from a shared pool and returned once the socket has the bytes cost the
// collector nothing.
import { close, read } from 'node:fs';
import type { ServerResponse } from 'node:http';

/** Bytes per read and per write. */
export const PUMP_CHUNK = 1024 * 1024;
/** Buffers kept for reuse; a burst beyond this allocates (and lets go of) more. */
const POOL_MAX = 64;
const pool: Buffer[] = [];

const take = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(PUMP_CHUNK);
const give = (b: Buffer): void => {
  if (pool.length < POOL_MAX) pool.push(b);
};

const readAt = (fd: number, buf: Buffer, length: number, position: number): Promise<number> =>
  new Promise((resolve, reject) => read(fd, buf, 0, length, position, (err, n) => (err ? reject(err) : resolve(n))));

export interface PumpResult {
  /** Bytes handed to the socket. */
  bytes: number;
  /** The client went away (or the response was destroyed) before the end. */
  aborted: boolean;
}

/**
 * Writes bytes `start`..`end` (inclusive) of `fd` to `res` (whose headers are set), ends the
 * response and closes `fd`. Two buffers in flight per response: the next read overlaps the
 * previous write. Backpressure: waits for 'drain' when the socket is full. A read error
 * destroys the response (the client sees a short body, not a wrong one).
 */
export async function pumpFile(fd: number, res: ServerResponse, start: number, end: number): Promise<PumpResult> {
  let position = start;
  let bytes = 0;
  let closed = false;
  const onClose = () => (closed = true);
  res.once('close', onClose);
  try {
    while (position <= end) {
      if (closed || res.destroyed) return { bytes, aborted: true };
      const buf = take();
      let n: number;
      try {
        n = await readAt(fd, buf, Math.min(PUMP_CHUNK, end - position + 1), position);
      } catch (e) {
        give(buf);
        res.destroy(e as Error);
        return { bytes, aborted: true };
      }
      if (n === 0) {
        // The file shrank under us: never pad, cut the response short.
        give(buf);
        res.destroy(new Error('file truncated while being served'));
        return { bytes, aborted: true };
      }
      position += n;
      bytes += n;
      const more = res.write(n === buf.length ? buf : buf.subarray(0, n), () => give(buf));
      if (!more && !res.destroyed) {
        await new Promise<void>((resolve) => {
          const done = () => {
            res.off('drain', done);
            res.off('close', done);
            resolve();
          };
          res.on('drain', done);
          res.on('close', done);
        });
      }
    }
    res.end();
    return { bytes, aborted: false };
  } finally {
    res.off('close', onClose);
    close(fd, () => undefined);
  }
}
