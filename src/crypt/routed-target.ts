// A write target that sends each byte of the image where the write-through layout
// says: to the disk, into an opened dm-crypt volume (at the offset within its
// partition), or nowhere (the image's own partition tables). The copy engine sees
// one ordinary Target of the disk's size.
import type { Target } from '../image/target.ts';
import { split, type Region } from './write-through-layout.ts';

export class RoutedTarget implements Target {
  readonly isBlockDevice = true;
  readonly size: number;

  /** `volumes` maps a partition number to its opened volume and the partition's start on the disk. */
  constructor(
    private readonly disk: Target,
    private readonly regions: readonly Region[],
    private readonly volumes: ReadonlyMap<number, { target: Target; start: number }>,
  ) {
    this.size = disk.size;
  }

  get path(): string {
    return this.disk.path;
  }

  private where(r: Region): { t: Target; shift: number } | undefined {
    if (r.to === 'drop') return undefined;
    if (r.to === 'disk') return { t: this.disk, shift: 0 };
    const v = this.volumes.get(r.partition);
    if (!v) throw new Error(`internal: partition ${r.partition} is encrypted but its volume is not open`);
    return { t: v.target, shift: v.start };
  }

  async write(buf: Uint8Array, pos: number): Promise<void> {
    for (const { region, from, to } of split(this.regions, pos, buf.length)) {
      const w = this.where(region);
      if (w) await w.t.write(buf.subarray(from - pos, to - pos), from - w.shift);
    }
  }

  async read(buf: Uint8Array, pos: number): Promise<number> {
    let n = 0;
    for (const { region, from, to } of split(this.regions, pos, buf.length)) {
      // A dropped span reads what is on the disk there (our own table): it is never compared equal to the image's.
      const w = this.where(region) ?? { t: this.disk, shift: 0 };
      const got = await w.t.read(buf.subarray(from - pos, to - pos), from - w.shift);
      n += got;
      if (got < to - from) break;
    }
    return n;
  }

  async sync(): Promise<void> {
    for (const v of this.volumes.values()) await v.target.sync();
    await this.disk.sync();
  }

  private async each(start: number, end: number, f: (t: Target, a: number, b: number) => Promise<void>): Promise<void> {
    for (const { region, from, to } of split(this.regions, start, end - start)) {
      const w = this.where(region);
      if (w) await f(w.t, from - w.shift, to - w.shift);
    }
  }

  discard(start: number, end: number): Promise<void> {
    return this.each(start, end, (t, a, b) => t.discard(a, b));
  }

  zero(start: number, end: number): Promise<void> {
    return this.each(start, end, (t, a, b) => t.zero(a, b));
  }

  async rereadPartitions(): Promise<void> {
    // The kernel was given this disk's table before the volumes were opened; a re-read now would fail (they hold it).
  }

  async close(): Promise<void> {
    for (const v of this.volumes.values()) await v.target.close();
    await this.disk.close();
  }
}
