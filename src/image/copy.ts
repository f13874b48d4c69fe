// The image engine: source -> decompressor -> bmap walk -> positional writes.
//
// Where bmaptool runs a reader thread, a bounded queue and a writer, this runs
// three stages that overlap without threads of our own: decompression in a
// child process (or zlib in the threadpool), hashing and copying into aligned
// 4 MiB buffers on the main thread, and up to two buffers being written by
// the threadpool meanwhile. Memory is bounded by the buffer pool plus the stream
// high-water marks (a few tens of MiB) whatever the image size; when all
// buffers are in flight the walk waits, and backpressure reaches the source.
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import type { Duplex, Readable } from 'node:stream';
import { formatBytes } from '../format.ts';
import { decompressor } from './decompress/index.ts';
import { DETECT_HEAD_BYTES, detectCompression } from './decompress/detect.ts';
import type { Target } from './target.ts';
import type { Bmap, ChecksumType, Compression, Source } from './types.ts';

/** Writes are cut at multiples of this (absolute target offsets), so devices see large aligned writes. */
export const WRITE_SIZE = 4 * 1024 * 1024;
/** One buffer filling, two being written (12 MiB). */
const POOL = 3;
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
const PROGRESS_MS = 250;
/** Time constant of the rate smoothing. */
const RATE_TAU_S = 3;
/** Unmapped gaps below this are zeroed with plain writes (a child process per gap costs more) and not discarded. */
const HOLE_INLINE = 1024 * 1024;
/** A raw image is re-opened past unmapped gaps at least this long instead of reading through them. */
const SEEK_GAP = 4 * 1024 * 1024;

export interface CopyProgress {
  /** Mapped bytes written (bytes written of the image without a bmap). */
  bytesDone: number;
  bytesTotal?: number;
  /** Bytes per second, smoothed. */
  rate: number;
  etaSeconds?: number;
  /** 'comparing': skipIdentical reads the mapped ranges already on the target (bytesDone counts bytes read there). */
  phase: 'comparing' | 'writing' | 'verifying' | 'repairing';
  /** While writing with skipIdentical: mapped bytes found identical on the target, included in bytesDone. */
  bytesSkipped?: number;
}

export interface CopyOptions {
  source: Source;
  bmap?: Bmap;
  target: Target;
  /** Unmapped blocks: left as they are (default), discarded, or zeroed. Needs a bmap. */
  holes?: 'skip' | 'discard' | 'zero';
  /** Check each range's checksum while writing; default: when the bmap has checksums. */
  verify?: boolean;
  /** sha256 (hex) of the whole decompressed image, checked at the end. */
  sha256?: string;
  /**
   * sha256 (hex) of the source's bytes as stored (the compressed file, as in a `.sha256sum` sidecar),
   * checked at the end. Every source byte is then read, past the last mapped range too.
   */
  sourceSha256?: string;
  /**
   * Reads each mapped range from the target first and writes only those whose checksum differs
   * (needs a bmap with range checksums). A raw image on a seekable source is not even read
   * where the target already holds it; a compressed one is decompressed, but not written there.
   */
  skipIdentical?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  onLog?: (msg: string) => void;
}

export interface CopyResult {
  /** Bytes written to the target, repairs included, zeroed holes not. */
  bytesWritten: number;
  /** Bytes the bmap maps (the image size without a bmap). */
  mappedBytes: number;
  compression: Compression;
  repairedRanges: number;
  /** skipIdentical: mapped ranges that the target already held, not written. */
  skippedRanges: number;
  /** skipIdentical: the bytes of those ranges. */
  skippedBytes: number;
  seconds: number;
}

/** A bmap range as byte offsets; the last block of an image may be partial. */
interface Span {
  first: number;
  last: number;
  start: number;
  end: number;
  checksum?: string;
}

const describeSpan = (s: Span) =>
  Number.isFinite(s.end) ? `blocks ${s.first}-${s.last} (bytes ${s.start}-${s.end - 1})` : `the image from byte ${s.start}`;

