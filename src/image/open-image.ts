// Opening an image source: detects the compression and yields the decompressed bytes with backpressure, kept apart from what the copy does with them.
import type { Duplex } from 'node:stream';
import { open } from 'node:fs/promises';
import { decompressor, drainedOrClosed, hasGzipTool, readsFileItself, toolChunks } from './decompress/index.ts';
import { gzipEndsWithImage } from './decompress/gzip-trailer.ts';
import { readPooled, readRanges, sourceRanges, type RangeReader } from './sources/pooled-read.ts';
import { DETECT_HEAD_BYTES, detectCompression } from './decompress/detect.ts';
import { laneCount, xzLanes } from './decompress/xz-lanes.ts';
import { readXzTail, type XzTail } from './decompress/xz-source.ts';
import type { Compression, Source } from './types.ts';

export interface OpenedImage {
  compression: Compression;
  chunks: AsyncIterable<Buffer>;
  destroy(err?: Error): void;
  /** How it is decompressed, when that is worth a log line. */
  decoder?: string;
  /** It holds megabytes of the image ahead itself (xz lanes): the writer needs fewer buffers. */
  holdsAhead?: boolean;
}

/** The layout of an .xz image whose blocks can be decompressed side by side, if it has one. */
async function multiBlockXz(source: Source, signal: AbortSignal | undefined): Promise<XzTail | undefined> {
  let tail: XzTail | undefined;
  try {
    tail = await readXzTail(source, signal);
  } catch (e) {
    throw new Error(`reading the block index at the end of the image ${source.display} failed: ${(e as Error).message}`);
  }
  return tail && laneCount(tail.layout) > 1 ? tail : undefined;
}

export interface OpenOptions {
  /** Sees every byte as stored; without it, a decompressor may read a local file itself. */
  onRaw?: (b: Buffer) => void;
  /** Bytes for which it is false may read as zeros (an .xz block that holds nothing else is not decompressed). */
  needed?: (start: number, end: number) => boolean;
  /** The decompressed size, when known (the bmap's): lets a .gz image go through igzip. */
  imageSize?: number;
}

/**
 * Opens the source at `offset` and returns its decompressed bytes. With `known` undefined the
 * compression is detected from the first bytes. The chunks of a local or pooled (plain http)
 * raw image are views of reused buffers, valid until the next one is asked for.
 */
