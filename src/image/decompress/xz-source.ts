// Reading an .xz image's block layout from the end of its source (a file, or HTTP/FTP/S3 with
// ranges) before the image is streamed from its start.
import type { Source } from '../types.ts';
import { readRange } from '../sources/read-range.ts';
import { parseFooter, parseIndex, XZ_FOOTER_BYTES, XZ_INDEX_MAX, XzIndexError, type XzLayout } from './xz-index.ts';

/** One read from the end holds the footer and the index of any image with up to a few thousand blocks. */
const TAIL_BYTES = 64 * 1024;

export interface XzTail {
  layout: XzLayout;
  /** The index and footer as read, for comparing with the streamed copy. */
  trailer: Buffer;
}

/**
 * The layout of the .xz image in `source`, or undefined when it cannot be known up front: the
 * source cannot seek or has no size, or the file is not one stream exactly (XzIndexError).
 * Other failures (network) are thrown.
 */
export async function readXzTail(source: Source, signal?: AbortSignal): Promise<XzTail | undefined> {
  if (!source.seekable) return undefined;
  const size = await source.size();
  if (size === undefined || size < 2 * XZ_FOOTER_BYTES + 8) return undefined;
  try {
    let tailAt = Math.max(0, size - TAIL_BYTES);
    let tail = await readAll(source, tailAt, size - tailAt, signal);
    const { flags, indexSize } = parseFooter(tail.subarray(tail.length - XZ_FOOTER_BYTES));
    const trailerSize = indexSize + XZ_FOOTER_BYTES;
    if (indexSize > XZ_INDEX_MAX || trailerSize + 12 > size) throw new XzIndexError(`the xz footer gives an index of ${indexSize} bytes`);
    if (trailerSize > tail.length) {
      tailAt = size - trailerSize;
      tail = await readAll(source, tailAt, trailerSize, signal);
    }
    const trailer = Buffer.from(tail.subarray(tail.length - trailerSize));
    const layout = parseIndex(trailer.subarray(0, indexSize), flags, size);
    return { layout, trailer };
  } catch (e) {
    if (e instanceof XzIndexError) return undefined;
    throw e;
  }
}

async function readAll(source: Source, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
  const b = await readRange(source, offset, length, signal);
  if (b.length < length) throw new XzIndexError(`the image ended ${length - b.length} bytes before its size`);
  return b;
}
