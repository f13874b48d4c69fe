// Reused buffers between a producer that fills them (a socket read) and a consumer that takes
// them one at a time: the bookkeeping of which segment is being filled, which are queued for
// the consumer, and which one the consumer holds. Pure: the producers (an HTTP body,
// http1-body.ts; a program's output, tool-output.ts) do the I/O and pause their sockets while
// the ring is blocked.

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
  ) {
    if (count < 2) throw new Error('a segment ring needs at least two segments');
    // Outside V8's heap pages either way; allocUnsafeSlow keeps them out of node's shared pool.
    this.segs = Array.from({ length: count }, () => Buffer.allocUnsafeSlow(size));
  }

  /** The filling segment is still queued or held: nothing may be written to it before it is given back. */
  get blocked(): boolean {
    return this.inUse(this.filling);
  }

  /** Room left in the filling segment; while blocked, in the one that will be filled next. */
  room(): Buffer {
    return (this.segs[this.filling] as Buffer).subarray(this.fill);
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
    const c = this.ready.shift();
    if (!c) return undefined;
    this.held = c.seg;
    return (this.segs[c.seg] as Buffer).subarray(0, c.length);
  }

  private inUse(i: number): boolean {
    return i === this.held || this.ready.some((r) => r.seg === i);
  }
}
