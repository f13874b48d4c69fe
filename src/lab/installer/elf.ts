// What an ELF file needs at run time: its interpreter (PT_INTERP) and the shared libraries
// its dynamic section names (DT_NEEDED), read from the file's bytes — `ldd` without running
// anything, so that it works on binaries of the unpacked tree. 64-bit little-endian only:
// the installer is amd64.

export interface ElfNeeds {
  /** e.g. /lib64/ld-linux-x86-64.so.2; undefined for static binaries and libraries. */
  interpreter?: string;
  /** DT_NEEDED sonames, in order. */
  needed: string[];
  /** DT_RUNPATH (or the older DT_RPATH) directories, searched before the default ones (systemd's tools: /usr/lib/x86_64-linux-gnu/systemd). */
  runpath?: string[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;

export const isElf = (head: Buffer): boolean => head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46;

/** undefined when `buf` is no ELF64 little-endian file (scripts, data, other architectures). */
export function elfNeeds(buf: Buffer): ElfNeeds | undefined {
  if (!isElf(buf) || buf[4] !== 2 || buf[5] !== 1 || buf.length < 64) return undefined;
  const phoff = Number(buf.readBigUInt64LE(32));
  const phentsize = buf.readUInt16LE(54);
  const phnum = buf.readUInt16LE(56);
  const loads: { vaddr: bigint; offset: bigint; filesz: bigint }[] = [];
  let dynamic: { offset: number; size: number } | undefined;
  let interpreter: string | undefined;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > buf.length) return undefined;
    const type = buf.readUInt32LE(ph);
    const offset = buf.readBigUInt64LE(ph + 8);
    const vaddr = buf.readBigUInt64LE(ph + 16);
    const filesz = buf.readBigUInt64LE(ph + 32);
    if (type === PT_LOAD) loads.push({ vaddr, offset, filesz });
    else if (type === PT_DYNAMIC) dynamic = { offset: Number(offset), size: Number(filesz) };
    else if (type === PT_INTERP) interpreter = cString(buf, Number(offset));
  }
  if (!dynamic) return { ...(interpreter ? { interpreter } : {}), needed: [] };
  // DT_STRTAB is an address: map it to a file offset through the PT_LOAD segments.
  const toOffset = (addr: bigint): number | undefined => {
    const l = loads.find((s) => addr >= s.vaddr && addr < s.vaddr + s.filesz);
    return l ? Number(addr - l.vaddr + l.offset) : undefined;
  };
  const neededAt: bigint[] = [];
  let runpathAt: bigint | undefined;
  let strtab: number | undefined;
  for (let p = dynamic.offset; p + 16 <= dynamic.offset + dynamic.size && p + 16 <= buf.length; p += 16) {
    const tag = buf.readBigInt64LE(p);
    const val = buf.readBigUInt64LE(p + 8);
    if (tag === 0n) break;
    if (tag === DT_NEEDED) neededAt.push(val);
    else if (tag === DT_STRTAB) strtab = toOffset(val);
    else if (tag === DT_RUNPATH || (tag === DT_RPATH && runpathAt === undefined)) runpathAt = val;
  }
  if (strtab === undefined) return undefined;
  // $ORIGIN and friends are not expanded: Debian's packages do not use them.
  const runpath = runpathAt === undefined ? [] : cString(buf, strtab + Number(runpathAt)).split(':').filter(Boolean);
  return { ...(interpreter ? { interpreter } : {}), needed: neededAt.map((o) => cString(buf, strtab + Number(o))), ...(runpath.length > 0 ? { runpath } : {}) };
}

function cString(buf: Buffer, at: number): string {
  const end = buf.indexOf(0, at);
  return buf.toString('latin1', at, end < 0 ? buf.length : end);
}
