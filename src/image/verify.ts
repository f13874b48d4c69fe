// Reads back the mapped ranges of a written image (a file or a block device)
// and compares them with the bmap's checksums.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Bmap, BmapRange } from './types.ts';

const CHUNK = 4 * 1024 * 1024;

export interface VerifyOptions {
  /** Bytes read so far, bytes to read in all. */
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface VerifyResult {
  /** True when every range that has a checksum matched. */
  ok: boolean;
  /** Ranges whose bytes differ, or that the target is too short to hold. */
  bad: BmapRange[];
}

/**
 * Ranges without a checksum cannot be checked and are skipped; a bmap with no
 * checksums at all is an error, since "ok" would then mean nothing.
 * Note: reads go through the page cache, so a target just written through it
 * is compared with what the kernel holds, not necessarily with the medium.
 */
export async function verifyRanges(path: string, bmap: Bmap, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const type = bmap.checksumType ?? 'sha1'; // 1.0-1.2 range checksums are sha1
  const ranges = bmap.ranges.filter((r) => r.checksum !== undefined);
  if (ranges.length === 0 && bmap.ranges.length > 0) {
    throw new Error(`cannot verify ${path}: the bmap has no range checksums (created with --no-checksum?); create one with checksums`);
  }
  const bs = bmap.blockSize;
  // Only the image's own bytes: past ImageSize the device holds other things.
  const spanOf = (r: BmapRange) => Math.min((r.last + 1) * bs, bmap.imageSize) - r.first * bs;
  let total = 0;
  for (const r of ranges) total += spanOf(r);
  let done = 0;
  opts.onProgress?.(0, total);

  const bad: BmapRange[] = [];
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(total, 1)));
    for (const r of ranges) {
      const h = createHash(type);
      let pos = r.first * bs;
      const end = pos + spanOf(r);
      let short = false;
      while (pos < end) {
        opts.signal?.throwIfAborted();
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
        if (bytesRead === 0) {
          short = true; // the target ends inside this range
          done += end - pos;
          break;
        }
        h.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
        done += bytesRead;
        opts.onProgress?.(done, total);
      }
      if (short || h.digest('hex') !== r.checksum?.toLowerCase()) bad.push(r);
    }
  } finally {
    await fh.close();
  }
  return { ok: bad.length === 0, bad };
}