function spansOf(bmap: Bmap): Span[] {
  const out: Span[] = [];
  let prevEnd = 0;
  for (const r of bmap.ranges) {
    const start = r.first * bmap.blockSize;
    const end = Math.min((r.last + 1) * bmap.blockSize, bmap.imageSize);
    if (r.last < r.first || start < prevEnd || start >= bmap.imageSize) {
      throw new Error(`the bmap is invalid: range ${r.first}-${r.last} is out of order, overlapping or beyond the image size ${bmap.imageSize}`);
    }
    out.push({ first: r.first, last: r.last, start, end, ...(r.checksum ? { checksum: r.checksum.toLowerCase() } : {}) });
    prevEnd = end;
  }
  return out;
}

const HEX_LENGTH: Record<number, ChecksumType> = { 64: 'sha256', 40: 'sha1', 32: 'md5' };

/** The per-range hash; bmap 1.2 files carry sha1 without naming it, so the length decides then. */
function checksumAlgo(bmap: Bmap): ChecksumType | undefined {
  const sample = bmap.ranges.find((r) => r.checksum)?.checksum;
  if (!sample) return undefined;
  return bmap.checksumType ?? HEX_LENGTH[sample.length];
}

/** Coalesces pieces into aligned buffers and keeps up to POOL-1 positional writes in flight. */
class Writer {
  private free: Buffer[] = [];
  private allocated = 0;
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
  ) {}

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
    if (!buf && this.allocated < POOL) {
      buf = Buffer.allocUnsafe(WRITE_SIZE);
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

/** Walks decompressed bytes against the spans: unmapped bytes are dropped, mapped ones hashed and written. */
class Walker {
  private idx = 0;
  private hash: Hash | undefined;
  readonly bad: { span: Span; got: string }[] = [];

  constructor(
    private readonly spans: Span[],
    private readonly writer: Writer,
    private readonly algo: ChecksumType | undefined,
    private readonly limit: number,
    private readonly targetPath: string,
    /** Spans the target already holds: passed over without writing (their bytes are dropped like unmapped ones). */
    private readonly skip: ReadonlySet<Span> = new Set(),
    private readonly onSkip: (s: Span) => void = () => undefined,
  ) {
    this.passSkipped();
  }

  get done(): boolean {
    return this.idx >= this.spans.length;
  }

  /** The first span not yet completely seen. */
  get current(): Span | undefined {
    return this.spans[this.idx];
  }

  async feed(chunk: Buffer, pos: number): Promise<void> {
    let off = 0;
    while (off < chunk.length && this.idx < this.spans.length) {
      const s = this.spans[this.idx] as Span;
      const at = pos + off;
      if (at < s.start) {
        off += Math.min(s.start - at, chunk.length - off);
        continue;
      }
      const n = Math.min(s.end - at, chunk.length - off);
      if (at + n > this.limit) {
        throw new Error(
          `the image is larger than the target ${this.targetPath} (${formatBytes(this.limit)}): it goes on past byte ${this.limit}; use a bigger disk or a smaller image`,
        );
      }
      const piece = chunk.subarray(off, off + n);
      if (this.algo && s.checksum) {
        this.hash ??= createHash(this.algo);
        this.hash.update(piece);
      }
      // Hashing the next piece overlaps with the writes put() has in flight.
      await this.writer.put(piece, at);
      off += n;
      if (at + n === s.end) this.endSpan(s);
    }
  }

  private endSpan(s: Span): void {
    if (this.hash && s.checksum) {
      const got = this.hash.digest('hex');
      if (got !== s.checksum) this.bad.push({ span: s, got });
    }
    this.hash = undefined;
    this.idx++;
    this.passSkipped();
  }

  private passSkipped(): void {
    for (let s = this.spans[this.idx]; s && this.skip.has(s); s = this.spans[++this.idx]) this.onSkip(s);
  }
}

/** Smoothed rate and ETA, reported every PROGRESS_MS. */
class Meter {
  done = 0;
  srcDone = 0;
  /** Identical bytes not written (skipIdentical); reported while writing. */
  skipped: number | undefined;
  private rate = 0;
  private srcRate = 0;
  private last = performance.now();
  private lastDone = 0;
  private lastSrc = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly cb: ((p: CopyProgress) => void) | undefined,
    private phase: CopyProgress['phase'],
    private total: number | undefined,
    /** Compressed size: gives an ETA when the decompressed size is unknown. */
    private readonly srcTotal: number | undefined,
  ) {
    if (cb) {
      this.timer = setInterval(() => this.emit(), PROGRESS_MS);
      this.timer.unref();
    }
  }

  restart(phase: CopyProgress['phase'], total: number): void {
    this.phase = phase;
    this.total = total;
    this.done = 0;
    this.skipped = undefined;
    this.lastDone = 0;
    this.rate = 0;
  }

  private emit(final = false): void {
    if (!this.cb) return;
    const now = performance.now();
    const dt = (now - this.last) / 1000;
    // Skipped bytes count as done but not towards the rate: they cost nothing.
    const work = this.done - (this.skipped ?? 0);
    if (dt > 0) {
      const a = this.rate === 0 ? 1 : 1 - Math.exp(-dt / RATE_TAU_S);
      this.rate += a * ((work - this.lastDone) / dt - this.rate);
      this.srcRate += (this.srcRate === 0 ? 1 : a) * ((this.srcDone - this.lastSrc) / dt - this.srcRate);
    }
    this.last = now;
    this.lastDone = work;
    this.lastSrc = this.srcDone;
    let eta: number | undefined;
    if (final) eta = 0;
    else if (this.total !== undefined && this.rate > 0) eta = Math.max(0, (this.total - this.done) / this.rate);
    else if (this.total === undefined && this.srcTotal !== undefined && this.srcRate > 0) eta = Math.max(0, (this.srcTotal - this.srcDone) / this.srcRate);
    this.cb({
      bytesDone: this.done,
      ...(this.total !== undefined ? { bytesTotal: this.total } : {}),
      rate: Math.max(0, this.rate),
      ...(eta !== undefined ? { etaSeconds: eta } : {}),
      phase: this.phase,
      ...(this.skipped !== undefined && this.phase === 'writing' ? { bytesSkipped: this.skipped } : {}),
    });
  }

  stop(final: boolean): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (final) {
      this.total ??= this.done;
      this.emit(true);
    }
  }
}

