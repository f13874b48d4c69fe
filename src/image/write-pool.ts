// The pool of aligned write buffers: coalesces the copy engine's output into large positional writes with periodic syncs, apart from the walk that feeds it.
import type { Target } from './target.ts';
import { alignedBuffer } from './aligned-buffer.ts';

/** Writes are cut at multiples of this (absolute target offsets), so devices see large aligned writes. */
export const WRITE_SIZE = 4 * 1024 * 1024;
/** Through the page cache: one buffer filling, two being written (12 MiB; all three when the filling waits); a write returns once copied into the cache. */
const POOL = 3;
/**
 * Past the page cache (target.ts): each write waits for the device, so more are kept in flight
 * (one filling, four being written: 20 MiB). With three, gz and zst lost their gain to the waits.
 * Four writes also fill libuv's four threads: a file source's reads then queue behind them, but
 * 8 threads (UV_THREADPOOL_SIZE) measured no different (raw 5.9-6.2 against 5.7-6.6 s).
 */
const POOL_DIRECT = 5;
/**
 * For a source that holds megabytes of image ahead itself and makes them at a few hundred MB/s
 * (xz lanes): more writes in flight only add memory. Measured onto a loop device on tmpfs, the
 * benchmark's .xz, 2 runs each: 5 buffers 15.4-15.6 s at 146 MiB peak RSS of the process tree,
 * 3 buffers 14.2-15.8 s at 137-138 MiB.
 */
export const POOL_SLOW_SOURCE = 3;
/**
 * fdatasync this often, so dirty page cache (and the time an abort or the final sync takes) stays
 * bounded; one sync runs while writing goes on. bmaptool syncs every 6 MiB.
 *
 * Measured (noisy VM, 2 cores) on a loop device, 2 GiB ext4 image with 1.1 GiB mapped, raw source
 * in tmpfs, wall time of the whole process, interleaved runs:
 *   3 x 4 MiB, sync 64 MiB    1.54-2.17 s (9 runs, 6 under 1.7), once 2.98   <- chosen
 *   3 x 4 MiB, sync 256 MiB   2.08-2.22 s
 *   3 x 8 MiB, sync 64 MiB    1.73-2.35 s
 *   5 x 4 MiB, sync 64 MiB    2.07-2.20 s
 *   2 x 4 MiB, sync 64 MiB    2.46-3.24 s
 *   bmaptool 3.6 copy         1.49-1.79 s
 * From disk, .zst: 3.3-4.7 s (bmaptool 3.4-4.5); .gz: 4.5-5.5 s (bmaptool 7.4-7.8).
 * Peak RSS of a bundled run: 105-120 MB whatever the image size (plain node alone: 39 MB).
 */
const SYNC_EVERY = 64 * 1024 * 1024;

export /** Coalesces pieces into aligned buffers and keeps up to a pool's worth of positional writes in flight. */
class Writer {
  private free: Buffer[] = [];
  private allocated = 0;
  private pool: number;
  private inflight: Promise<void>[] = [];
  private cur: Buffer | undefined;
  private curStart = 0;
  private curFill = 0;
  private curCap = 0;
  private sinceSync = 0;
  private syncing: Promise<void> = Promise.resolve();
  /** Bytes whose write has completed. */
  written = 0;

  constructor(
    private readonly target: Target,
    private readonly onWritten: (n: number) => void,
  ) {
    this.pool = target.writesDirect ? POOL_DIRECT : POOL;
  }

  /** Keeps at most `n` buffers from now on (before the first write: later, ones already made stay). */
  capPool(n: number): void {
    this.pool = Math.min(this.pool, n);
  }

  async put(data: Buffer, pos: number): Promise<void> {
    let off = 0;
    while (off < data.length) {
      const at = pos + off;
      if (!this.cur || at !== this.curStart + this.curFill) {
        this.flush();
        await this.acquire(at);
      }
      const buf = this.cur as Buffer;
      const n = Math.min(this.curCap - this.curFill, data.length - off);
      data.copy(buf, this.curFill, off, off + n);
      this.curFill += n;
      off += n;
      if (this.curFill === this.curCap) this.flush();
    }
  }

  private async acquire(at: number): Promise<void> {
    if (this.sinceSync >= SYNC_EVERY) {
      // Waits for the previous sync only, so writing goes on while this one runs.
      await this.syncing;
      this.sinceSync = 0;
      this.syncing = this.target.sync();
      this.syncing.catch(() => undefined);
    }
    let buf = this.free.pop();
    if (!buf && this.allocated < this.pool) {
      // Page-aligned, so that a block device writes them past the page cache (target.ts).
      buf = alignedBuffer(WRITE_SIZE);
      this.allocated++;
    }
    while (!buf) {
      await this.inflight.shift();
      buf = this.free.pop();
    }
    this.cur = buf;
    this.curStart = at;
    this.curFill = 0;
    this.curCap = WRITE_SIZE - (at % WRITE_SIZE);
  }

  /** Starts writing the current buffer; does not wait. */
  private flush(): void {
    const buf = this.cur;
    if (!buf) return;
    this.cur = undefined;
    const start = this.curStart;
    const len = this.curFill;
    if (len === 0) {
      this.free.push(buf);
      return;
    }
    const p = this.target.write(buf.subarray(0, len), start).then(() => {
      this.free.push(buf);
      this.written += len;
      this.sinceSync += len;
      this.onWritten(len);
    });
    // Observed later by acquire()/drain(); this only keeps a failure from being "unhandled" meanwhile.
    p.catch(() => undefined);
    this.inflight.push(p);
  }

  /** Writes what is buffered and waits for every write and sync; throws the first failure. */
  async drain(): Promise<void> {
    this.flush();
    while (this.inflight.length > 0) await this.inflight.shift();
    await this.syncing;
  }

  /** After a failure: lets in-flight writes finish before the caller closes the target. */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inflight, this.syncing]);
    this.inflight = [];
  }
}
