// Where a sparse file holds data, from the file system's own allocation map
// (lseek SEEK_DATA/SEEK_HOLE), like bmaptool. Never by looking for zero bytes:
// zero-filled blocks that were written as data (a FAT table, a partition
// table's padding) must stay mapped, or the target keeps whatever stale bytes
// it had there (bmaptool issue #128).
import { open } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

export interface Extent {
  /** First byte of data. */
  start: number;
  /** One past the last byte of data (exclusive); at most the file size. */
  end: number;
}

interface SeekAddon {
  lseek(fd: number, offset: number, whence: number): number;
  SEEK_SET: number;
  SEEK_END: number;
  SEEK_DATA: number;
  SEEK_HOLE: number;
}

const ADDON_REL = 'native/seek-data/build/Release/seek_data.node';
// From src/image/holes.ts (tsx, tests) and from dist/bootline.mjs (the bundle).
const CANDIDATES = [`../../${ADDON_REL}`, `../${ADDON_REL}`];

let addon: SeekAddon | undefined;

function loadAddon(): SeekAddon {
  if (addon) return addon;
  const require = createRequire(import.meta.url);
  const tried: string[] = [];
  for (const rel of CANDIDATES) {
    const file = fileURLToPath(new URL(rel, import.meta.url));
    try {
      addon = require(file) as SeekAddon;
      return addon;
    } catch (err) {
      tried.push(`${file} (${(err as Error).message.split('\n')[0]})`);
    }
  }
  throw new Error(
    `the seek-data native addon is missing, so data extents cannot be found (Node has no SEEK_DATA). ` +
      `Tried: ${tried.join('; ')}. Build it from the repository root with ` +
      `\`npm run build:native\` (node-gyp rebuild -C native/seek-data; needs a C compiler and Node's headers).`,
  );
}

/**
 * The data extents of a file, in order, merged where adjacent, clipped to the
 * file size. A file system without SEEK_DATA support (EINVAL) gets one extent
 * covering the whole file, as bmaptool does: copying too much is safe, too
 * little is not.
 */
export async function dataExtents(path: string): Promise<Extent[]> {
  const a = loadAddon();
  const fh = await open(path, 'r');
  try {
    const st = await fh.stat();
    // A block device reports st_size 0; ask the device itself.
    const size = st.isBlockDevice() ? a.lseek(fh.fd, 0, a.SEEK_END) : st.size;
    if (size <= 0) return [];
    const out: Extent[] = [];
    let pos = 0;
    try {
      while (pos < size) {
        const start = a.lseek(fh.fd, pos, a.SEEK_DATA);
        if (start < 0 || start >= size) break; // ENXIO: no more data
        let end = a.lseek(fh.fd, start, a.SEEK_HOLE);
        // There is always a virtual hole at EOF; -1 here would be a kernel oddity.
        if (end < 0 || end > size) end = size;
        if (end <= start) throw new Error(`lseek on ${path} went backwards (data at ${start}, hole at ${end})`);
        const prev = out[out.length - 1];
        if (prev && prev.end === start) prev.end = end;
        else out.push({ start, end });
        pos = end;
      }
    } catch (err) {
      if ((err as { code?: string }).code === 'EINVAL') return [{ start: 0, end: size }];
      throw err;
    }
    return out;
  } finally {
    await fh.close();
  }
}
