// GUID partition tables (UEFI spec, ch. 5): read the primary table from the first
// sectors of an image, and write a table for a disk of another size with partitions
// grown. Write-through encryption needs this before the image is streamed: a
// partition grows to make room for the LUKS2 header, and the backup table moves to
// the end of the (bigger) disk. Pure: bytes in, bytes out.
import { crc32 } from 'node:zlib';

export const SECTOR = 512;
const SIGNATURE = 'EFI PART';
const HEADER_SIZE = 92;

export interface GptPartition {
  /** 1-based, the kernel's partition number (the entry's index + 1). */
  number: number;
  typeGuid: string;
  /** PARTUUID. */
  uuid: string;
  firstLba: bigint;
  lastLba: bigint;
  attributes: bigint;
  /** PARTLABEL. */
  name: string;
}

export interface Gpt {
  diskGuid: string;
  /** The disk size in sectors the table was made for (its backup header's LBA + 1). */
  sectors: bigint;
  firstUsableLba: bigint;
  lastUsableLba: bigint;
  entriesLba: bigint;
  entryCount: number;
  entrySize: number;
  partitions: GptPartition[];
  /** The raw entry array, so that entries we do not change are written back byte for byte. */
  entries: Buffer;
}

export class GptError extends Error {}

/** GUID bytes (mixed endian, as stored) -> the usual text form. */
export function guidText(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  const le = (s: string) => s.match(/../g)!.reverse().join('');
  return `${le(h.slice(0, 8))}-${le(h.slice(8, 12))}-${le(h.slice(12, 16))}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** How many bytes of an image's start hold its primary table (read at least this much). */
export const PRIMARY_BYTES = 34 * SECTOR;

/** Parses the primary GPT from the first bytes of an image (at least PRIMARY_BYTES, more if its entries lie further). */
export function parseGpt(head: Buffer): Gpt {
  if (head.length < 2 * SECTOR) throw new GptError(`the image is too short to hold a partition table (${head.length} bytes)`);
  if (head.readUInt16LE(510) !== 0xaa55) throw new GptError('the image has no partition table (no boot signature in its first sector)');
  const h = head.subarray(SECTOR, SECTOR + HEADER_SIZE);
  if (h.toString('latin1', 0, 8) !== SIGNATURE) throw new GptError('the image has no GPT (an MBR-only disk cannot be encrypted by partition label; convert it to GPT)');
  const headerSize = h.readUInt32LE(12);
  if (headerSize < HEADER_SIZE || headerSize > SECTOR) throw new GptError(`the GPT header size ${headerSize} is invalid`);
  const raw = Buffer.from(head.subarray(SECTOR, SECTOR + headerSize));
  const crc = raw.readUInt32LE(16);
  raw.writeUInt32LE(0, 16);
  if (crc32(raw) !== crc) throw new GptError('the GPT header checksum is wrong: the image\'s partition table is damaged');
  const entriesLba = h.readBigUInt64LE(72);
  const entryCount = h.readUInt32LE(80);
  const entrySize = h.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 8 !== 0 || entryCount === 0 || entryCount > 1024) throw new GptError(`the GPT has an invalid entry array (${entryCount} entries of ${entrySize} bytes)`);
  const start = Number(entriesLba) * SECTOR;
  const end = start + entryCount * entrySize;
  if (end > head.length) throw new GptError(`the GPT entries end at byte ${end}, past the ${head.length} bytes read`);
  const entries = Buffer.from(head.subarray(start, end));
  if (crc32(entries) !== h.readUInt32LE(88)) throw new GptError('the GPT entry array checksum is wrong: the image\'s partition table is damaged');
  const partitions: GptPartition[] = [];
  for (let i = 0; i < entryCount; i++) {
    const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue;
    const nameBytes = e.subarray(56, 128);
    let nameEnd = 0;
    while (nameEnd < nameBytes.length && (nameBytes[nameEnd] !== 0 || nameBytes[nameEnd + 1] !== 0)) nameEnd += 2;
    partitions.push({
      number: i + 1,
      typeGuid: guidText(e.subarray(0, 16)),
      uuid: guidText(e.subarray(16, 32)),
      firstLba: e.readBigUInt64LE(32),
      lastLba: e.readBigUInt64LE(40),
      attributes: e.readBigUInt64LE(48),
      name: nameBytes.subarray(0, nameEnd).toString('utf16le'),
    });
  }
  return {
    diskGuid: guidText(h.subarray(56, 72)),
    sectors: h.readBigUInt64LE(32) + 1n,
    firstUsableLba: h.readBigUInt64LE(40),
    lastUsableLba: h.readBigUInt64LE(48),
    entriesLba,
    entryCount,
    entrySize,
    partitions,
    entries,
  };
}

/** The bytes of a table for a disk of `diskSectors`: the primary (at byte 0) and the backup (at `backupOffset`). */
export interface GptImage {
  primary: Buffer;
  backup: Buffer;
  backupOffset: number;
}

/**
 * The table `gpt` as it must be on a disk of `diskSectors` sectors, with some
 * partitions' last LBA changed: a new protective MBR, headers whose backup is at the
 * disk's end, and the entry array otherwise unchanged (names, GUIDs, attributes).
 */
export function writeGpt(gpt: Gpt, diskSectors: bigint, newLast: ReadonlyMap<number, bigint> = new Map()): GptImage {
  const entrySectors = BigInt(Math.ceil((gpt.entryCount * gpt.entrySize) / SECTOR));
  const backupLba = diskSectors - 1n;
  const backupEntriesLba = backupLba - entrySectors;
  const lastUsable = backupEntriesLba - 1n;
  const entries = Buffer.from(gpt.entries);
  for (const [number, last] of newLast) {
    const p = gpt.partitions.find((x) => x.number === number);
    if (!p) throw new GptError(`there is no partition ${number}`);
    if (last < p.firstLba || last > lastUsable) throw new GptError(`partition ${number} cannot end at sector ${last}: the disk's last usable sector is ${lastUsable}`);
    entries.writeBigUInt64LE(last, (number - 1) * gpt.entrySize + 40);
  }
  for (const p of gpt.partitions) {
    const last = newLast.get(p.number) ?? p.lastLba;
    if (last > lastUsable) throw new GptError(`partition ${p.number} ends at sector ${last}, past the disk's last usable sector ${lastUsable}`);
  }
  const entriesPadded = Buffer.alloc(Number(entrySectors) * SECTOR);
  entries.copy(entriesPadded);
  const entriesCrc = crc32(entries);

  const header = (myLba: bigint, altLba: bigint, entriesLba: bigint) => {
    const b = Buffer.alloc(SECTOR);
    b.write(SIGNATURE, 0, 'latin1');
    b.writeUInt32LE(0x00010000, 8);
    b.writeUInt32LE(HEADER_SIZE, 12);
    b.writeBigUInt64LE(myLba, 24);
    b.writeBigUInt64LE(altLba, 32);
    b.writeBigUInt64LE(gpt.firstUsableLba, 40);
    b.writeBigUInt64LE(lastUsable, 48);
    guidBytes(gpt.diskGuid).copy(b, 56);
    b.writeBigUInt64LE(entriesLba, 72);
    b.writeUInt32LE(gpt.entryCount, 80);
    b.writeUInt32LE(gpt.entrySize, 84);
    b.writeUInt32LE(entriesCrc, 88);
    b.writeUInt32LE(crc32(b.subarray(0, HEADER_SIZE)), 16);
    return b;
  };

  const mbr = Buffer.alloc(SECTOR);
  // One partition of type 0xEE covering the disk (or as much as 32 bits can say).
  const p = 446;
  mbr.writeUInt8(0x00, p);
  mbr.writeUIntLE(0x000200, p + 1, 3);
  mbr.writeUInt8(0xee, p + 4);
  mbr.writeUIntLE(0xffffff, p + 5, 3);
  mbr.writeUInt32LE(1, p + 8);
  const span = diskSectors - 1n;
  mbr.writeUInt32LE(span > 0xffffffffn ? 0xffffffff : Number(span), p + 12);
  mbr.writeUInt16LE(0xaa55, 510);

  const primaryEntriesLba = gpt.entriesLba;
  const primary = Buffer.alloc(Number(primaryEntriesLba + entrySectors) * SECTOR);
  mbr.copy(primary, 0);
  header(1n, backupLba, primaryEntriesLba).copy(primary, SECTOR);
  entriesPadded.copy(primary, Number(primaryEntriesLba) * SECTOR);
  const backup = Buffer.concat([entriesPadded, header(backupLba, 1n, backupEntriesLba)]);
  return { primary, backup, backupOffset: Number(backupEntriesLba) * SECTOR };
}

function guidBytes(text: string): Buffer {
  const h = text.replace(/-/g, '');
  const le = (s: string) => s.match(/../g)!.reverse().join('');
  return Buffer.from(le(h.slice(0, 8)) + le(h.slice(8, 12)) + le(h.slice(12, 16)) + h.slice(16), 'hex');
}
