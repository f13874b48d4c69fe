// Pure parsers for what the inventory reads: /proc/cpuinfo, /proc/meminfo, `dmidecode -t 17`,
// `tpm2_getcap properties-fixed`, UEFI variables. No I/O here.
import type { CpuInfo, MemoryModuleInfo } from './schema.ts';

/** /proc/cpuinfo -> model, vendor, sockets, cores and threads (x86 and ARM layouts). */
export function parseCpuinfo(text: string, architecture: string): CpuInfo {
  const blocks = text.split(/\n\s*\n/).map(fieldsOf).filter((b) => b.has('processor'));
  const first = blocks[0] ?? new Map<string, string>();
  const physical = new Set<string>();
  const cores = new Set<string>();
  for (const b of blocks) {
    const pid = b.get('physical id') ?? '0';
    physical.add(pid);
    if (b.has('core id')) cores.add(`${pid}/${b.get('core id')}`);
  }
  const model = first.get('model name') ?? first.get('Model') ?? first.get('cpu model') ?? text.match(/^Hardware\s*:\s*(.+)$/m)?.[1]?.trim();
  const vendor = first.get('vendor_id') ?? first.get('CPU implementer');
  const mhz = Number(first.get('cpu MHz'));
  return {
    architecture,
    ...(model ? { model } : {}),
    ...(vendor ? { vendor } : {}),
    sockets: blocks.length > 0 ? physical.size : 0,
    cores: cores.size > 0 ? cores.size : blocks.length,
    threads: blocks.length,
    ...(Number.isFinite(mhz) && mhz > 0 ? { mhz } : {}),
  };
}

function fieldsOf(block: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of block.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m.set(line.slice(0, i).trim(), line.slice(i + 1).trim());
  }
  return m;
}

/** MemTotal in bytes, from /proc/meminfo. */
export function parseMemTotal(text: string): number | undefined {
  const m = /^MemTotal:\s+(\d+)\s*kB/m.exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

const UNITS: Record<string, number> = { B: 1, bytes: 1, kB: 1024, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 };

/** Values dmidecode prints for an unset string. */
const DMI_UNSET = /^(Not Specified|Unknown|None|Not Provided|To Be Filled By O\.E\.M\.|<OUT OF SPEC>|NO DIMM|Undefined)$/i;

/** `dmidecode -t 17` -> the populated memory slots (empty ones say "No Module Installed"). */
export function parseDmidecodeMemory(text: string): MemoryModuleInfo[] {
  const out: MemoryModuleInfo[] = [];
  for (const section of text.split(/\n(?=Handle )/)) {
    if (!/^\s*Memory Device\s*$/m.test(section)) continue;
    const f = fieldsOf(section.split('\n').filter((l) => /^\t[^\t]/.test(l)).join('\n'));
    const size = /^(\d+)\s*(\w+)$/.exec(f.get('Size') ?? '');
    if (!size || UNITS[size[2]!] === undefined) continue;
    const opt = (k: string) => {
      const v = f.get(k);
      return v && !DMI_UNSET.test(v) ? v : undefined;
    };
    const m: MemoryModuleInfo = { locator: f.get('Locator') ?? '', sizeBytes: Number(size[1]) * UNITS[size[2]!]! };
    const extra: [keyof MemoryModuleInfo, string][] = [['type', 'Type'], ['speed', 'Speed'], ['manufacturer', 'Manufacturer'], ['serial', 'Serial Number'], ['partNumber', 'Part Number']];
    for (const [key, name] of extra) {
      const v = opt(name);
      if (v !== undefined) (m as Record<string, unknown>)[key] = v;
    }
    out.push(m);
  }
  return out;
}

/**
 * `tpm2_getcap properties-fixed` (YAML-like) -> family, manufacturer and firmware version.
 * The manufacturer is four ASCII bytes in `raw` (0x49424D00 = "IBM"); tools print it in `value`.
 */
export function parseTpmFixedProperties(text: string): { version?: string; manufacturer?: string; firmwareVersion?: string } {
  const props = new Map<string, { raw?: string; value?: string }>();
  let current: { raw?: string; value?: string } | undefined;
  for (const line of text.split('\n')) {
    const head = /^(TPM2_PT_\w+):\s*(\S.*)?$/.exec(line);
    if (head) {
      current = {};
      props.set(head[1]!, current);
      if (head[2]) current.raw = head[2].trim();
      continue;
    }
    const kv = /^\s+(raw|value):\s*(.*)$/.exec(line);
    if (kv && current) current[kv[1] as 'raw' | 'value'] = kv[2]!.trim().replace(/^"(.*)"$/, '$1');
  }
  const out: { version?: string; manufacturer?: string; firmwareVersion?: string } = {};
  const family = props.get('TPM2_PT_FAMILY_INDICATOR');
  const fam = family?.value ?? asciiOf(family?.raw);
  if (fam) out.version = fam;
  const man = props.get('TPM2_PT_MANUFACTURER');
  const manufacturer = asciiOf(man?.raw) ?? man?.value;
  if (manufacturer) out.manufacturer = manufacturer;
  const fw1 = hexOf(props.get('TPM2_PT_FIRMWARE_VERSION_1')?.raw);
  const fw2 = hexOf(props.get('TPM2_PT_FIRMWARE_VERSION_2')?.raw);
  if (fw1 !== undefined) {
    // Most vendors: version 1 = major.minor (16 bits each); version 2 = build numbers.
    out.firmwareVersion = `${fw1 >>> 16}.${fw1 & 0xffff}` + (fw2 !== undefined ? `.${fw2 >>> 16}.${fw2 & 0xffff}` : '');
  }
  return out;
}

function hexOf(raw: string | undefined): number | undefined {
  if (!raw || !/^0x[0-9a-f]+$/i.test(raw)) return undefined;
  return Number.parseInt(raw.slice(2), 16);
}

/** 0x49424D00 -> "IBM": the printable bytes of a 32-bit value. */
function asciiOf(raw: string | undefined): string | undefined {
  const n = hexOf(raw);
  if (n === undefined) return undefined;
  const s = [24, 16, 8, 0].map((sh) => (n >>> sh) & 0xff).filter((b) => b >= 0x20 && b < 0x7f).map((b) => String.fromCharCode(b)).join('').trim();
  return s === '' ? undefined : s;
}

/** A boolean UEFI variable as efivarfs shows it: 4 bytes of attributes, then the value. */
export function efiBoolean(bytes: Buffer): boolean | undefined {
  if (bytes.length < 5) return undefined;
  return bytes[4] === 1;
}

/** The directory name Isar's device-info-collector uses for a serial: lower-case, no white space. */
export function isarSerialDir(serial: string): string {
  return serial.toLowerCase().replace(/\s+/g, '');
}

/** The run's directory name under the serial: UTC date and time, YYYY-MM-DD_HH-MM-SS. */
export function isarDateDir(at: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${at.getUTCFullYear()}-${p(at.getUTCMonth() + 1)}-${p(at.getUTCDate())}_${p(at.getUTCHours())}-${p(at.getUTCMinutes())}-${p(at.getUTCSeconds())}`;
}

/** A sysfs attribute's text without its newline; NULs and surrounding blanks removed. */
export function sysfsText(raw: string): string {
  // eslint-disable-next-line no-control-regex
  return raw.replace(/\x00/g, '').trim();
}

/** "0x8086" -> "8086". */
export function hexId(raw: string): string {
  return raw.trim().replace(/^0x/i, '').toLowerCase();
}
