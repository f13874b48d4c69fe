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
import { formatBytes } from '../format.ts';
import { openImage } from './open-image.ts';
import type { OpenedImage } from './open-image.ts';
import { Meter } from './progress-meter.ts';
import { Walker, checksumAlgo, spansMeet, spansOf } from './range-walker.ts';
import type { Span } from './range-walker.ts';
import type { Target } from './target.ts';
import type { Bmap, ChecksumType, Compression, Source } from './types.ts';
import { POOL_SLOW_SOURCE, WRITE_SIZE, Writer } from './write-pool.ts';

export { WRITE_SIZE };

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

const describeSpan = (s: Span) =>
  Number.isFinite(s.end) ? `blocks ${s.first}-${s.last} (bytes ${s.start}-${s.end - 1})` : `the image from byte ${s.start}`;

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
    // The stored bytes are needed for their hash, and for an ETA when only the compressed size is
    // known (no bmap); otherwise a decompressor may read a local image file itself.
    const onRaw =
      srcHash || !bmap
        ? (b: Buffer) => {
            srcHash?.update(b);
            srcBytes += b.length;
            if (meter) meter.srcDone += b.length;
          }
        : undefined;
    // Bytes outside the spans still to write are never looked at, unless a whole-image hash needs them.
    const needed = spans && !o.sha256 && !srcHash ? spansMeet(spans.filter((s) => !identical.has(s))) : undefined;
    img = await openImage(source, 0, undefined, signal, { onRaw, needed, imageSize: bmap?.imageSize });
    if (img.holdsAhead) writer.capPool(POOL_SLOW_SOURCE);
    const compression = img.compression;
    log(`image ${source.display}: ${compression === 'none' ? 'not compressed' : `${compression}-compressed`}${img.decoder ? ` (${img.decoder})` : ''}${bmap ? `, bmap maps ${formatBytes(mappedBytes ?? 0)} of ${formatBytes(bmap.imageSize)}` : ', no bmap: writing every byte'}`);
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
          img = await openImage(source, next.start, 'none', signal);
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
        img = await openImage(source, offset, compression, signal, { imageSize: bmap?.imageSize });
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
