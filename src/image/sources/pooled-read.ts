// Reading byte ranges into reused buffers: of a local file with positional reads into two
// buffers (the next read runs while the consumer works on the current chunk), or of a seekable
// network source with one bounded request per range. Nothing is allocated per chunk.
import { open } from 'node:fs/promises';
import type { Source } from '../types.ts';

/** Large reads: the consumer is a disk writer or a decompressor's pipe, and small chunks cost syscalls. */
const READ_SIZE = 1024 * 1024;

/** Bytes `start` to `end` (exclusive) of a file; `end` Infinity reads to the end of the file. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * The bytes of `ranges` of `path`, in order, each chunk tagged with the index of its range. Each
 * chunk is a view of a reused buffer: it is valid only until the consumer asks for the next one
 * (copy what must outlive that). A bounded range the file ends inside of is an error: the file
 * was truncated while it was read.
 */
export async function* readRanges(path: string, ranges: readonly ByteRange[], signal?: AbortSignal): AsyncGenerator<{ range: number; chunk: Buffer }> {
  for (const r of ranges) if (!Number.isSafeInteger(r.start) || r.start < 0 || !(r.end >= r.start)) throw new RangeError(`invalid range ${r.start}-${r.end}`);
  signal?.throwIfAborted();
  const fh = await open(path, 'r');
  const bufs: [Buffer, Buffer] = [Buffer.allocUnsafe(READ_SIZE), Buffer.allocUnsafe(READ_SIZE)];
  let i: 0 | 1 = 0;
  // The read in flight, and where it is: range `k` from `pos`.
  let k = 0;
  let pos = ranges[0]?.start ?? 0;
  const readAt = (buf: Buffer) => fh.read(buf, 0, Math.min(READ_SIZE, (ranges[k] as ByteRange).end - pos), pos);
  /** Moves to the next range with bytes left to read; false after the last. */
  const advance = (): boolean => {
    while (k < ranges.length && pos >= (ranges[k] as ByteRange).end) {
      k++;
      pos = ranges[k]?.start ?? pos;
    }
    return k < ranges.length;
  };
  let pending: Promise<{ bytesRead: number }> | undefined = advance() ? readAt(bufs[0]) : undefined;
  try {
    while (pending) {
      const { bytesRead } = await pending;
      pending = undefined;
      const range = ranges[k] as ByteRange;
      if (bytesRead === 0) {
        if (range.end !== Infinity) throw new Error(`${path} ended at byte ${pos}, inside bytes ${range.start}-${range.end}: it was truncated while it was read`);
        k++;
        pos = ranges[k]?.start ?? pos;
      }
      signal?.throwIfAborted();
      const chunk = bufs[i].subarray(0, bytesRead);
      const at = k;
      if (bytesRead > 0) pos += bytesRead;
      i = i === 0 ? 1 : 0;
      // Read ahead into the other buffer; the one just filled is the consumer's until it asks again.
      if (advance()) pending = readAt(bufs[i]);
      if (bytesRead > 0) yield { range: at, chunk };
    }
  } finally {
    // A read may still be in flight when the consumer stops early.
    await pending?.catch(() => undefined);
    await fh.close();
  }
}

/** The bytes of `path` from `offset` to its end, as `readRanges` yields them. */
export async function* readPooled(path: string, offset: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
  for await (const { chunk } of readRanges(path, [{ start: offset, end: Infinity }], signal)) yield chunk;
}

/** Reads byte ranges, in order, each chunk tagged with the index of its range (as `readRanges`). */
export type RangeReader = (ranges: readonly ByteRange[]) => AsyncIterable<{ range: number; chunk: Buffer }>;

/**
 * `ranges` of a source that can seek and read into reused buffers (`openPooled`): one request
 * per range, for exactly its bytes. Chunks are valid until the next one is asked for.
 */
export async function* sourceRanges(source: Source, ranges: readonly ByteRange[], signal?: AbortSignal): AsyncGenerator<{ range: number; chunk: Buffer }> {
  const openPooled = source.openPooled?.bind(source);
  if (!openPooled || !source.seekable) throw new Error(`${source.display} cannot be read by ranges`);
  for (let k = 0; k < ranges.length; k++) {
    const { start, end } = ranges[k] as ByteRange;
    if (end <= start) continue;
    let got = start;
    for await (const chunk of await openPooled(start, signal, end === Infinity ? undefined : end)) {
      got += chunk.length;
      yield { range: k, chunk };
    }
    if (end !== Infinity && got < end) throw new Error(`${source.display} ended at byte ${got}, inside bytes ${start}-${end}: it changed while it was read`);
  }
}
