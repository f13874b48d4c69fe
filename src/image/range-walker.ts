// Matching the decompressed stream against bmap ranges (spans): hashes and hands mapped bytes to the writer, kept apart from the copy orchestration.
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { formatBytes } from '../format.ts';
import type { Bmap, ChecksumType } from './types.ts';
import type { Writer } from './write-pool.ts';

/** A bmap range as byte offsets; the last block of an image may be partial. */
export interface Span {
  first: number;
  last: number;
  start: number;
  end: number;
  checksum?: string;
}

/** Whether any of `spans` (sorted by start, not overlapping) has a byte in [start, end). */
export function spansMeet(spans: readonly Span[]): (start: number, end: number) => boolean {
  return (start, end) => {
    // The first span that ends after `start`.
    let lo = 0;
    let hi = spans.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((spans[mid] as Span).end <= start) lo = mid + 1;
      else hi = mid;
    }
    const s = spans[lo];
    return s !== undefined && s.start < end;
  };
}

export function spansOf(bmap: Bmap): Span[] {
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
export function checksumAlgo(bmap: Bmap): ChecksumType | undefined {
  const sample = bmap.ranges.find((r) => r.checksum)?.checksum;
  if (!sample) return undefined;
  return bmap.checksumType ?? HEX_LENGTH[sample.length];
}

/** Walks decompressed bytes against the spans: unmapped bytes are dropped, mapped ones hashed and written. */
export class Walker {
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