interface OpenedImage {
  compression: Compression;
  chunks: AsyncIterable<Buffer>;
  destroy(err?: Error): void;
}

function whenWritable(w: Duplex): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done).off('close', done);
      resolve();
    };
    w.on('drain', done).on('close', done);
  });
}

/**
 * Opens the source at `offset` and returns its decompressed bytes. With
 * `known` undefined the compression is detected from the first bytes.
 */
async function openImage(source: Source, offset: number, known: Compression | undefined, signal: AbortSignal | undefined, onRaw: (b: Buffer) => void): Promise<OpenedImage> {
  let raw: Readable;
  try {
    raw = await source.open(offset, signal);
  } catch (e) {
    throw new Error(`opening the image ${source.display}${offset > 0 ? ` at byte ${offset}` : ''} failed: ${(e as Error).message}`);
  }
  const it = raw[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const next = async (): Promise<Buffer | undefined> => {
    let r: IteratorResult<Buffer | string>;
    try {
      r = await it.next();
    } catch (e) {
      throw new Error(`reading the image ${source.display} failed: ${(e as Error).message}`);
    }
    if (r.done) return undefined;
    const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    onRaw(b);
    return b;
  };
  const head: Buffer[] = [];
  let ended = false;
  if (known === undefined) {
    // Until the caller holds the stream, an abort must still end a stalled read here.
    const stop = () => raw.destroy(new Error('stopped'));
    signal?.addEventListener('abort', stop, { once: true });
    try {
      let len = 0;
      // 16 bytes decide every format; a zstd/lz4 skippable frame first needs more to see past it.
      const want = () => (len >= 4 && (head[0]?.[0] ?? 0) >> 4 === 5 ? DETECT_HEAD_BYTES : 16);
      while (len < want()) {
        const b = await next();
        if (!b) {
          ended = true;
          break;
        }
        head.push(b);
        len += b.length;
      }
    } catch (e) {
      raw.destroy();
      throw e;
    } finally {
      signal?.removeEventListener('abort', stop);
    }
  }
  const compression = known ?? detectCompression(Buffer.concat(head));
  async function* rawChunks(): AsyncGenerator<Buffer> {
    try {
      yield* head;
      if (ended) return;
      for (let b = await next(); b; b = await next()) yield b;
    } finally {
      // Stopped early (enough read, or a failure downstream): release the connection or file.
      raw.destroy();
    }
  }
  if (compression === 'none') return { compression, chunks: rawChunks(), destroy: (err) => raw.destroy(err) };

  let dec: Duplex;
  try {
    dec = decompressor(compression).stream;
  } catch (e) {
    raw.destroy();
    throw e;
  }
  const out = dec;
  // Feeds the decompressor with backpressure; a source failure fails the decompressed stream.
  void (async () => {
    try {
      for await (const c of rawChunks()) {
        if (out.destroyed) return;
        if (!out.write(c)) await whenWritable(out);
      }
      if (!out.destroyed) out.end();
    } catch (e) {
      out.destroy(e as Error);
    }
  })();
  return {
    compression,
    chunks: out,
    destroy: (err) => {
      raw.destroy(err);
      out.destroy(err);
    },
  };
}

/** Writes an image onto a target; see CopyOptions. Rejects with a message that says what, where and what to do. */
export async function copyImage(o: CopyOptions): Promise<CopyResult> {
  const t0 = performance.now();
  const { source, bmap, target, signal } = o;
  const log = o.onLog ?? (() => undefined);
  signal?.throwIfAborted();

  // Everything that can be checked is checked before the first write.
  const spans = bmap ? spansOf(bmap) : undefined;
  const algo = bmap ? checksumAlgo(bmap) : undefined;
  const verify = o.verify ?? algo !== undefined;
  if (o.verify && bmap && !algo) log('the bmap has no checksums: the written data cannot be verified');
  if (bmap && bmap.imageSize > target.size) {
    throw new Error(
      `the image (${formatBytes(bmap.imageSize)}) does not fit on ${target.path} (${formatBytes(target.size)}); nothing was written. Use a bigger disk or a smaller image`,
    );
  }
  if (o.sha256 !== undefined && !/^[0-9a-f]{64}$/i.test(o.sha256)) throw new Error(`the expected sha256 "${o.sha256}" is not 64 hex digits`);
  if (o.sourceSha256 !== undefined && !/^[0-9a-f]{64}$/i.test(o.sourceSha256)) {
    throw new Error(`the expected sha256 of the image file "${o.sourceSha256}" is not 64 hex digits`);
  }
  const srcSize = await source.size().catch(() => undefined);
  const mappedBytes = spans ? spans.reduce((n, s) => n + s.end - s.start, 0) : undefined;
  const skipIdentical = o.skipIdentical === true && spans !== undefined && algo !== undefined && spans.some((s) => s.checksum);
  if (o.skipIdentical && !skipIdentical) {
    log(`cannot skip identical ranges: ${bmap ? 'the bmap has no range checksums' : 'there is no bmap'}; writing everything`);
  }

  let meter: Meter | undefined;
  const writer = new Writer(target, (n) => {
    if (meter) meter.done += n;
  });
  let bytesWritten = 0;
  let img: OpenedImage | undefined;
  const onAbort = () => img?.destroy(new Error('stopped'));
  signal?.addEventListener('abort', onAbort, { once: true });
  const incomplete = () => `the target ${target.path} is incomplete (${formatBytes(bytesWritten + writer.written)} written): do not boot it; copy again`;

  try {
    // Compared before the source is opened, so that a long comparison does not leave a download idle.
    const identical = skipIdentical ? await compareTarget(spans, algo) : new Set<Span>();
    const skippedBytes = [...identical].reduce((n, s) => n + s.end - s.start, 0);
    if (skipIdentical) {
      log(`${identical.size} of ${spans.length} mapped ranges (${formatBytes(skippedBytes)} of ${formatBytes(mappedBytes ?? 0)}) are already on ${target.path}: not written`);
    }
    const srcHash = o.sourceSha256 ? createHash('sha256') : undefined;
    let srcBytes = 0;
    img = await openImage(source, 0, undefined, signal, (b) => {
      srcHash?.update(b);
      srcBytes += b.length;
      if (meter) meter.srcDone += b.length;
    });
    const compression = img.compression;
    log(`image ${source.display}: ${compression === 'none' ? 'not compressed' : `${compression}-compressed`}${bmap ? `, bmap maps ${formatBytes(mappedBytes ?? 0)} of ${formatBytes(bmap.imageSize)}` : ', no bmap: writing every byte'}`);
    if (compression === 'none' && srcSize !== undefined) {
      if (bmap && srcSize !== bmap.imageSize) {
        throw new Error(`the image ${source.display} is ${srcSize} bytes but its bmap says ${bmap.imageSize}: the bmap belongs to another image; nothing was written`);
      }
      if (!bmap && srcSize > target.size) {
        throw new Error(`the image (${formatBytes(srcSize)}) does not fit on ${target.path} (${formatBytes(target.size)}); nothing was written. Use a bigger disk or a smaller image`);
      }
    }
    const total = mappedBytes ?? (compression === 'none' ? srcSize : undefined);
    meter = new Meter(o.onProgress, 'writing', total, compression === 'none' ? undefined : srcSize);
    if (skipIdentical) meter.skipped = 0;

    // Without a bmap the whole stream is one span with no end.
    const walkSpans = spans ?? [{ first: 0, last: 0, start: 0, end: Number.POSITIVE_INFINITY }];
    const walker = new Walker(walkSpans, writer, verify ? algo : undefined, target.size, target.path, identical, (s) => {
      if (!meter) return;
      meter.done += s.end - s.start;
      meter.skipped = (meter.skipped ?? 0) + s.end - s.start;
    });
    const whole = o.sha256 ? createHash('sha256') : undefined;
    // Past the last range only the decompressor's own integrity check is left to read for; not needed
    // when every mapped byte has been checked against a range checksum, on the way or (skipped ones)
    // on the target (bmaptool stops there too). Whole-image and whole-file hashes need every byte.
    const stopAtLastRange =
      spans !== undefined && !whole && !srcHash && (compression === 'none' || (verify && algo !== undefined && spans.every((s) => s.checksum)));
    // A raw image on a seekable source is not read through long unmapped gaps, nor through ranges the
    // target already holds: it is opened again past them.
    const canSeek = compression === 'none' && source.seekable && spans !== undefined && !whole && !srcHash;
    let pos = 0;
    reading: for (;;) {
      for await (const chunk of img.chunks as AsyncIterable<Buffer>) {
        if (signal?.aborted) break reading;
        whole?.update(chunk);
        await walker.feed(chunk, pos);
        pos += chunk.length;
        if (stopAtLastRange && walker.done) break reading;
        const next = walker.current;
        if (canSeek && next && next.start - pos >= SEEK_GAP) {
          img.destroy();
          img = await openImage(source, next.start, 'none', signal, () => undefined);
          pos = next.start;
          continue reading;
        }
      }
      break;
    }
    signal?.throwIfAborted();
    const missing = spans ? walker.current : undefined;
    if (missing) {
      throw new Error(`the image ended after ${pos} bytes, before ${describeSpan(missing)} that the bmap maps: the image is truncated or the bmap belongs to another image`);
    }
    if (!bmap && compression === 'none' && srcSize !== undefined && pos !== srcSize) {
      throw new Error(`the image ended after ${pos} of its ${srcSize} bytes: it is truncated`);
    }
    await writer.drain();
    bytesWritten += writer.written;
    writer.written = 0;
    const imageSize = bmap ? bmap.imageSize : pos;

    let repairedRanges = 0;
    if (walker.bad.length > 0) {
      const list = walker.bad.map((b) => describeSpan(b.span)).join(', ');
      if (!source.seekable) {
        throw new Error(`checksum mismatch in ${list} of ${source.display}: the data is corrupt and the source cannot be read again to repair it`);
      }
      log(`checksum mismatch in ${list}: reading ${walker.bad.length === 1 ? 'that range' : 'those ranges'} again`);
      meter.restart('repairing', walker.bad.reduce((n, b) => n + b.span.end - b.span.start, 0));
      const still = await repair(walker.bad.map((b) => b.span), compression);
      if (still.length > 0) {
        const detail = still.map((b) => `${describeSpan(b.span)} (expected ${b.span.checksum}, got ${b.got})`).join(', ');
        throw new Error(`checksum mismatch in ${detail}, also after reading the source again: the image ${source.display} is corrupt or does not match its bmap`);
      }
      repairedRanges = walker.bad.length;
      log(`repaired ${repairedRanges} range(s)`);
    }

    if (whole) {
      const got = whole.digest('hex');
      if (got !== o.sha256?.toLowerCase()) {
        throw new Error(`sha256 mismatch for the ${formatBytes(pos)} image ${source.display}: expected ${o.sha256?.toLowerCase()}, got ${got}; the image is corrupt or the checksum is wrong`);
      }
    }
    if (srcHash) {
      const got = srcHash.digest('hex');
      const want = o.sourceSha256?.toLowerCase();
      if (got !== want) {
        const reread = repairedRanges > 0 ? ` (${repairedRanges} range(s) were read again: the source delivered different bytes the first time)` : '';
        throw new Error(
          `sha256 mismatch for the image file ${source.display} as stored (${formatBytes(srcBytes)}${compression === 'none' ? '' : ` ${compression}-compressed`}): ` +
            `expected ${want}, got ${got}${reread}; the image file is corrupt, incomplete or not the one the checksum is for, and ${target.path} must not be booted`,
        );
      }
      log(`sha256 of the image file ${source.display} matches (${got})`);
    }

    if (spans && o.holes && o.holes !== 'skip') await fillHoles(spans, imageSize, o.holes);
    if (target.setSize) await target.setSize(imageSize);
    await target.sync();
    if (target.isBlockDevice) await target.rereadPartitions().catch((e: unknown) => log((e as Error).message));
    meter.stop(true);
    return {
      bytesWritten,
      mappedBytes: mappedBytes ?? pos,
      compression,
      repairedRanges,
      skippedRanges: identical.size,
      skippedBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (e) {
    img?.destroy();
    await writer.settle();
    const msg = signal?.aborted ? `copying stopped (${String((signal.reason as Error | undefined)?.message ?? signal.reason)})` : (e as Error).message;
    const wrote = bytesWritten + writer.written > 0;
    const suffix = wrote ? `; ${incomplete()}` : /nothing was written/.test(msg) ? '' : `; nothing was written to ${target.path}`;
    throw new Error(`${msg}${suffix}`, { cause: e });
  } finally {
    signal?.removeEventListener('abort', onAbort);
    meter?.stop(false);
  }

  /** Reads the bad spans again and rewrites them; returns those that still do not match. */
  async function repair(bad: Span[], compression: Compression): Promise<{ span: Span; got: string }[]> {
    const w = new Writer(target, (n) => {
      if (meter) meter.done += n;
    });
    const still: { span: Span; got: string }[] = [];
    // Raw images are read at each range's offset; compressed ones once from the start, up to the last bad range.
    const passes = compression === 'none' ? bad.map((s) => [s]) : [bad];
    try {
      for (const spansToFix of passes) {
        const first = spansToFix[0] as Span;
        const offset = compression === 'none' ? first.start : 0;
        img = await openImage(source, offset, compression, signal, () => undefined);
        const walker = new Walker(spansToFix, w, algo, target.size, target.path);
        let pos = offset;
        for await (const chunk of img.chunks as AsyncIterable<Buffer>) {
          if (signal?.aborted) break;
          await walker.feed(chunk, pos);
          pos += chunk.length;
          if (walker.done) break;
        }
        img.destroy();
        signal?.throwIfAborted();
        if (walker.current) throw new Error(`the image ended after ${pos} bytes while reading ${describeSpan(walker.current)} again`);
        still.push(...walker.bad);
      }
      await w.drain();
    } catch (e) {
      await w.settle();
      throw e;
    } finally {
      bytesWritten += w.written;
    }
    return still;
  }

  /**
   * The spans whose bytes on the target already match their bmap checksum. Reads one 4 MiB piece
   * ahead while hashing the current one. A range the target cannot read counts as different.
   */
  async function compareTarget(all: Span[], kind: ChecksumType): Promise<Set<Span>> {
    const same = new Set<Span>();
    const reading = new Meter(o.onProgress, 'comparing', all.reduce((n, s) => n + (s.checksum ? s.end - s.start : 0), 0), undefined);
    const pieces = (function* () {
      for (const span of all) {
        if (!span.checksum || span.end > target.size) continue;
        for (let at = span.start; at < span.end; at += WRITE_SIZE) yield { span, at, len: Math.min(WRITE_SIZE, span.end - at) };
      }
    })();
    const bufs = [Buffer.allocUnsafe(WRITE_SIZE), Buffer.allocUnsafe(WRITE_SIZE)];
    /** Reads `len` bytes at `at` (short only at the end of the target); never rejects. */
    const readPiece = async (buf: Buffer, at: number, len: number): Promise<number | Error> => {
      let got = 0;
      try {
        while (got < len) {
          const n = await target.read(buf.subarray(got, len), at + got);
          if (n === 0) break;
          got += n;
        }
      } catch (e) {
        return e as Error;
      }
      return got;
    };
    let reported = false;
    let hash: Hash | undefined;
    let failed: Span | undefined;
    let which = 0;
    let cur = pieces.next();
    let pending = cur.done ? undefined : readPiece(bufs[which] as Buffer, cur.value.at, cur.value.len);
    try {
      while (!cur.done && pending) {
        const { span, at, len } = cur.value;
        const got = await pending;
        signal?.throwIfAborted();
        const buf = bufs[which] as Buffer;
        cur = pieces.next();
        which ^= 1;
        pending = cur.done ? undefined : readPiece(bufs[which] as Buffer, cur.value.at, cur.value.len);
        if (at === span.start) {
          hash = createHash(kind);
          failed = undefined;
        }
        if (got instanceof Error) {
          if (!reported) log(`${got.message}: ${describeSpan(span)} is written`);
          reported = true;
          failed = span;
        } else if (got < len) {
          failed = span;
        } else if (failed !== span) {
          hash?.update(buf.subarray(0, len));
        }
        reading.done += len;
        if (at + len === span.end && failed !== span && hash?.digest('hex') === span.checksum) same.add(span);
      }
    } finally {
      reading.stop(false);
      await pending;
    }
    return same;
  }

  /** Discards or zeroes the unmapped gaps of the image; the bytes beyond the image are left alone. */
  async function fillHoles(spans: Span[], imageSize: number, mode: 'discard' | 'zero'): Promise<void> {
    const gaps: [number, number][] = [];
    let at = 0;
    for (const s of spans) {
      if (s.start > at) gaps.push([at, s.start]);
      at = s.end;
    }
    if (imageSize > at) gaps.push([at, imageSize]);
    const zeros = Buffer.alloc(HOLE_INLINE);
    let skipped = 0;
    let done = 0;
    for (const [a, b] of gaps) {
      signal?.throwIfAborted();
      if (b - a < HOLE_INLINE) {
        if (mode === 'zero') {
          await target.write(zeros.subarray(0, b - a), a);
          done++;
        } else skipped += b - a;
        continue;
      }
      done++;
      if (mode === 'zero') await target.zero(a, b);
      else {
        try {
          await target.discard(a, b);
        } catch (e) {
          log(`discarding unmapped blocks is not possible on ${target.path}, left as they are: ${(e as Error).message}`);
          return;
        }
      }
    }
    log(`${mode === 'zero' ? 'zeroed' : 'discarded'} ${done} unmapped range(s)${skipped ? ` (${formatBytes(skipped)} in gaps under ${formatBytes(HOLE_INLINE)} left as they are)` : ''}`);
  }
}
