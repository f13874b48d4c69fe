// Spare buffers of one size, given back by short-lived users and handed out again. An xz lane
// asks for each of its blocks with a request of its own, and each request's body needs 2 MiB of
// segments: allocated afresh, those are external memory that V8 frees only at a full GC, which
// may not come for the whole copy (http1-body.ts has the figures).

export class BufferPool {
  private readonly spare: Buffer[] = [];

  constructor(
    readonly size: number,
    /** Spares kept at most; more given back are left to the GC. */
    private readonly keep: number,
  ) {}

  take(): Buffer {
    // Outside V8's heap pages either way; allocUnsafeSlow keeps them out of node's shared pool.
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** `b` is no longer used by anyone: its bytes may be overwritten by the next taker. */
  give(b: Buffer): void {
    if (b.length === this.size && this.spare.length < this.keep && !this.spare.includes(b)) this.spare.push(b);
  }

  /** Spares held now. */
  get spares(): number {
    return this.spare.length;
  }
}