export async function openImage(
  source: Source,
  offset: number,
  known: Compression | undefined,
  signal: AbortSignal | undefined,
  { onRaw, needed, imageSize }: OpenOptions = {},
): Promise<OpenedImage> {
  const local = source.localPath;
  let xz: XzTail | undefined;
  let gz: GzipChoice | undefined;
  if (local !== undefined) {
    const compression = known ?? detectCompression(await readHead(source, local, offset));
    if (compression === 'none') return { compression, ...pooledChunks(source, local, offset, signal, onRaw) };
    if (compression === 'xz' && offset === 0) xz = await multiBlockXz(source, signal);
    if (compression === 'gzip') gz = await chooseGzip(source, offset, imageSize, signal);
    if (!onRaw && xz) return xzImage(xz, (r, size) => readRanges(local, r, signal, size), needed);
    if (!onRaw && (readsFileItself(compression) || gz?.igzip) && offset === 0) {
      const tool = toolChunks(compression, local);
      return { compression, chunks: tool.chunks, destroy: tool.stop, decoder: gz?.decoder };
    }
    known = compression;
  }
  let raw: RawInput;
  try {
    raw = await openRaw(source, offset, signal);
  } catch (e) {
    throw new Error(`opening the image ${source.display}${offset > 0 ? ` at byte ${offset}` : ''} failed: ${(e as Error).message}`);
  }
  const { it, pooled } = raw;
  const next = async (): Promise<Buffer | undefined> => {
    let r: IteratorResult<Buffer | string>;
    try {
      r = await it.next();
    } catch (e) {
      throw new Error(`reading the image ${source.display} failed: ${(e as Error).message}`);
    }
    if (r.done) return undefined;
    const b = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    onRaw?.(b);
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
        // A pooled chunk is gone once the next is asked for: copy the last one (the others are copies already).
        if (pooled && head.length > 0) head[head.length - 1] = Buffer.from(head[head.length - 1] as Buffer);
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

  if (compression === 'xz' && offset === 0 && local === undefined) {
    try {
      xz = await multiBlockXz(source, signal);
    } catch (e) {
      raw.destroy();
      throw e;
    }
  }
  if (xz && !onRaw && pooled && source.seekable) {
    // Each lane asks for its own blocks, as it reads a local file's: none has to hold a whole
    // block that arrived in the shared stream while it was busy, and blocks of holes are not
    // even downloaded. The stream opened to look at the first bytes is closed.
    raw.destroy();
    return xzImage(xz, (r) => sourceRanges(source, r, signal), needed);
  }
  if (xz) {
    const img = xzImage(xz, rawChunks(), needed, pooled);
    return {
      ...img,
      destroy: (err) => {
        raw.destroy(err);
        img.destroy(err);
      },
    };
  }
  if (compression === 'gzip' && gz === undefined) {
    try {
      gz = await chooseGzip(source, offset, imageSize, signal);
    } catch (e) {
      raw.destroy();
      throw e;
    }
  }
  const decoder = gz?.decoder;
  if (readsFileItself(compression) || gz?.igzip) {
    // Pooled: the program's stdin is written chunk by chunk, each completed before the next is read.
    let tool: ReturnType<typeof toolChunks>;
    try {
      tool = toolChunks(compression, rawChunks(), { reusedInput: pooled });
    } catch (e) {
      raw.destroy();
      throw e;
    }
    return {
      compression,
      chunks: tool.chunks,
      destroy: (err) => {
        raw.destroy(err);
        tool.stop();
      },
      decoder,
    };
  }
  let dec: Duplex;
  try {
    dec = decompressor(compression, { reusedInput: pooled, gzipTool: gz?.igzip }).stream;
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
        // A reused buffer must be taken in whole before the next read overwrites it.
        if (pooled) await new Promise<void>((r) => out.write(c, () => r()));
        else if (!out.write(c)) await drainedOrClosed(out);
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
    decoder,
  };
}

/** How a .gz image is decompressed, and the log's words for it. */
interface GzipChoice {
  igzip: boolean;
  decoder: string;
}

/** igzip or node's zlib for a .gz image opened at `offset`; why zlib is said, as a slower copy than it could be is worth knowing about. */
async function chooseGzip(source: Source, offset: number, imageSize: number | undefined, signal: AbortSignal | undefined): Promise<GzipChoice> {
  if (!hasGzipTool()) return { igzip: false, decoder: "node's zlib; igzip, about 1.4 times as fast, is in the Debian package isal" };
  const zlib = { igzip: false, decoder: "node's zlib: igzip takes a .gz image only with a bmap and a file that ends with the image's size" };
  if (offset !== 0 || imageSize === undefined) return zlib;
  try {
    return (await gzipEndsWithImage(source, imageSize, signal)) ? { igzip: true, decoder: 'igzip' } : zlib;
  } catch (e) {
    throw new Error(`reading the last bytes of the image ${source.display} failed: ${(e as Error).message}`);
  }
}

/** A multi-block .xz image decompressed in lanes (xz-lanes.ts). */
function xzImage(xz: XzTail, input: RangeReader | AsyncIterable<Buffer>, needed?: (start: number, end: number) => boolean, inputReused = false): OpenedImage {
  const dec = xzLanes(xz.layout, xz.trailer, input, laneCount(xz.layout), { needed, inputReused });
  const blocks = xz.layout.blocks.length;
  return {
    compression: 'xz',
    chunks: dec.chunks,
    destroy: () => dec.stop(),
    holdsAhead: true,
    decoder: `${dec.lanes} ${dec.program} processes side by side, ${blocks} blocks${dec.skipped ? `, ${dec.skipped} of them only holes: not decompressed` : ''}`,
  };
}

/** The stored bytes as an iterator, from a stream or as pooled chunks (`Source.openPooled`). */
interface RawInput {
  it: AsyncIterator<Buffer | string>;
  /** Chunks are views of reused buffers, valid until the next is asked for. */
  pooled: boolean;
  /** Ends the download, also while a read waits for the network. */
  destroy(err?: Error): void;
}

async function openRaw(source: Source, offset: number, signal: AbortSignal | undefined): Promise<RawInput> {
  if (source.localPath === undefined && source.openPooled) {
    // Ours, so that destroy() also ends a read that waits for the network.
    const ac = new AbortController();
    const gen = await source.openPooled(offset, signal ? AbortSignal.any([signal, ac.signal]) : ac.signal);
    return {
      it: gen,
      pooled: true,
      destroy: (err) => {
        ac.abort(err ?? new Error('stopped'));
        void gen.return(undefined).catch(() => undefined);
      },
    };
  }
  const stream = await source.open(offset, signal);
  return { it: stream[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>, pooled: false, destroy: (err) => stream.destroy(err) };
}

async function readHead(source: Source, path: string, offset: number): Promise<Buffer> {
  try {
    const fh = await open(path, 'r');
    try {
      const { buffer, bytesRead } = await fh.read(Buffer.alloc(DETECT_HEAD_BYTES), 0, DETECT_HEAD_BYTES, offset);
      return buffer.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new Error(`opening the image ${source.display}${offset > 0 ? ` at byte ${offset}` : ''} failed: ${(e as Error).message}`);
  }
}

function pooledChunks(source: Source, path: string, offset: number, signal: AbortSignal | undefined, onRaw?: (b: Buffer) => void): Omit<OpenedImage, 'compression'> {
  async function* chunks(): AsyncGenerator<Buffer> {
    const reads = readPooled(path, offset, signal);
    try {
      for (;;) {
        let r: IteratorResult<Buffer>;
        try {
          r = await reads.next();
        } catch (e) {
          throw new Error(`reading the image ${source.display} failed: ${(e as Error).message}`);
        }
        if (r.done) return;
        onRaw?.(r.value);
        yield r.value;
      }
    } finally {
      // Also when the consumer stops early: closes the file once a read in flight is done.
      await reads.return(undefined);
    }
  }
  const it = chunks();
  return { chunks: it, destroy: () => void it.return(undefined).catch(() => undefined) };
}
