// Who this device is, as the server's enrollment wants it: the SMBIOS serial number and
// UUID, the MAC addresses of its physical network interfaces, and its host name. Read
// from sysfs (root overridable with BOOTLINE_SYSFS_ROOT, so that tests use a recorded
// tree); everything else here is pure parsing.
import { readFile, readdir, stat } from 'node:fs/promises';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';

export interface DeviceIdentity {
  serial?: string;
  uuid?: string;
  macs: string[];
  hostname?: string;
}

export interface IdentityOptions {
  /** Where sysfs is mounted (default BOOTLINE_SYSFS_ROOT, else /sys). */
  sysfsRoot?: string;
  /** The host name (default the kernel's). */
  hostname?: string;
}

export const SYSFS_ROOT_ENV = 'BOOTLINE_SYSFS_ROOT';

/** Serial files in the order they are tried: the system's, then the board's, then the chassis'. */
export const SERIAL_FILES = ['product_serial', 'board_serial', 'chassis_serial'] as const;

/** Longest serial the server accepts. */
const MAX_SERIAL = 200;
/** Most MAC addresses the server accepts. */
const MAX_MACS = 64;

/**
 * What firmware vendors write into SMBIOS when nobody set a value: never a serial
 * number. Compared lower-case, without surrounding white space.
 */
const PLACEHOLDERS = new Set([
  'to be filled by o.e.m.',
  'to be filled by oem',
  'default string',
  'system serial number',
  'chassis serial number',
  'base board serial number',
  'serial number',
  'serial',
  'not specified',
  'not applicable',
  'not available',
  'none',
  'n/a',
  'na',
  'oem',
  'o.e.m.',
  'invalid',
  'unknown',
  'empty',
  'null',
  '123456789',
  '0123456789',
  '1234567890',
]);

/** A usable serial number, or undefined for an empty, placeholder or filler value. */
export function cleanSerial(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  // SMBIOS strings are printable ASCII; firmware sometimes pads with NULs or spaces.
  const v = [...raw].filter((c) => c >= ' ' && c !== '\x7f').join('').trim();
  if (v === '' || v.length > MAX_SERIAL) return undefined;
  if (PLACEHOLDERS.has(v.toLowerCase())) return undefined;
  // A run of one filler character: "0", "00000000", "FFFFFFFF", "xxxxxx", "........", "    ".
  if (/^([0fx.\- *#])\1*$/i.test(v)) return undefined;
  return v;
}

/** A usable SMBIOS UUID, lower-case; undefined for empty or filler ones (all zeros, all F). */
export function cleanUuid(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const v = raw.trim().toLowerCase();
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v)) return undefined;
  const hex = v.replace(/-/g, '');
  if (/^0+$/.test(hex) || /^f+$/.test(hex)) return undefined;
  // The American Megatrends default ("03000200-0400-0500-0006-000700080009") is on countless boards.
  if (hex === '03000200040005000006000700080009') return undefined;
  return v;
}

/** A MAC address as the server wants it (six lower-case hex pairs), or undefined. */
export function cleanMac(raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  const v = raw.trim().toLowerCase();
  // InfiniBand (20 bytes), firewire and the like are not MAC-48 addresses.
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(v)) return undefined;
  if (v === '00:00:00:00:00:00' || v === 'ff:ff:ff:ff:ff:ff') return undefined;
  return v;
}

/** The host name, unless it is one that says nothing ("(none)", "localhost"). */
export function cleanHostname(raw: string | undefined): string | undefined {
  const v = raw?.trim();
  if (!v || v === '(none)' || v === 'localhost' || v === 'localhost.localdomain' || v.length > 253) return undefined;
  return v;
}

/** The first usable serial of the candidates, in SERIAL_FILES order. */
export function chooseSerial(values: Partial<Record<(typeof SERIAL_FILES)[number], string>>): string | undefined {
  for (const f of SERIAL_FILES) {
    const s = cleanSerial(values[f]);
    if (s) return s;
  }
  return undefined;
}

export function sysfsRoot(o: IdentityOptions = {}): string {
  return o.sysfsRoot ?? (process.env[SYSFS_ROOT_ENV] || '/sys');
}

/** Reads this device's identity. Unreadable files (product_serial is root-only) count as absent. */
export async function readDeviceIdentity(o: IdentityOptions = {}): Promise<DeviceIdentity> {
  const root = sysfsRoot(o);
  const dmi = join(root, 'class', 'dmi', 'id');
  const serials: Partial<Record<(typeof SERIAL_FILES)[number], string>> = {};
  for (const f of SERIAL_FILES) {
    const v = await readOptional(join(dmi, f));
    if (v !== undefined) serials[f] = v;
  }
  const serial = chooseSerial(serials);
  const uuid = cleanUuid(await readOptional(join(dmi, 'product_uuid')));
  const macs = await physicalMacs(join(root, 'class', 'net'));
  const host = cleanHostname(o.hostname ?? osHostname());
  return { ...(serial ? { serial } : {}), ...(uuid ? { uuid } : {}), macs, ...(host ? { hostname: host } : {}) };
}

/**
 * MACs of the interfaces backed by a device (a `device` link: NICs, not lo, bridges,
 * bonds, VLANs or tunnels), by interface name. A bonded NIC's own address is its
 * `bonding_slave/perm_hwaddr`: `address` then shows the bond's.
 */
async function physicalMacs(netDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(netDir)).sort();
  } catch {
    return [];
  }
  const macs: string[] = [];
  for (const name of names) {
    const dir = join(netDir, name);
    if (!(await exists(join(dir, 'device')))) continue;
    const mac = cleanMac(await readOptional(join(dir, 'bonding_slave', 'perm_hwaddr'))) ?? cleanMac(await readOptional(join(dir, 'address')));
    if (mac && !macs.includes(mac)) macs.push(mac);
  }
  return macs.slice(0, MAX_MACS);
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
