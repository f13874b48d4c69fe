// Builds a bmap for a sparse image file: the blocks the file system holds
// data for (never guessed from zero bytes), each range with its sha256.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Bmap, BmapRange } from './types.ts';
import { dataExtents } from './holes.ts';

const CHUNK = 1024 * 1024;

export interface CreateBmapOptions {
  /** Block size of the map, a power of two >= 512 (default 4096). */
  blockSize?: number;
  /** Called as ranges are hashed: bytes hashed so far, bytes to hash in all. */
  onProgress?: (done: number, total: number) => void;
}

/** Data extents in bytes -> block ranges, rounded out to whole blocks and merged. */
export function extentsToRanges(extents: ReadonlyArray<{ start: number; end: number }>, blockSize: number): BmapRange[] {
  const ranges: BmapRange[] = [];
  for (const e of extents) {
    if (e.end <= e.start) continue;
    const first = Math.floor(e.start / blockSize);
    const last = Math.ceil(e.end / blockSize) - 1;
    const prev = ranges[ranges.length - 1];
    // Two extents can share a block (the file system's blocks are smaller
    // than ours) or touch; either way one range.
    if (prev && first <= prev.last + 1) prev.last = Math.max(prev.last, last);
    else ranges.push({ first, last });
  }
  return ranges;
}

export async function createBmap(imagePath: string, opts: CreateBmapOptions = {}): Promise<Bmap> {
  const blockSize = opts.blockSize ?? 4096;
  if (!Number.isSafeInteger(blockSize) || blockSize < 512 || blockSize > 64 * 1024 * 1024 || (blockSize & (blockSize - 1)) !== 0) {
    throw new Error(`createBmap: block size ${blockSize} is not a power of two between 512 and 64 MiB`);
  }
  const fh = await open(imagePath, 'r');
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`cannot create a bmap for ${imagePath}: not a regular file`);
    const imageSize = st.size;
    if (imageSize === 0) throw new Error(`cannot create a bmap for ${imagePath}: the file is empty`);
    const blocksCount = Math.ceil(imageSize / blockSize);
    const ranges = extentsToRanges(await dataExtents(imagePath), blockSize);

    // A range's checksum covers the bytes the file has: the last block of an
    // image whose size is not a multiple of the block size is hashed short,
    // as bmaptool does (its read just returns fewer bytes at EOF).
    const spanOf = (r: BmapRange) => Math.min((r.last + 1) * blockSize, imageSize) - r.first * blockSize;
    let total = 0;
    for (const r of ranges) total += spanOf(r);
    let done = 0;
    opts.onProgress?.(0, total);

    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(total, 1)));
    let mapped = 0;
    for (const r of ranges) {
      const h = createHash('sha256');
      let pos = r.first * blockSize;
      const end = pos + spanOf(r);
      while (pos < end) {
        const want = Math.min(buf.length, end - pos);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) throw new Error(`${imagePath} shrank while its bmap was being created (no data at byte ${pos}); is something writing to it?`);
        h.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
        done += bytesRead;
        opts.onProgress?.(done, total);
      }
      r.checksum = h.digest('hex');
      mapped += r.last - r.first + 1;
    }

    return {
      version: '2.0',
      imageSize,
      blockSize,
      blocksCount,
      mappedBlocksCount: mapped,
      checksumType: 'sha256',
      ranges,
    };
  } finally {
    await fh.close();
  }
}
