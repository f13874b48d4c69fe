// Compression by magic bytes, never by file name: a misnamed image is still
// decompressed (or written raw) correctly.
import type { Compression } from '../types.ts';

/** Bytes worth reading before calling detectCompression (enough to look past a small skippable frame). */
export const DETECT_HEAD_BYTES = 4096;

const startsWith = (b: Uint8Array, at: number, magic: readonly number[]) => magic.every((m, i) => b[at + i] === m);

/**
 * zstd and lz4 share "skippable frames" (magic 0x184D2A50..5F little-endian,
 * then a 4-byte length): metadata that pzstd and some tools put first. What
 * follows decides the format; when it lies beyond `head`, zstd is assumed
 * (by far the more common producer of such frames).
 */
function afterSkippable(head: Uint8Array, at: number, depth: number): Compression | undefined {
  const b0 = head[at];
  if (b0 === undefined || b0 < 0x50 || b0 > 0x5f || !startsWith(head, at + 1, [0x2a, 0x4d, 0x18])) return undefined;
  if (at + 8 > head.length) return 'zstd';
  const len = Buffer.from(head.buffer, head.byteOffset, head.byteLength).readUInt32LE(at + 4);
  const next = at + 8 + len;
  if (next + 4 > head.length || depth > 16) return 'zstd';
  return frameAt(head, next, depth + 1) ?? 'zstd';
}

function frameAt(head: Uint8Array, at: number, depth: number): Compression | undefined {
  if (startsWith(head, at, [0x28, 0xb5, 0x2f, 0xfd])) return 'zstd';
  // lz4 frame format, and the legacy format `lz4 -l` still writes.
  if (startsWith(head, at, [0x04, 0x22, 0x4d, 0x18]) || startsWith(head, at, [0x02, 0x21, 0x4c, 0x18])) return 'lz4';
  return afterSkippable(head, at, depth);
}

/** The compression of an image from its first bytes (pass DETECT_HEAD_BYTES, or all of a shorter image). */
export function detectCompression(head: Buffer): Compression {
  if (startsWith(head, 0, [0x1f, 0x8b])) return 'gzip';
  if (startsWith(head, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'xz';
  // "BZh" plus the block-size digit 1-9: a bare "BZh" could be raw data.
  const level = head[3];
  if (startsWith(head, 0, [0x42, 0x5a, 0x68]) && level !== undefined && level >= 0x31 && level <= 0x39) return 'bzip2';
  return frameAt(head, 0, 0) ?? 'none';
}
