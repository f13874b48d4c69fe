// Whether a .gz image may be decompressed by igzip, decided from its last bytes before it is
// streamed. igzip stops quietly at bytes after the last gzip member that do not start another
// one, where node's zlib fails on them (gzip(1) warns). A gzip member ends with
// CRC32 and ISIZE, the size of its data mod 2^32 (RFC 1952, 2.3.1). When the file's last four
// bytes are that of the whole image (known from its bmap), the file ends where a member ends,
// and nothing follows that igzip could skip (short of bytes made to match). Anything else
// (several members, zero padding, appended bytes, no known size) keeps zlib, which checks all.
import type { Source } from '../types.ts';
import { readRange } from '../sources/read-range.ts';

/** ISIZE, the member's last field. */
export const GZIP_ISIZE_BYTES = 4;

/** True when `tail` (the file's last bytes) ends with the ISIZE of an image of `imageSize` bytes. */
export function endsWithImageSize(tail: Buffer, imageSize: number): boolean {
  if (tail.length < GZIP_ISIZE_BYTES) return false;
  return tail.readUInt32LE(tail.length - GZIP_ISIZE_BYTES) === imageSize % 2 ** 32;
}

/** The check above on `source` itself; false when it cannot seek or has no known size. */
export async function gzipEndsWithImage(source: Source, imageSize: number, signal?: AbortSignal): Promise<boolean> {
  if (!source.seekable) return false;
  const size = await source.size();
  // The smallest member: a 10-byte header, an empty deflate block, CRC32 and ISIZE.
  if (size === undefined || size < 20) return false;
  return endsWithImageSize(await readRange(source, size - GZIP_ISIZE_BYTES, GZIP_ISIZE_BYTES, signal), imageSize);
}
