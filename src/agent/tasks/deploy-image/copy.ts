// The copying core: source bytes -> (gunzip) -> positional writes on the target.
// Kept apart from target selection because the image engine (bmap, resume,
// zstd/xz) will replace this file; its interface is what index.ts relies on.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { TaskError } from '../builtin.ts';
import { formatBytes } from '../../../format.ts';

/** Writes are coalesced to this size: few syscalls, and memory stays bounded by it. */
export const WRITE_BLOCK = 1024 * 1024;
export const PROGRESS_INTERVAL_MS = 250;

export type Compression = 'none' | 'gzip' | 'zstd' | 'xz' | 'bzip2';

/** Compression by magic bytes, so a misnamed file is still handled (or refused) correctly. */
export function detectCompression(head: Uint8Array): Compression {
  const at = (i: number) => head[i];
  if (at(0) === 0x1f && at(1) === 0x8b) return 'gzip';
  if (at(0) === 0x28 && at(1) === 0xb5 && at(2) === 0x2f && at(3) === 0xfd) return 'zstd';
  if (at(0) === 0xfd && at(1) === 0x37 && at(2) === 0x7a && at(3) === 0x58 && at(4) === 0x5a && at(5) === 0x00) return 'xz';
  // "BZh" plus the block size digit: a bare "BZh" could be raw data.
  if (at(0) === 0x42 && at(1) === 0x5a && at(2) === 0x68 && (at(3) ?? 0) >= 0x31 && (at(3) ?? 0) <= 0x39) return 'bzip2';
  return 'none';
}

/**
 * Refuses, before the target is opened, what this version cannot write: other
 * compressions, and a raw image known to be larger than the device.
 */
export function preflight(compression: Compression, totalBytes: number | undefined, targetSize: number | undefined, target: string): void {
  if (compression !== 'none' && compression !== 'gzip') {
    throw new TaskError(
      `the image is compressed with ${compression}: not supported by this version of deploy-image; decompress it first or use a .gz/raw image`,
    );
  }
  if (compression === 'none' && totalBytes !== undefined && targetSize !== undefined && totalBytes > targetSize) {
    throw new TaskError(
      `the image (${formatBytes(totalBytes)}) does not fit on ${target} (${formatBytes(targetSize)}); nothing was written. Use a bigger disk or a smaller image`,
    );
  }
}

export interface CopyProgress {
  /** Source bytes consumed (compressed bytes for a .gz image): what bytesTotal counts. */
  bytesDone: number;
  bytesTotal?: number;
  /** Bytes written to the target so far (decompressed). */
  bytesWritten: number;
  /** bytesDone per second since the start. */
  rate: number;
  etaSeconds?: number;
  /** 0-100, when bytesTotal is known. */
  percent?: number;
}

/** Rate, ETA and percentage from a byte count: pure, so it is tested without streams. */
export function progressAt(done: number, total: number | undefined, elapsedMs: number): Pick<CopyProgress, 'rate' | 'etaSeconds' | 'percent'> {
  const rate = elapsedMs > 0 ? done / (elapsedMs / 1000) : 0;
  if (total === undefined || total <= 0) return { rate };
  const percent = Math.min(100, (done / total) * 100);
  const etaSeconds = rate > 0 ? Math.max(0, (total - done) / rate) : undefined;
  return { rate, percent, ...(etaSeconds === undefined ? {} : { etaSeconds }) };
}

export interface CopyOptions {
  source: Readable;
  /** Size of what `source` yields (compressed size for .gz), for progress and truncation checks. */
  totalBytes?: number;
  target: string;
  /** Expected sha256 (hex) of the decompressed image. */
  sha256?: string;
  signal: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  /** Refuse to write past this many bytes (the device size), with a clear error. */
  targetSize?: number;
  /** Create the target if missing (file targets); otherwise a missing target is an error. */
  create?: boolean;
  /** Clock, for tests. */
  now?: () => number;
}

export interface CopyResult {
  compression: 'none' | 'gzip';
  bytesRead: number;
  bytesWritten: number;
  /** sha256 (hex) of the bytes written. */
  sha256: string;
}

/** Positional writer with one coalescing buffer: memory never exceeds WRITE_BLOCK plus one chunk. */
class BlockWriter {
  private buf = Buffer.allocUnsafe(WRITE_BLOCK);
  private fill = 0;
  pos = 0;

