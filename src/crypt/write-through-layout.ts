// Where an image's bytes go when some of its partitions are encrypted as they are
// written: each such partition grows by the LUKS2 header (or to the disk's end), its
// data goes into the opened dm-crypt device, the image's own partition tables are
// replaced by one made for this disk, and everything else is written as it is. Pure.
import { SECTOR, type Gpt, type GptPartition } from './gpt.ts';
import type { CryptPartitionSpec } from './partition-spec.ts';
import { formatBytes } from '../format.ts';

/** cryptsetup's default LUKS2 data offset (header, keyslots area and its backup). */
export const LUKS2_HEADER_BYTES = 16 * 1024 * 1024;
/** New partition ends are aligned so that the partition size is a multiple of this. */
const ALIGN_SECTORS = 2048n;

export interface EncryptedPartition {
  number: number;
  name: string;
  uuid: string;
  spec: CryptPartitionSpec;
  /** Byte offsets on the disk (and in the image) of the partition's start and its old end (exclusive). */
  start: number;
  imageEnd: number;
  /** Its end on the disk after growing (exclusive). */
  diskEnd: number;
  newLastLba: bigint;
}

/** A span of image offsets and where its bytes go. */
export type Region =
  | { start: number; end: number; to: 'disk' }
  | { start: number; end: number; to: 'drop'; why: string }
  | { start: number; end: number; to: 'volume'; partition: number };

export interface WriteThroughLayout {
  encrypted: EncryptedPartition[];
  newLast: Map<number, bigint>;
  /** Sorted, gap-free from 0 to Infinity. */
  regions: Region[];
}

export class LayoutError extends Error {}

const describe = (p: GptPartition) => `partition ${p.number}${p.name ? ` "${p.name}"` : ''}`;

export function planWriteThrough(gpt: Gpt, diskBytes: number, chosen: { spec: CryptPartitionSpec; partition: GptPartition }[], headerBytes = LUKS2_HEADER_BYTES): WriteThroughLayout {
  const diskSectors = BigInt(Math.floor(diskBytes / SECTOR));
  const entrySectors = BigInt(Math.ceil((gpt.entryCount * gpt.entrySize) / SECTOR));
  const lastUsable = diskSectors - 2n - entrySectors;
  const headerSectors = BigInt(headerBytes / SECTOR);
  const encrypted: EncryptedPartition[] = [];
  const newLast = new Map<number, bigint>();
  for (const { spec, partition: p } of chosen) {
    if (spec.mode === 'noencrypt') continue;
    const next = gpt.partitions.filter((q) => q.firstLba > p.lastLba).reduce<bigint | undefined>((m, q) => (m === undefined || q.firstLba < m ? q.firstLba : m), undefined);
    const limit = next !== undefined ? next - 1n : lastUsable;
    let last = p.lastLba + headerSectors;
    const size = last - p.firstLba + 1n;
    if (size % ALIGN_SECTORS !== 0n) last += ALIGN_SECTORS - (size % ALIGN_SECTORS);
    if (spec.expand) {
      if (next !== undefined) throw new LayoutError(`${describe(p)} cannot expand: ${describe(gpt.partitions.find((q) => q.firstLba === next)!)} follows it`);
      const whole = ((lastUsable - p.firstLba + 1n) / ALIGN_SECTORS) * ALIGN_SECTORS;
      if (p.firstLba + whole - 1n > last) last = p.firstLba + whole - 1n;
    }
    if (last > limit) {
      const need = Number(last - p.lastLba) * SECTOR;
      const room = Number(limit - p.lastLba) * SECTOR;
      const msg =
        next !== undefined
          ? `${describe(p)} needs ${formatBytes(need)} more for the LUKS2 header, but the next partition starts ${formatBytes(room)} after its end. Leave ${formatBytes(headerBytes)} free after it in the image, encrypt the last partition, or use method: in-place (it shrinks the filesystem instead)`
          : `the disk (${formatBytes(diskBytes)}) is too small for the image with the LUKS2 header of ${describe(p)}: it needs ${formatBytes(Number(last + 2n + entrySectors) * SECTOR)}. Use a bigger disk, or method: in-place (it shrinks the filesystem instead)`;
      throw new LayoutError(msg);
    }
    newLast.set(p.number, last);
    encrypted.push({ number: p.number, name: p.name, uuid: p.uuid, spec, start: Number(p.firstLba) * SECTOR, imageEnd: Number(p.lastLba + 1n) * SECTOR, diskEnd: Number(last + 1n) * SECTOR, newLastLba: last });
  }

  // The image's own tables: the primary at its start, the backup at its end (for the image's size).
  const primaryEnd = Number(gpt.entriesLba + entrySectors) * SECTOR;
  const backupStart = Number(gpt.sectors - 1n - entrySectors) * SECTOR;
  const backupEnd = Number(gpt.sectors) * SECTOR;
  const cuts: Region[] = [
    { start: 0, end: primaryEnd, to: 'drop' as const, why: "the image's partition table (a new one for this disk is written first)" },
    { start: backupStart, end: backupEnd, to: 'drop' as const, why: "the image's backup partition table (it belongs at the disk's end)" },
    ...encrypted.map((e): Region =>
      e.spec.mode === 'format'
        ? { start: e.start, end: e.imageEnd, to: 'drop', why: `partition ${e.number} is formatted empty (mode format)` }
        : { start: e.start, end: e.imageEnd, to: 'volume', partition: e.number },
    ),
  ].sort((a, b) => a.start - b.start);
  const regions: Region[] = [];
  let at = 0;
  for (const c of cuts) {
    if (c.start < at) throw new LayoutError(`the image's partition table overlaps partition data at byte ${c.start}: the image is damaged`);
    if (c.start > at) regions.push({ start: at, end: c.start, to: 'disk' });
    regions.push(c);
    at = c.end;
  }
  regions.push({ start: at, end: Infinity, to: 'disk' });
  return { encrypted, newLast, regions };
}

/** The regions a write of `length` bytes at `pos` touches, each clipped to the write. */
export function* split(regions: readonly Region[], pos: number, length: number): Generator<{ region: Region; from: number; to: number }> {
  const end = pos + length;
  // Regions are few (a handful): a linear scan is fine.
  for (const r of regions) {
    if (r.end <= pos) continue;
    if (r.start >= end) break;
    yield { region: r, from: Math.max(pos, r.start), to: Math.min(end, r.end) };
  }
}
