// The .xz container's block index (xz file format 1.2.x: stream header and footer, index
// records), read from the end of a file so that its blocks can be decompressed side by side,
// and the one-block streams that hand a single block to `xz -d`. Pure: bytes in, bytes out.
import { crc32 } from 'node:zlib';

export const XZ_HEADER_MAGIC = Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]);
const FOOTER_MAGIC = Buffer.from([0x59, 0x5a]);
export const XZ_FOOTER_BYTES = 12;
/** The index is at most this big (4 GiB by the format); anything larger is not worth reading ahead. */
export const XZ_INDEX_MAX = 16 * 1024 * 1024;

export interface XzBlock {
  /** Where the block starts in the .xz file. */
  compOffset: number;
  /** Its bytes in the file, block padding included. */
  totalSize: number;
  /** Block header + compressed data + check, without padding (the index's record). */
  unpaddedSize: number;
  /** Where its output starts in the decompressed image, and how long it is. */
  uncompOffset: number;
  uncompSize: number;
}

export interface XzLayout {
  /** The stream flags (the second byte holds the check type), copied into one-block streams. */
  flags: Buffer;
  blocks: XzBlock[];
}

export class XzIndexError extends Error {}

/** The footer's flags and the size of the index before it. */
export function parseFooter(footer: Buffer): { flags: Buffer; indexSize: number } {
  if (footer.length !== XZ_FOOTER_BYTES || !footer.subarray(10).equals(FOOTER_MAGIC)) {
    throw new XzIndexError('no xz stream footer at the end of the file (stream padding, several streams or a truncated file)');
  }
  if (crc32(footer.subarray(4, 10)) !== footer.readUInt32LE(0)) throw new XzIndexError('the xz stream footer checksum is wrong');
  const flags = Buffer.from(footer.subarray(8, 10));
  if (flags[0] !== 0 || (flags[1] ?? 0) > 0x0f) throw new XzIndexError('the xz stream footer has unsupported flags');
  return { flags, indexSize: (footer.readUInt32LE(4) + 1) * 4 };
}

/**
 * The blocks of a single-stream .xz file of `fileSize` bytes from its index and footer.
 * Throws XzIndexError when the file is not laid out as one stream exactly filling the file
 * (the caller then lets xz read it whole, as before).
 */
export function parseIndex(index: Buffer, flags: Buffer, fileSize: number): XzLayout {
  if (index[0] !== 0x00) throw new XzIndexError('no xz index where the footer says it starts');
  const body = index.subarray(0, index.length - 4);
  if (crc32(body) !== index.readUInt32LE(index.length - 4)) throw new XzIndexError('the xz index checksum is wrong');
  let at = 1;
  const next = (): number => {
    const r = readVli(body, at);
    at = r.next;
    return r.value;
  };
  const count = next();
  // Each record takes at least two bytes: a count beyond that is a lie, not a reason to allocate.
  if (count * 2 > body.length) throw new XzIndexError(`the xz index claims ${count} blocks in ${body.length} bytes`);
  const blocks: XzBlock[] = [];
  let compOffset = 12;
  let uncompOffset = 0;
  for (let i = 0; i < count; i++) {
    const unpaddedSize = next();
    const uncompSize = next();
    if (unpaddedSize < 5) throw new XzIndexError(`xz index record ${i + 1} has an impossible block size ${unpaddedSize}`);
    const totalSize = Math.ceil(unpaddedSize / 4) * 4;
    blocks.push({ compOffset, totalSize, unpaddedSize, uncompOffset, uncompSize });
    compOffset += totalSize;
    uncompOffset += uncompSize;
    if (!Number.isSafeInteger(compOffset) || !Number.isSafeInteger(uncompOffset)) throw new XzIndexError('the xz index sizes overflow');
  }
  if ((4 - (at % 4)) % 4 !== body.length - at || body.subarray(at).some((b) => b !== 0)) {
    throw new XzIndexError('the xz index has bytes after its records');
  }
  // Header + blocks + index + footer must be the whole file: one stream, no padding.
  if (compOffset + index.length + XZ_FOOTER_BYTES !== fileSize) {
    throw new XzIndexError('the xz file holds more than one stream (or stream padding)');
  }
  return { flags, blocks };
}

/** xz's variable-length integer: 7 bits a byte, low first, at most 9 bytes, no superfluous zero byte. */
function readVli(b: Buffer, at: number): { value: number; next: number } {
  let value = 0;
  for (let i = 0; i < 9; i++) {
    const byte = b[at + i];
    if (byte === undefined) throw new XzIndexError('the xz index is truncated');
    value += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) {
      if (i > 0 && byte === 0) throw new XzIndexError('the xz index has a badly encoded number');
      if (!Number.isSafeInteger(value)) throw new XzIndexError('the xz index has a number beyond 2^53');
      return { value, next: at + i + 1 };
    }
  }
  throw new XzIndexError('the xz index has a number longer than 9 bytes');
}

function writeVli(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

/** The stream header of a one-block stream with these flags. */
export function streamHeader(flags: Buffer): Buffer {
  const h = Buffer.alloc(12);
  XZ_HEADER_MAGIC.copy(h, 0);
  flags.copy(h, 6);
  h.writeUInt32LE(crc32(flags), 8);
  return h;
}

/**
 * What follows a block's bytes to make it a complete stream: an index with its one record and
 * the footer. xz checks both against the block, as it would in the original file.
 */
export function streamTail(flags: Buffer, block: Pick<XzBlock, 'unpaddedSize' | 'uncompSize'>): Buffer {
  const records = [0x00, ...writeVli(1), ...writeVli(block.unpaddedSize), ...writeVli(block.uncompSize)];
  while (records.length % 4 !== 0) records.push(0);
  const index = Buffer.alloc(records.length + 4);
  Buffer.from(records).copy(index);
  index.writeUInt32LE(crc32(index.subarray(0, records.length)), records.length);
  const footer = Buffer.alloc(XZ_FOOTER_BYTES);
  footer.writeUInt32LE(index.length / 4 - 1, 4);
  flags.copy(footer, 8);
  FOOTER_MAGIC.copy(footer, 10);
  footer.writeUInt32LE(crc32(footer.subarray(4, 10)), 0);
  return Buffer.concat([index, footer]);
}
