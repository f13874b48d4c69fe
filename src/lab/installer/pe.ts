// The few fields of a PE/COFF image (an EFI application) that assembling a Unified Kernel
// Image needs: where its sections sit in memory, so that the added ones (.linux, .initrd,
// ...) go after them without overlapping. Pure: bytes in, numbers out.

export class PeFormatError extends Error {
  override name = 'PeFormatError';
}

export interface PeSection {
  name: string;
  /** Relative to the image base. */
  virtualAddress: number;
  virtualSize: number;
  rawSize: number;
  rawOffset: number;
}

export interface PeImage {
  /** 0x20b for PE32+ (64-bit). */
  magic: number;
  imageBase: bigint;
  sectionAlignment: number;
  fileAlignment: number;
  sizeOfImage: number;
  sections: PeSection[];
}

/** Parses the headers of a PE32+ image; `what` names it in errors. */
export function parsePe(buf: Buffer, what: string): PeImage {
  const fail = (why: string): never => {
    throw new PeFormatError(`${what} is not a PE32+ EFI image: ${why}`);
  };
  if (buf.length < 0x40 || buf.toString('latin1', 0, 2) !== 'MZ') fail('no "MZ" header');
  const pe = buf.readUInt32LE(0x3c);
  if (pe + 24 > buf.length || buf.toString('latin1', pe, pe + 4) !== 'PE\0\0') fail('no "PE" signature');
  const count = buf.readUInt16LE(pe + 6);
  const optSize = buf.readUInt16LE(pe + 20);
  const opt = pe + 24;
  if (opt + optSize > buf.length || optSize < 112) fail('truncated optional header');
  const magic = buf.readUInt16LE(opt);
  if (magic !== 0x20b) fail(`optional header magic 0x${magic.toString(16)} (a 32-bit image?)`);
  const sections: PeSection[] = [];
  for (let i = 0; i < count; i++) {
    const at = opt + optSize + i * 40;
    if (at + 40 > buf.length) fail('truncated section table');
    sections.push({
      name: buf.toString('latin1', at, at + 8).replace(/\0+$/, ''),
      virtualSize: buf.readUInt32LE(at + 8),
      virtualAddress: buf.readUInt32LE(at + 12),
      rawSize: buf.readUInt32LE(at + 16),
      rawOffset: buf.readUInt32LE(at + 20),
    });
  }
  return {
    magic,
    imageBase: buf.readBigUInt64LE(opt + 24),
    sectionAlignment: buf.readUInt32LE(opt + 32),
    fileAlignment: buf.readUInt32LE(opt + 36),
    sizeOfImage: buf.readUInt32LE(opt + 56),
    sections,
  };
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Where a section ends in memory: loaders map VirtualSize bytes (the file's copy is padded to FileAlignment). */
const sectionEnd = (s: PeSection): number => s.virtualAddress + (s.virtualSize || s.rawSize);

/**
 * Addresses (relative to the image base) for new sections of the given sizes, placed one after
 * the other behind the image's last section, each aligned to a page (and to the image's own
 * section alignment when that is larger) — as ukify does.
 */
export function layoutSections(image: PeImage, sizes: { name: string; bytes: number }[]): { name: string; virtualAddress: number }[] {
  const align = Math.max(4096, image.sectionAlignment);
  let next = alignUp(Math.max(image.sizeOfImage, ...image.sections.map(sectionEnd)), align);
  return sizes.map(({ name, bytes }) => {
    if (name.length > 8) throw new PeFormatError(`section name ${name} is longer than 8 characters`);
    const placed = { name, virtualAddress: next };
    next = alignUp(next + Math.max(bytes, 1), align);
    return placed;
  });
}

/** Pairs of sections that overlap in memory (systemd-stub warns, and the boot may fail). */
export function overlappingSections(image: PeImage): [string, string][] {
  const sorted = [...image.sections].sort((a, b) => a.virtualAddress - b.virtualAddress);
  const out: [string, string][] = [];
  for (let i = 1; i < sorted.length; i++) if (sorted[i]!.virtualAddress < sectionEnd(sorted[i - 1]!)) out.push([sorted[i - 1]!.name, sorted[i]!.name]);
  return out;
}
