// Decompressing a multi-block .xz image on several cores with bounded memory. `xz -T0` does it
// too, but it holds whole blocks in and out for every thread: 141 MB for a 2 GiB -6 image on 2
// cores, more on more cores. Here each lane is a single-threaded decompressor (about 10-15 MB)
// fed its share of the blocks, each wrapped as a stream of its own (header, the block as stored,
// an index of one record and a footer, so the decompressor still checks every block and its check
// value). The lanes' output is taken back in block order; a lane that runs ahead keeps at most its
// share of LOOKAHEAD_BUDGET, in reused 1 MiB segments that never span two blocks.
import { availableParallelism } from 'node:os';
import { ToolExitError, toolChunks } from './index.ts';
import { onPath } from '../../which.ts';
import { BufferPool } from '../buffer-pool.ts';
import type { ByteRange, RangeReader } from '../sources/pooled-read.ts';
import { streamHeader, streamTail, XZ_HEADER_MAGIC, type XzLayout } from './xz-index.ts';

/**
 * What lanes that run ahead of the one being read may hold in all (the image's bytes,
 * decompressed), besides their output sockets (LANE_SOCKET_BUFFER). With n lanes busy, those
 * ahead are on average half way through their blocks: (n - 1) / 2 blocks; 2 lanes of `xz -6 -T0`
 * blocks (24 MiB) need 12 MiB, and the rest is slack for uneven lanes. Measured over HTTP with the
 * benchmark's image (2 lanes of xz, 4 runs each): 24 MiB 20.2-21.6 s at 117-119 MB node RSS,
 * 18 MiB 20.7-21.7 s at 111-113 MB, 12 MiB 20.5-22.2 s at 104-105 MB. Later, 2 lanes of 7zz onto a
 * loop device on tmpfs, 3 runs each: 48 MiB (and 27 MiB more RSS) only 0.5 s faster than 18.
 */
export const LOOKAHEAD_BUDGET = 14 * 1024 * 1024;
/** The lane being read keeps at most this much ready: the consumer takes it far faster than a lane makes it. */
const CURRENT_CAP = 2 * 1024 * 1024;
/** A lane's reads of a local file: it takes its compressed input at 20-30 MB/s. */
const LANE_READ = 256 * 1024;
const SEGMENT = 1024 * 1024;
/** What a skipped block reads as: never written anywhere (its bytes are all in holes). */
const ZEROS = Buffer.alloc(SEGMENT);
/**
 * Compressed bytes waiting for a lane's xz to read them, beyond its next block: a lane must hold
 * its next block whole while it still decompresses the one before, or the blocks are fed, and so
 * decompressed, one after another (measured: 50 MB/s, slower than one xz).
 */
const INPUT_SLACK = 1024 * 1024;
/** Beyond four, xz's output is faster than any disk here and the lanes only cost memory. */
const MAX_LANES = 4;
/** Each lane's xz output buffers: a single-threaded xz writes at tens of MB/s, and lanes add up. */
const LANE_OUTPUT = { size: 512 * 1024, count: 2 };
/**
 * Room on each lane's output socket (output-buffer.ts; kernel memory, booked twice over). 7zz
 * writes 1 MiB at a time: with the kernel's default 208 KiB each write waited until node had read
 * most of it, and the lane did not decompress meanwhile. Taken off the lookahead budget (18 MiB
 * before), so that the image bytes held ahead stay about the same. Measured, the benchmark's .xz,
 * alternating 3 runs each, onto a loop device on tmpfs: 13.9-14.8 s against 14.4-15.2 s, and onto
 * one on disk with direct I/O: 13.4-14.0 s against 14.0-14.1 s; the tree's peak RSS 125-127 MiB
 * against 130-133 MiB.
 */
const LANE_SOCKET_BUFFER = 2 * 1024 * 1024;
/**
 * A lane's program, and its arguments to decompress its stdin to its stdout on one thread. 7-Zip's
 * (Debian package 7zip) when installed: it decodes LZMA2 faster than xz and writes 1 MiB at a time
 * where xz writes 8 KiB. Measured, the benchmark's 2 GiB image to /dev/null, 2 runs each:
 * `7zz e -so -mmt1` 19.9-20.2 s, `xz -dc -T1` 21.5-22.2 s; into a socket read by another process,
 * 7zz 0.6 s of system time and 2 000 reads against xz's 3.1 s and 141 000 reads (and the reader's
 * 0.8 s against 9.5 s). Both check every block's check value and the stream's index; 7zz also
 * fails on bytes after the last stream.
 */