  constructor(
    private fh: FileHandle,
    private target: string,
    private limit: number | undefined,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    let off = 0;
    // A chunk at least a block long goes straight to disk, skipping the copy.
    if (this.fill === 0 && chunk.length >= WRITE_BLOCK) {
      await this.write(chunk);
      return;
    }
    while (off < chunk.length) {
      const n = chunk.copy(this.buf, this.fill, off);
      this.fill += n;
      off += n;
      if (this.fill === this.buf.length) await this.flush();
    }
  }

  async flush(): Promise<void> {
    if (this.fill === 0) return;
    const n = this.fill;
    this.fill = 0;
    await this.write(this.buf.subarray(0, n));
  }

  private async write(data: Buffer): Promise<void> {
    if (this.limit !== undefined && this.pos + data.length > this.limit) {
      throw new TaskError(
        `the image does not fit on ${this.target} (${formatBytes(this.limit)}): it is larger than the target; use a bigger disk or a smaller image`,
      );
    }
    let off = 0;
    while (off < data.length) {
      let bytesWritten: number;
      try {
        ({ bytesWritten } = await this.fh.write(data, off, data.length - off, this.pos));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const hint = err.code === 'ENOSPC' ? ': the image is larger than the target' : '';
        throw new TaskError(`writing ${this.target} at offset ${this.pos} failed: ${err.code ?? err.message}${hint}`);
      }
      if (bytesWritten === 0) throw new TaskError(`writing ${this.target} at offset ${this.pos} made no progress: the target is full or gone`);
      off += bytesWritten;
      this.pos += bytesWritten;
    }
  }
}

async function openTarget(target: string, create: boolean): Promise<FileHandle> {
  try {
    // r+ never truncates and never creates: a block device is written in place.
    return await open(target, 'r+');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' && create) return open(target, 'w');
    throw new TaskError(`cannot open target ${target} for writing: ${err.code ?? err.message}`);
  }
}

/** Resolves when `w` can take more data, or will never again (closed, failed). */
function writable(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done).off('close', done).off('error', done);
      resolve();
    };
    w.on('drain', done).on('close', done).on('error', done);
  });
}

/**
 * Gunzips `input` (concatenated members included) with backpressure both ways.
 * Not stream.pipeline: zlib ends its output at zero padding after the gzip data
 * (which gzip(1) also accepts) while input remains, and pipeline reports that
 * as a failure. Here the rest is still fed to zlib, which skips zeros and
 * rejects any other trailing data.
 */
async function* gunzip(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const gz = createGunzip({ chunkSize: 256 * 1024 });
  let failure: unknown;
  let outputEnded = false;
  gz.on('error', (e) => {
    failure ??= e;
  });
  const feed = (async () => {
    try {
      for await (const chunk of input) {
        if (failure !== undefined || gz.destroyed) return;
        if (!gz.write(chunk)) await writable(gz);
      }
      if (!gz.destroyed) {
        gz.end();
        await new Promise<void>((resolve) => gz.once('finish', resolve).once('close', resolve));
      }
    } catch (e) {
      failure ??= e;
      gz.destroy();
    }
  })();
  try {
    // destroyOnReturn false: the default destroys gz when its output ends, failing the feed of the padding.
    for await (const out of gz.iterator({ destroyOnReturn: false })) yield out as Buffer;
    outputEnded = true;
  } catch (e) {
    failure ??= e;
  } finally {
    // The consumer stopped early (write error, abort): release the source too.
    if (!outputEnded) gz.destroy();
    await feed;
  }
  if (failure !== undefined) throw failure;
}

