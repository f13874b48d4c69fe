// Disk sizes as users write them ("8G", "512M", "1T", bytes): parsed before anything starts.

export class DiskSizeError extends Error {
  override name = 'DiskSizeError';
}

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };
/** Smaller than this and OVMF, a partition table and an image do not fit. */
export const MIN_DISK = 16 * 2 ** 20;
export const MAX_DISK = 64 * 2 ** 40;

/** Bytes in `text`: a whole number with an optional K, M, G or T (powers of 1024; "GiB", "GB" too). */
export function parseDiskSize(text: string): number {
  const m = /^\s*(\d+)\s*([KMGT]?)(i?B)?\s*$/i.exec(String(text));
  if (!m) throw new DiskSizeError(`disk size ${JSON.stringify(text)} is not a size: write e.g. 8G, 512M or a number of bytes`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes < MIN_DISK) throw new DiskSizeError(`disk size ${JSON.stringify(text)} is too small: at least 16M`);
  if (bytes > MAX_DISK) throw new DiskSizeError(`disk size ${JSON.stringify(text)} is too large: at most 64T`);
  if (bytes % 512 !== 0) throw new DiskSizeError(`disk size ${JSON.stringify(text)} is not a multiple of 512 bytes`);
  return bytes;
}