export const LANE_PROGRAMS = {
  '7zz': ['e', '-si', '-so', '-txz', '-mmt1', '-bso0', '-bsp0'],
  xz: ['-dc', '-q', '-T1'],
} as const;
export type LaneProgram = keyof typeof LANE_PROGRAMS;

/** The lanes' program: 7zz when it is installed, else xz. */
export function laneProgram(): LaneProgram {
  return onPath('7zz') ? '7zz' : 'xz';
}
/**
 * xz writes 8 KiB at a time, and node read each write as it came: about 100 000 reads for the
 * benchmark's image. Pausing 1 ms after a small read and handing on at least 128 KiB, measured
 * onto a loop device on tmpfs (2026-12-02): the main thread's CPU 5.2-5.3 s → 3.4-3.5 s and the
 * copy 14.8-15.1 s → 14.2 s (2 runs each); later, the machine slower, alternating 3 runs each,
 * 6.3-7.0 s → 4.3-5.2 s and 17.7-18.8 s → 16.2-18.5 s. Only for lanes that read their own
 * blocks: their xz never waits on the consumer for input, so a part-filled segment fills or ends.
 */
const LANE_GATHER = { minHandOver: 128 * 1024, gatherMs: 1 };

/** How many lanes pay off: one per core, as many as the budget keeps busy ((n - 1) / 2 blocks ahead), and at least two blocks. */
export function laneCount(layout: XzLayout, cores = availableParallelism()): number {
  if (layout.blocks.length < 2) return 1;
  const largest = Math.max(...layout.blocks.map((b) => b.uncompSize));
  return Math.max(1, Math.min(cores, MAX_LANES, layout.blocks.length, 1 + Math.floor((2 * LOOKAHEAD_BUDGET) / Math.max(largest, 1))));
}

/** A bounded queue of compressed bytes for one lane, read by its xz's stdin feeder. */
class Channel implements AsyncIterable<Buffer> {
  constructor(private readonly cap: number) {}
  private readonly queue: Buffer[] = [];
  private bytes = 0;
  /** Bytes pushed and not yet taken by the reader. */
  get waiting(): number {
    return this.bytes;
  }
  private closed = false;
  private gone = false;
  private wakeReader: (() => void) | undefined;
  private wakeWriter: (() => void) | undefined;

  async push(b: Buffer): Promise<void> {
    if (this.gone) return;
    this.queue.push(b);
    this.bytes += b.length;
    this.wake();
    while (this.bytes > this.cap && !this.gone) await new Promise<void>((r) => (this.wakeWriter = r));
  }

  close(): void {
    this.closed = true;
    this.wake();
  }

  /** Nobody reads any more: pending and later pushes return at once. */
  abandon(): void {
    this.gone = true;
    this.queue.length = 0;
    this.wake();
  }

  private wake(): void {
    const r = this.wakeReader;
    const w = this.wakeWriter;
    this.wakeReader = this.wakeWriter = undefined;
    r?.();
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    try {
      for (;;) {
        while (this.queue.length === 0 && !this.closed && !this.gone) await new Promise<void>((r) => (this.wakeReader = r));
        const b = this.queue.shift();
        if (!b || this.gone) return;
        this.bytes -= b.length;
        this.wake();
        yield b;
      }
    } finally {
      this.abandon();
    }
  }
}

interface Lane {
  /** A streamed image's share for this lane; none when the lane reads a local file itself. */
  input?: Channel;
  tool: ReturnType<typeof toolChunks>;
  /** Decompressed segments ready, in order; none spans two blocks. */
  queue: { buf: Buffer; len: number }[];
  buffered: number;
  /** Its output has been collected to the end. */
  ended: boolean;
  /** The lane's xz exited cleanly after all of its blocks. */
  done: Promise<void>;
}