/** Streams `source` to `target`, gunzipping a gzip stream, hashing what is written, then fdatasync. */
export async function copyImage(o: CopyOptions): Promise<CopyResult> {
  const now = o.now ?? Date.now;
  const started = now();
  let bytesRead = 0;
  const it = o.source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;

  // Read far enough to see the magic bytes.
  const head: Buffer[] = [];
  let headLen = 0;
  let ended = false;
  try {
    while (headLen < 6) {
      const r = await it.next();
      if (r.done) {
        ended = true;
        break;
      }
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      head.push(b);
      headLen += b.length;
      bytesRead += b.length;
    }
  } catch (e) {
    o.source.destroy();
    throw e instanceof TaskError ? e : new TaskError(`reading the image failed: ${(e as Error).message}`);
  }
  const detected = detectCompression(Buffer.concat(head));
  try {
    if (headLen === 0) throw new TaskError('the image is empty (0 bytes); nothing was written');
    preflight(detected, o.totalBytes, o.targetSize, o.target);
  } catch (e) {
    o.source.destroy();
    throw e;
  }
  // preflight has refused every other compression.
  const compression = detected === 'gzip' ? 'gzip' : 'none';

  async function* counted(): AsyncGenerator<Buffer> {
    yield* head;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      bytesRead += b.length;
      yield b;
    }
  }

  const fh = await openTarget(o.target, o.create ?? false).catch((e: unknown) => {
    o.source.destroy();
    throw e;
  });
  const writer = new BlockWriter(fh, o.target, o.targetSize);
  const hash = createHash('sha256');
  let lastEmit = started;
  const emit = () => {
    const p = progressAt(bytesRead, o.totalBytes, now() - started);
    o.onProgress?.({ bytesDone: bytesRead, bytesWritten: writer.pos, ...(o.totalBytes === undefined ? {} : { bytesTotal: o.totalBytes }), ...p });
  };

  const sink = async (src: AsyncIterable<Buffer>) => {
    for await (const chunk of src) {
      if (o.signal.aborted) throw o.signal.reason;
      hash.update(chunk);
      await writer.push(chunk);
      const t = now();
      if (o.onProgress && t - lastEmit >= PROGRESS_INTERVAL_MS) {
        lastEmit = t;
        emit();
      }
    }
    await writer.flush();
  };

  // A read stuck on the network must end when the task is stopped, not at the next chunk.
  const onAbort = () => o.source.destroy(o.signal.reason instanceof Error ? o.signal.reason : new Error(String(o.signal.reason)));
  o.signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (o.signal.aborted) throw o.signal.reason;
    await sink(compression === 'gzip' ? gunzip(counted()) : counted());
    if (o.totalBytes !== undefined && bytesRead !== o.totalBytes) {
      throw new TaskError(`the image is truncated: read ${bytesRead} of ${o.totalBytes} bytes; the target ${o.target} is incomplete, deploy again`);
    }
    await fh.datasync();
  } catch (e) {
    o.source.destroy();
    throw explain(e, o, writer.pos);
  } finally {
    o.signal.removeEventListener('abort', onAbort);
    await fh.close().catch(() => undefined);
  }

  const digest = hash.digest('hex');
  if (o.sha256 !== undefined && o.sha256.toLowerCase() !== digest) {
    throw new TaskError(
      `sha256 mismatch: expected ${o.sha256.toLowerCase()}, got ${digest} for the ${formatBytes(writer.pos)} written to ${o.target}; ` +
        'the image is corrupt or the checksum is wrong, do not boot this target; deploy again with the right image',
    );
  }
  if (o.onProgress) {
    const total = o.totalBytes ?? bytesRead;
    o.onProgress({ bytesDone: bytesRead, bytesTotal: total, bytesWritten: writer.pos, ...progressAt(bytesRead, total, now() - started), percent: 100, etaSeconds: 0 });
  }
  return { compression, bytesRead, bytesWritten: writer.pos, sha256: digest };
}

/** Turns stream errors into messages that say which side failed. */
function explain(e: unknown, o: CopyOptions, written: number): TaskError {
  if (e instanceof TaskError) return e;
  const err = e as NodeJS.ErrnoException;
  const at = `after writing ${formatBytes(written)} to ${o.target}; the target is incomplete`;
  if (o.signal.aborted) {
    const reason = o.signal.reason instanceof Error ? o.signal.reason.message : String(o.signal.reason ?? 'aborted');
    return new TaskError(`deploy-image stopped (${reason}) ${at}`);
  }
  if (typeof err.code === 'string' && err.code.startsWith('Z_')) {
    return new TaskError(`the image is not a valid gzip stream (${err.message}) ${at}; check the image file`);
  }
  // node reports a response cut short by the server as a bare "aborted".
  const cut = err.code === 'ECONNRESET' || err.message === 'aborted';
  const cause = err.cause instanceof TaskError ? err.cause.message : cut ? 'the connection closed before the end of the image' : err.message;
  return new TaskError(`reading the image failed (${cause}) ${at}`);
}
