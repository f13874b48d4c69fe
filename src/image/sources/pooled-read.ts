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

/** Checked as it is taken: `ranges` may be produced as they are read. */
function checked(r: ByteRange): ByteRange {
  if (!Number.isSafeInteger(r.start) || r.start < 0 || !(r.end >= r.start)) throw new RangeError(`invalid range ${r.start}-${r.end}`);
  return r;
}

/**
 * The bytes of `ranges` of `path`, in order, each chunk tagged with the index of its range. Each
 * chunk is a view of a reused buffer: it is valid only until the consumer asks for the next one
 * (copy what must outlive that). A bounded range the file ends inside of is an error: the file
 * was truncated while it was read. `ranges` is taken one at a time, as the reads reach it: the
 * next one when the last read of the one before has returned, before that chunk is handed on.
 */
export async function* readRanges(path: string, ranges: Iterable<ByteRange>, signal?: AbortSignal, readSize = READ_SIZE): AsyncGenerator<{ range: number; chunk: Buffer }> {
  signal?.throwIfAborted();
  const it = ranges[Symbol.iterator]();
  const take = (): ByteRange | undefined => {
    const r = it.next();
    return r.done ? undefined : checked(r.value);
  };
  // The range read now: the k-th, from `pos`.
  let k = 0;
  let range = take();
  let pos = range?.start ?? 0;
  const fh = await open(path, 'r');
  const bufs: [Buffer, Buffer] = [Buffer.allocUnsafe(readSize), Buffer.allocUnsafe(readSize)];
  let i: 0 | 1 = 0;
  const readAt = (buf: Buffer) => fh.read(buf, 0, Math.min(readSize, (range as ByteRange).end - pos), pos);
  const nextRange = () => {
    k++;
    range = take();
    pos = range?.start ?? pos;
  };
  /** Moves to the next range with bytes left to read; false after the last. */
  const advance = (): boolean => {
    while (range && pos >= range.end) nextRange();
    return range !== undefined;
  };
  let pending: Promise<{ bytesRead: number }> | undefined;
  try {
    pending = advance() ? readAt(bufs[0]) : undefined;
    while (pending) {
      const { bytesRead } = await pending;
      pending = undefined;
      const r = range as ByteRange;
      if (bytesRead === 0) {
        if (r.end !== Infinity) throw new Error(`${path} ended at byte ${pos}, inside bytes ${r.start}-${r.end}: it was truncated while it was read`);
        nextRange();
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

/**
 * Reads byte ranges, in order, each chunk tagged with the index of its range (as `readRanges`);
 * `ranges` is taken as it is reached. `readSize` is how much a local file's reads take at a time.
 */
export type RangeReader = (ranges: Iterable<ByteRange>, readSize?: number) => AsyncIterable<{ range: number; chunk: Buffer }>;

/**
 * `ranges` of a source that can seek and read into reused buffers (`openPooled`): one request
 * per range, for exactly its bytes. Chunks are valid until the next one is asked for.
 */
export async function* sourceRanges(source: Source, ranges: Iterable<ByteRange>, signal?: AbortSignal): AsyncGenerator<{ range: number; chunk: Buffer }> {
  const openPooled = source.openPooled?.bind(source);
  if (!openPooled || !source.seekable) throw new Error(`${source.display} cannot be read by ranges`);
  let k = -1;
  for (const r of ranges) {
    k++;
    const { start, end } = checked(r);
    if (end <= start) continue;
    let got = start;
    for await (const chunk of await openPooled(start, signal, end === Infinity ? undefined : end)) {
      got += chunk.length;
      yield { range: k, chunk };
    }
    if (end !== Infinity && got < end) throw new Error(`${source.display} ended at byte ${got}, inside bytes ${start}-${end}: it changed while it was read`);
  }
}