/**
 * The image bytes of a single-stream .xz file whose block layout is known. `input` is either a
 * reader of byte ranges (a local file, or a source that can seek), with which each lane reads
 * its own blocks, or the compressed bytes from byte 0 (each chunk a buffer of its own), split
 * between the lanes as they arrive. Chunks are valid
 * until the next one is asked for. `trailer` is the index and footer as read beforehand: a
 * streamed copy must match it, so a file that changed between the two reads fails instead of
 * mixing versions.
 */
export function xzLanes(
  layout: XzLayout,
  trailer: Buffer,
  input: AsyncIterable<Buffer> | RangeReader,
  lanes = laneCount(layout),
  opts: {
    /** Bytes for which it is false may read as zeros: a block of only those is not decompressed. */
    needed?: (start: number, end: number) => boolean;
    /** `input`'s chunks are views of reused buffers: what a lane's queue keeps is copied. */
    inputReused?: boolean;
    program?: LaneProgram;
  } = {},
): { chunks: AsyncGenerator<Buffer>; stop(): void; lanes: number; skipped: number; program: LaneProgram } {
  const { needed = () => true, inputReused = false, program = laneProgram() } = opts;
  const args = [...LANE_PROGRAMS[program]];
  const { blocks, flags } = layout;
  // Blocks whose bytes nobody reads (holes of the bmap) are not decompressed at all: they read as
  // zeros. The others go, in order, to whichever lane asks for input first (or, from a stream, has
  // the least of it waiting): blocks differ in how long they take, and a fixed round-robin left one
  // lane waiting on the budget for 1.4-2.5 s of a 13-14 s copy of the benchmark's image.
  const skip = blocks.map((b) => !needed(b.uncompOffset, b.uncompOffset + b.uncompSize));
  const used = skip.filter((s) => !s).length;
  lanes = Math.min(lanes, used);
  /** The lane each block went to; undefined until then, and for a skipped block. */
  const laneOf: (number | undefined)[] = [];
  /** Each lane's blocks, in order, as they are handed out. */
  const laneBlocks: XzLayout['blocks'][] = Array.from({ length: lanes }, () => []);
  /** The next block to hand out. */
  let next = 0;
  const handOut = (i: number): XzLayout['blocks'][number] | undefined => {
    while (next < blocks.length && skip[next]) next++;
    const b = blocks[next];
    if (!b) return undefined;
    laneOf[next++] = i;
    (laneBlocks[i] as XzLayout['blocks']).push(b);
    wakeAll();
    return b;
  };
  /** Segments the copy is done with; the budgets above bound how many there are. */
  const free = new BufferPool(SEGMENT, Infinity);
  let current = 0;
  let failed: Error | undefined;
  let stopped = false;
  const waiters = new Set<() => void>();
  const wakeAll = () => {
    const ws = [...waiters];
    waiters.clear();
    for (const w of ws) w();
  };
  const wait = () => new Promise<void>((r) => waiters.add(r));
  const fail = (e: Error) => {
    failed ??= e;
    wakeAll();
  };

  const lanesList: Lane[] = [];
  const stop = () => {
    stopped = true;
    for (const l of lanesList) {
      l.input?.abandon();
      l.tool.stop();
    }
    wakeAll();
  };

  const inputCap = Math.max(...blocks.map((b) => b.totalSize)) + INPUT_SLACK;
  for (let i = 0; i < lanes; i++) {
    const channel = typeof input === 'function' ? undefined : new Channel(inputCap);
    const tool = channel
      ? toolChunks('xz', channel, { program, args, segments: LANE_OUTPUT, outputBuffer: LANE_SOCKET_BUFFER })
      : toolChunks('xz', readBlocks(input as RangeReader, i), { program, args, reusedInput: true, segments: { ...LANE_OUTPUT, ...LANE_GATHER }, outputBuffer: LANE_SOCKET_BUFFER });
    const lane: Lane = { ...(channel ? { input: channel } : {}), tool, queue: [], buffered: 0, ended: false, done: Promise.resolve() };
    lane.done = collect(lane, i, laneBlocks[i] as XzLayout['blocks']);
    lanesList.push(lane);
  }

  /**
   * Copies lane `i`'s output into segments, one block after another, as far as its share allows.
   * `mine` grows as blocks are handed out: a block is handed out before its input is written.
   */
  async function collect(lane: Lane, i: number, mine: XzLayout['blocks']): Promise<void> {
    let b = -1;
    let left = 0;
    let seg: Buffer | undefined;
    let fill = 0;
    const mayPush = () => {
      if (i === current) return lane.buffered < CURRENT_CAP;
      let total = 0;
      for (const l of lanesList) total += l.buffered;
      return total < LOOKAHEAD_BUDGET;
    };
    try {
      for await (const c of lane.tool.chunks) {
        let off = 0;
        while (off < c.length) {
          while (left === 0 && b < mine.length) left = mine[++b]?.uncompSize ?? 0;
          if (b >= mine.length) throw new Error('xz: a block decompressed to more bytes than the image\'s index says: the image is corrupt');
          seg ??= free.take();
          const n = Math.min(c.length - off, SEGMENT - fill, left);
          c.copy(seg, fill, off, off + n);
          fill += n;
          off += n;
          left -= n;
          if (fill === SEGMENT || left === 0) {
            while (!mayPush() && !stopped && !failed) await wait();
            if (stopped || failed) return;
            lane.queue.push({ buf: seg, len: fill });
            lane.buffered += fill;
            seg = undefined;
            fill = 0;
            wakeAll();
          }
        }
      }
      if (left > 0 || mine.slice(b + 1).some((m) => m.uncompSize > 0)) throw new Error('xz: a block decompressed to fewer bytes than the image\'s index says: the image is corrupt');
      lane.ended = true;
      wakeAll();
    } catch (e) {
      if (stopped) return;
      fail(e instanceof ToolExitError ? new ToolExitError(`${e.message} (${where(mine, b, left)})`, { cause: e }) : (e as Error));
    }
  }

  /**
   * Which block a lane's program failed in, as far as its output tells: the block it was giving
   * out, or, when that one had come out whole, that block's check or the start of the lane's next.
   */
  function where(mine: XzLayout['blocks'], b: number, left: number): string {
    const name = (blk: XzLayout['blocks'][number]) =>
      `${blocks.indexOf(blk) + 1} of ${blocks.length} (bytes ${blk.compOffset}-${blk.compOffset + blk.totalSize - 1} of the .xz file)`;
    const at = mine[Math.max(b, 0)];
    const after = mine[b + 1];
    if (!at) return 'before its first block';
    if (b < 0 || left > 0 || !after) return `in xz block ${name(at)}`;
    return `at the end of xz block ${name(at)} or in block ${name(after)}`;
  }

  /**
   * Lane `i`'s blocks, each wrapped as a stream, read with one reader (a local file's two reused
   * buffers: the next read runs while the last one is written to the lane; reusedInput: written
   * out before the next is asked for). The reader takes the next range when it reaches it, and
   * only then is that block handed out to this lane.
   */
  async function* readBlocks(read: RangeReader, i: number): AsyncGenerator<Buffer> {
    // The reader's k-th range is this lane's k-th block.
    const mine = laneBlocks[i] as XzLayout['blocks'];
    function* ranges(): Generator<ByteRange> {
      for (let b = handOut(i); b; b = handOut(i)) yield { start: b.compOffset, end: b.compOffset + b.totalSize };
    }
    let at = -1;
    for await (const { range, chunk } of read(ranges(), LANE_READ)) {
      if (stopped || failed) return;
      if (range !== at) {
        if (at >= 0) yield streamTail(flags, mine[at] as XzLayout['blocks'][number]);
        at = range;
        yield streamHeader(flags);
      }
      yield chunk;
    }
    if (at >= 0) yield streamTail(flags, mine[at] as XzLayout['blocks'][number]);
  }

  /** The stream header's magic and flags must be those of the footer read before. */
  const headerMatches = (head: Buffer) => head.subarray(0, 6).equals(XZ_HEADER_MAGIC) && head.subarray(6, 8).equals(flags);

  /** The stream header of an image the lanes read by ranges must match the footer read before (the lanes never read it). */
  async function checkHeader(read: RangeReader): Promise<void> {
    try {
      const parts: Buffer[] = [];
      for await (const { chunk } of read([{ start: 0, end: 12 }])) parts.push(Buffer.from(chunk));
      if (!headerMatches(Buffer.concat(parts))) throw new Error('the xz stream header does not match its footer: the image file is corrupt');
    } catch (e) {
      fail(e as Error);
    }
  }

  /**
   * Gives the next block of a stream to the lane with the least input waiting (the next in turn
   * among equals). The stream's blocks arrive in order, so the next is the one arriving.
   */
  function handOutToIdlest(): void {
    let best = 0;
    let least = Infinity;
    for (let j = 0; j < lanes; j++) {
      const i = (turn + j) % lanes;
      const waiting = lanesList[i]?.input?.waiting ?? Infinity;
      if (waiting < least) [best, least] = [i, waiting];
    }
    turn = (best + 1) % lanes;
    handOut(best);
  }
  let turn = 0;

  /** Hands each block's stored bytes to its lane; checks the stream header and the trailer on the way. */
  async function split(raw: AsyncIterable<Buffer>): Promise<void> {
    const head = Buffer.alloc(12);
    let pos = 0;
    let k = 0;
    const trailerAt = blocks.length > 0 ? (blocks.at(-1)?.compOffset ?? 0) + (blocks.at(-1)?.totalSize ?? 0) : 12;
    try {
      for await (const c of raw) {
        let off = 0;
        while (off < c.length) {
          if (stopped || failed) return;
          if (pos < 12) {
            const n = Math.min(12 - pos, c.length - off);
            c.copy(head, pos, off, off + n);
            pos += n;
            off += n;
            if (pos === 12 && !headerMatches(head)) {
              throw new Error('the xz stream header does not match its footer: the image file is corrupt or changed while it was read');
            }
            continue;
          }
          const block = blocks[k];
          if (block) {
            if (pos === block.compOffset && !skip[k]) handOutToIdlest();
            const i = laneOf[k];
            const lane = i === undefined ? undefined : lanesList[i];
            if (lane && pos === block.compOffset) await lane.input?.push(streamHeader(flags));
            const n = Math.min(c.length - off, block.compOffset + block.totalSize - pos);
            const piece = c.subarray(off, off + n);
            await lane?.input?.push(inputReused ? Buffer.from(piece) : piece);
            off += n;
            pos += n;
            if (pos === block.compOffset + block.totalSize) {
              if (lane) await lane.input?.push(streamTail(flags, block));
              k++;
            }
            continue;
          }
          const n = Math.min(c.length - off, trailerAt + trailer.length - pos);
          if (n === 0) throw new Error('the xz image goes on after its stream footer: it changed while it was read');
          if (!c.subarray(off, off + n).equals(trailer.subarray(pos - trailerAt, pos - trailerAt + n))) {
            throw new Error('the xz index differs from the one read first: the image changed while it was read');
          }
          off += n;
          pos += n;
        }
      }
      if (pos < trailerAt + trailer.length) throw new Error(`the xz image ended after ${pos} bytes, before its end: it is truncated`);
    } catch (e) {
      fail(e as Error);
    } finally {
      for (const l of lanesList) l.input?.close();
    }
  }

  const splitting = typeof input === 'function' ? checkHeader(input) : split(input);

  async function* chunks(): AsyncGenerator<Buffer> {
    let ok = false;
    try {
      for (let k = 0; k < blocks.length; k++) {
        let need = (blocks[k] as { uncompSize: number }).uncompSize;
        if (skip[k]) {
          for (; need > 0; need -= Math.min(need, SEGMENT)) yield ZEROS.subarray(0, Math.min(need, SEGMENT));
          continue;
        }
        while (laneOf[k] === undefined && !failed && !stopped) await wait();
        if (failed) throw failed;
        if (stopped) throw new Error('stopped');
        current = laneOf[k] as number;
        wakeAll();
        const lane = lanesList[current] as Lane;
        while (need > 0) {
          while (lane.queue.length === 0 && !lane.ended && !failed && !stopped) await wait();
          if (failed) throw failed;
          if (stopped) throw new Error('stopped');
          const seg = lane.queue.shift();
          if (!seg) throw new Error(`xz: block ${k + 1} of ${blocks.length} ended early: the image is corrupt`);
          lane.buffered -= seg.len;
          need -= seg.len;
          wakeAll();
          yield seg.buf.subarray(0, seg.len);
          free.give(seg.buf);
        }
      }
      await splitting;
      await Promise.all(lanesList.map((l) => l.done));
      if (failed) throw failed;
      ok = true;
    } finally {
      if (!ok) stop();
    }
  }
  return { chunks: chunks(), stop, lanes, skipped: blocks.length - used, program };
}
