// Reused buffers between a producer that fills them (a socket read) and a consumer that takes
// them one at a time: the bookkeeping of which segment is being filled, which are queued for
// the consumer, and which one the consumer holds. Pure: the producers (an HTTP body,
// http1-body.ts; a program's output, tool-output.ts) do the I/O and pause their sockets while
// the ring is blocked.
import { BufferPool } from './buffer-pool.ts';

export class SegmentRing {
  private readonly segs: Buffer[];
  /** Where bytes go: a free segment, or, while blocked, the one the consumer gives back first. */
  private filling = 0;
  /** Bytes in the filling segment. */
  fill = 0;
  /** Segments handed over and not yet taken, in order, with their lengths. */
  private readonly ready: { seg: number; length: number }[] = [];
  /** The segment of the chunk the consumer was given last: it may use it until it asks again. */
  private held: number | undefined;

  constructor(
    readonly size: number,
    count: number,
    /** Where the segments come from and, on dispose(), go back to. */
    private readonly pool = new BufferPool(size, 0),
  ) {
    if (count < 2) throw new Error('a segment ring needs at least two segments');
    if (pool.size !== size) throw new Error(`a pool of ${pool.size}-byte buffers cannot give ${size}-byte segments`);
    this.segs = Array.from({ length: count }, () => pool.take());
  }

  /** Neither side uses the ring any more (no chunk is held): its segments go back to the pool. */
  dispose(): void {
    for (const s of this.segs.splice(0)) this.pool.give(s);
    this.ready.length = 0;
    this.held = undefined;
  }

  /** The filling segment is still queued or held: nothing may be written to it before it is given back. */
  get blocked(): boolean {
    return this.inUse(this.filling);
  }

  /** Room left in the filling segment; while blocked, in the one that will be filled next. */
  room(): Buffer {
    const seg = this.segs[this.filling];
    if (!seg) throw new Error('the segment ring was disposed: nothing may be written to it');
    return seg.subarray(this.fill);
  }

  /** `n` bytes were written at the start of room(). */
  added(n: number): void {
    this.fill += n;
  }

  /** Chunks queued for the consumer. */
  get queued(): number {
    return this.ready.length;
  }

  /** Queues the filling segment's bytes and moves on to a free segment, or to the one given back first (blocked). */
  handOver(): void {
    this.ready.push({ seg: this.filling, length: this.fill });
    let next = this.segs.findIndex((_, i) => !this.inUse(i));
    if (next < 0) next = this.held ?? (this.ready[0] as { seg: number }).seg;
    this.filling = next;
    this.fill = 0;
  }

  /** Consumer: the chunk given last is done with. */
  release(): void {
    this.held = undefined;
  }

  /** Consumer: the next queued chunk, a view valid until release(); undefined when none is queued. */
  take(): Buffer | undefined {
    const c = this.segs.length > 0 ? this.ready.shift() : undefined;
    if (!c) return undefined;
    this.held = c.seg;
    return (this.segs[c.seg] as Buffer).subarray(0, c.length);
  }

  private inUse(i: number): boolean {
    return i === this.held || this.ready.some((r) => r.seg === i);
  }
}
