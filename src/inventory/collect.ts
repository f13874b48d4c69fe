// Gathers the inventory document from sysfs, procfs, dmidecode and tpm2-tools. Every root
// is configurable (a recorded tree in tests), and every field that cannot be read is left
// out with its reason in `errors`: a missing tool or permission never stops the collection.
import { createHash, createPublicKey, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { hostname as osHostname, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { SERIAL_FILES } from '../agent/device-identity.ts';
import { cleanHostname, chooseSerial, cleanMac, cleanUuid } from '../agent/device-identity.ts';
import { efiBoolean, hexId, parseCpuinfo, parseDmidecodeMemory, parseMemTotal, parseTpmFixedProperties, sysfsText } from './parse.ts';
import {
  INVENTORY_FORMAT,
  type CommandOutputInfo,
  type DiskInfo,
  type FieldErrorInfo,
  type InventoryDocument,
  type NicInfo,
  type PciInfo,
  type TpmInfo,
  type UsbInfo,
} from './schema.ts';
import { missingMessage, toolRunner, type ToolRunner } from './tools.ts';

/** The UEFI global variable GUID (SecureBoot, SetupMode). */
const EFI_GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
/** NV index of the RSA 2048 EK certificate (TCG EK Credential Profile). */
const EK_CERT_RSA_INDEX = '0x1c00002';

export interface ExtraCommand {
  name: string;
  /** argv, or a shell command line run with /bin/sh -c. */
  command: string | string[];
  /** Seconds (default 60). */
  timeout?: number;
}

export interface CollectOptions {
  sysfs?: string;
  proc?: string;
  dev?: string;
  /** PATH for the tools (default the agent's). */
  path?: string;
  /** tpm2-tools TCTI (default device:<dev>/tpmrm0). */
  tpmTcti?: string;
  /** Read the endorsement key (creates it in the TPM, transiently: about a second on real TPMs). */
  endorsementKey?: boolean;
  commands?: ExtraCommand[];
  hostname?: string;
  agentVersion?: string;
  now?: Date;
  signal?: AbortSignal;
  /** Per tool call, ms (default 30 s). */
  toolTimeoutMs?: number;
  /** Tests: run tools through this instead of the real runner. */
  tools?: ToolRunner;
}

/** Reads text files under the roots, recording why one could not be read (but ENOENT: absent is normal). */
class Reader {
  constructor(private readonly errors: FieldErrorInfo[]) {}

  /** With `required`, a missing file is an error too (procfs files always exist). */
  async text(path: string, field?: string, required = false): Promise<string | undefined> {
    try {
      return sysfsText(await readFile(path, 'utf8'));
    } catch (e) {
      if (required && field !== undefined && (e as NodeJS.ErrnoException).code === 'ENOENT') this.error(field, `${path} does not exist: is procfs mounted there?`);
      else this.note(e, path, field);
      return undefined;
    }
  }

  async bytes(path: string, field?: string): Promise<Buffer | undefined> {
    try {
      return await readFile(path);
    } catch (e) {
      this.note(e, path, field);
      return undefined;
    }
  }

  async list(dir: string, field?: string): Promise<string[]> {
    try {
      return (await readdir(dir)).sort(naturalCompare);
    } catch (e) {
      this.note(e, dir, field);
      return [];
    }
  }

  error(field: string, message: string): void {
    this.errors.push({ field, message });
  }

  private note(e: unknown, path: string, field: string | undefined): void {
    const code = (e as NodeJS.ErrnoException).code;
    if (field === undefined || code === 'ENOENT' || code === 'ENOTDIR') return;
    if (code === 'EACCES' || code === 'EPERM') this.error(field, `permission denied reading ${path}: run the agent as root`);
    else this.error(field, `cannot read ${path}: ${(e as Error).message}`);
  }
}

/** sda < sda2 < sda10; nvme0n1 < nvme1n1. */
function naturalCompare(a: string, b: string): number {
  return a.localeCompare(b, 'en', { numeric: true });
}

async function linkName(path: string): Promise<string | undefined> {
  try {
    return basename(await readlink(path));
  } catch {
    return undefined;
  }
}

async function linkTarget(path: string): Promise<string | undefined> {
  try {
    return await readlink(path);
  } catch {
    return undefined;
  }
}

const defined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined && v !== '')) as T;

export async function collectInventory(o: CollectOptions = {}): Promise<InventoryDocument> {
  const sys = o.sysfs ?? '/sys';
  const proc = o.proc ?? '/proc';
  const dev = o.dev ?? '/dev';
  const errors: FieldErrorInfo[] = [];
  const r = new Reader(errors);
  const tools = o.tools ?? toolRunner({ ...(o.path !== undefined ? { path: o.path } : {}), ...(o.signal ? { signal: o.signal } : {}), timeoutMs: o.toolTimeoutMs ?? 30_000 });

  const dmi = join(sys, 'class', 'dmi', 'id');
  const d = async (f: string, field: string) => r.text(join(dmi, f), field);
  const system = defined({
    vendor: await d('sys_vendor', 'system.vendor'),
    product: await d('product_name', 'system.product'),
    version: await d('product_version', 'system.version'),
    serial: await d('product_serial', 'system.serial'),
    uuid: cleanUuid(await d('product_uuid', 'system.uuid')),
    sku: await d('product_sku', 'system.sku'),
    family: await d('product_family', 'system.family'),
  });
  const board = defined({
    vendor: await d('board_vendor', 'board.vendor'),
    product: await d('board_name', 'board.product'),
    version: await d('board_version', 'board.version'),
    serial: await d('board_serial', 'board.serial'),
    assetTag: await d('board_asset_tag', 'board.assetTag'),
  });
  const chassis = defined({
    vendor: await d('chassis_vendor', 'chassis.vendor'),
    type: await d('chassis_type', 'chassis.type'),
    version: await d('chassis_version', 'chassis.version'),
    serial: await d('chassis_serial', 'chassis.serial'),
    assetTag: await d('chassis_asset_tag', 'chassis.assetTag'),
  });
  const uefi = (await r.list(join(sys, 'firmware', 'efi'))).length > 0;
  const firmware = {
    mode: uefi ? ('uefi' as const) : ('bios' as const),
    ...defined({
      vendor: await d('bios_vendor', 'firmware.vendor'),
      version: await d('bios_version', 'firmware.version'),
      date: await d('bios_date', 'firmware.date'),
      release: await d('bios_release', 'firmware.release'),
    }),
  };

  // dmidecode reads the SMBIOS tables itself: the serials the sysfs files hide from
  // non-root, and the memory slots sysfs does not show.
  const dmidecode = async (args: string[], field: string): Promise<string | undefined> => {
    const res = await tools.run('dmidecode', args);
    if (res.failure) {
      r.error(field, res.failure);
      return undefined;
    }
    return res.stdout;
  };
  const modulesText = await dmidecode(['-t', '17'], 'memory.modules');
  if (modulesText !== undefined) {
    if (system.serial === undefined) {
      const s = (await dmidecode(['-s', 'system-serial-number'], 'system.serial'))?.trim();
      if (s) {
        system.serial = s;
        dropError(errors, 'system.serial');
      }
    }
  }

  const serialFiles = { product_serial: system.serial, board_serial: board.serial, chassis_serial: chassis.serial } as Record<(typeof SERIAL_FILES)[number], string | undefined>;
  const serial = chooseSerial(Object.fromEntries(Object.entries(serialFiles).filter(([, v]) => v !== undefined)));

  const cpuinfo = await r.text(join(proc, 'cpuinfo'), 'cpus', true);
  const cpus = parseCpuinfo(cpuinfo ?? '', process.arch);
  const meminfo = await r.text(join(proc, 'meminfo'), 'memory.totalBytes', true);
  const total = meminfo !== undefined ? parseMemTotal(meminfo) : undefined;
  const memory = { ...(total !== undefined ? { totalBytes: total } : {}), ...(modulesText !== undefined ? { modules: parseDmidecodeMemory(modulesText) } : {}) };

  const host = cleanHostname(o.hostname ?? osHostname());
  return {
    format: INVENTORY_FORMAT,
    collectedAt: (o.now ?? new Date()).toISOString(),
    ...(o.agentVersion ? { agentVersion: o.agentVersion } : {}),
    ...(serial ? { serial } : {}),
    ...(host ? { hostname: host } : {}),
    system,
    board,
    chassis,
    firmware,
    cpus,
    memory,
    disks: await disks(sys, r),
    nics: await nics(sys, r),
    pci: await pci(sys, r),
    usb: await usb(sys, r),
    tpm: await tpm(sys, dev, r, tools, o),
    secureBoot: await secureBoot(sys, r),
    commands: await commands(o.commands ?? [], tools, r),
    errors,
  };
}

function dropError(errors: FieldErrorInfo[], field: string): void {
  for (let i = errors.length - 1; i >= 0; i--) if (errors[i]!.field === field) errors.splice(i, 1);
}

/** Whole disks: entries of /sys/block backed by a device (not loop, ram, zram, dm, md). */
async function disks(sys: string, r: Reader): Promise<DiskInfo[]> {
  const out: DiskInfo[] = [];
  const block = join(sys, 'block');
  for (const name of await r.list(block, 'disks')) {
    const dir = join(block, name);
    const device = await linkTarget(join(dir, 'device'));
    if (device === undefined) continue;
    const sectors = Number(await r.text(join(dir, 'size'), `disks.${name}.sizeBytes`));
    const rotational = await r.text(join(dir, 'queue', 'rotational'));
    const whole = await linkTarget(dir);
    const path = `${whole ?? ''}/${device}`;
    const transport = /\/nvme/.test(path) ? 'nvme' : /\/usb\d/.test(path) ? 'usb' : /\/virtio\d/.test(path) ? 'virtio' : /\/ata\d/.test(path) ? 'ata' : /\/mmc/.test(path) ? 'mmc' : /\/host\d+\/target/.test(path) ? 'scsi' : undefined;
    out.push({
      name,
      sizeBytes: Number.isFinite(sectors) ? sectors * 512 : 0,
      ...defined({
        model: (await r.text(join(dir, 'device', 'model'))) ?? undefined,
        vendor: (await r.text(join(dir, 'device', 'vendor'))) ?? undefined,
        // virtio: block/serial; NVMe and eMMC: device/serial; SCSI/ATA: vpd_pg80 is binary, the kernel has no text.
        serial: (await r.text(join(dir, 'serial'))) ?? (await r.text(join(dir, 'device', 'serial'))) ?? undefined,
        wwn: (await r.text(join(dir, 'wwid'))) ?? (await r.text(join(dir, 'device', 'wwid'))) ?? undefined,
        transport,
      }),
      ...(rotational !== undefined ? { rotational: rotational === '1' } : {}),
      removable: (await r.text(join(dir, 'removable'))) === '1',
    });
  }
  return out;
}

async function nics(sys: string, r: Reader): Promise<NicInfo[]> {
  const out: NicInfo[] = [];
  const net = join(sys, 'class', 'net');
  for (const name of await r.list(net, 'nics')) {
    const dir = join(net, name);
    if ((await linkTarget(join(dir, 'device'))) === undefined && (await r.list(join(dir, 'device'))).length === 0) continue;
    const mac = cleanMac(await r.text(join(dir, 'bonding_slave', 'perm_hwaddr'))) ?? cleanMac(await r.text(join(dir, 'address')));
    const carrier = await r.text(join(dir, 'carrier'));
    const speed = Number(await r.text(join(dir, 'speed')));
    out.push({
      name,
      state: (await r.text(join(dir, 'operstate'))) ?? 'unknown',
      ...defined({ mac, driver: await linkName(join(dir, 'device', 'driver')), bus: await linkName(join(dir, 'device')) }),
      ...(carrier === '0' || carrier === '1' ? { carrier: carrier === '1' } : {}),
      ...(Number.isInteger(speed) && speed > 0 ? { speedMbps: speed } : {}),
    });
  }
  return out;
}

async function pci(sys: string, r: Reader): Promise<PciInfo[]> {
  const out: PciInfo[] = [];
  const base = join(sys, 'bus', 'pci', 'devices');
  for (const address of await r.list(base)) {
    const dir = join(base, address);
    const t = (f: string) => r.text(join(dir, f));
    const vendor = await t('vendor');
    const device = await t('device');
    if (vendor === undefined || device === undefined) continue;
    const sv = await t('subsystem_vendor');
    const sd = await t('subsystem_device');
    out.push({
      address,
      vendorId: hexId(vendor),
      deviceId: hexId(device),
      ...(sv !== undefined ? { subsystemVendorId: hexId(sv) } : {}),
      ...(sd !== undefined ? { subsystemDeviceId: hexId(sd) } : {}),
      class: hexId((await t('class')) ?? '').padStart(6, '0'),
      ...defined({ driver: await linkName(join(dir, 'driver')) }),
    });
  }
  return out;
}

async function usb(sys: string, r: Reader): Promise<UsbInfo[]> {
  const out: UsbInfo[] = [];
  const base = join(sys, 'bus', 'usb', 'devices');
  for (const path of await r.list(base)) {
    if (path.includes(':')) continue; // interfaces, not devices
    const dir = join(base, path);
    const t = (f: string) => r.text(join(dir, f));
    const vendor = await t('idVendor');
    const product = await t('idProduct');
    if (vendor === undefined || product === undefined) continue;
    const bus = Number(await t('busnum'));
    const devnum = Number(await t('devnum'));
    const speed = Number(await t('speed'));
    out.push({
      path,
      vendorId: hexId(vendor),
      productId: hexId(product),
      ...(Number.isInteger(bus) ? { bus } : {}),
      ...(Number.isInteger(devnum) ? { device: devnum } : {}),
      ...defined({ manufacturer: await t('manufacturer'), product: await t('product'), serial: await t('serial') }),
      ...(Number.isFinite(speed) && speed > 0 ? { speedMbps: speed } : {}),
    });
  }
  return out;
}

async function tpm(sys: string, dev: string, r: Reader, tools: ToolRunner, o: CollectOptions): Promise<TpmInfo> {
  const names = (await r.list(join(sys, 'class', 'tpm'), 'tpm')).filter((n) => /^tpm\d+$/.test(n));
  if (names.length === 0) return { present: false };
  const name = names[0]!;
  const major = await r.text(join(sys, 'class', 'tpm', name, 'tpm_version_major'));
  const info: TpmInfo = { present: true, device: join(dev, name.replace(/^tpm/, 'tpmrm')), ...(major === '2' ? { version: '2.0' } : major === '1' ? { version: '1.2' } : {}) };
  if (major === '1') {
    r.error('tpm.manufacturer', 'a TPM 1.2: manufacturer and endorsement key are read from TPM 2.0 only');
    return info;
  }
  const env = { TPM2TOOLS_TCTI: o.tpmTcti ?? `device:${info.device}` };
  const caps = await tools.run('tpm2_getcap', ['properties-fixed'], { env });
  if (caps.failure) r.error('tpm.manufacturer', caps.failure);
  else Object.assign(info, parseTpmFixedProperties(caps.stdout));

  if (o.endorsementKey !== false) {
    const tmp = await mkdtemp(join(tmpdir(), 'bootline-ek-'));
    try {
      const pem = join(tmp, 'ek.pem');
      // The EK is derived from the TPM's endorsement seed: the same key every time, so
      // creating it (transiently, flushed when the tool exits) reads it.
      const ek = await tools.run('tpm2_createek', ['-c', join(tmp, 'ek.ctx'), '-G', 'rsa', '-u', pem, '-f', 'pem'], { env });
      if (ek.failure) r.error('tpm.endorsementKey', ek.failure);
      else {
        const text = await readFile(pem, 'utf8');
        const der = createPublicKey(text).export({ type: 'spki', format: 'der' });
        info.endorsementKey = { algorithm: 'rsa', publicKeyPem: text.trim(), sha256: createHash('sha256').update(der).digest('hex') };
      }
      const nv = await tools.run('tpm2_getcap', ['handles-nv-index'], { env });
      if (nv.failure) r.error('tpm.ekCertificatePem', nv.failure);
      else if (nv.stdout.toLowerCase().includes(EK_CERT_RSA_INDEX)) {
        const certFile = join(tmp, 'ek.der');
        const cert = await tools.run('tpm2_nvread', [EK_CERT_RSA_INDEX, '-o', certFile], { env });
        if (cert.failure) r.error('tpm.ekCertificatePem', cert.failure);
        else {
          try {
            info.ekCertificatePem = derCertificateToPem(await readFile(certFile));
          } catch (e) {
            r.error('tpm.ekCertificatePem', `the EK certificate in NV index ${EK_CERT_RSA_INDEX} does not parse: ${(e as Error).message}`);
          }
        }
      }
    } catch (e) {
      r.error('tpm.endorsementKey', (e as Error).message);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }
  return info;
}

/** NV indices are read in whole (padded) blocks: the certificate is the DER SEQUENCE at the start. */
export function derCertificateToPem(bytes: Buffer): string {
  let der = bytes;
  if (bytes[0] === 0x30 && bytes[1] === 0x82) der = bytes.subarray(0, 4 + bytes.readUInt16BE(2));
  return new X509Certificate(der).toString().trim();
}

async function secureBoot(sys: string, r: Reader): Promise<InventoryDocument['secureBoot']> {
  const vars = join(sys, 'firmware', 'efi', 'efivars');
  const names = await r.list(vars);
  if (names.length === 0) {
    const uefi = (await r.list(join(sys, 'firmware', 'efi'))).length > 0;
    if (uefi) r.error('secureBoot', `no UEFI variables under ${vars}: mount efivarfs there (mount -t efivarfs efivarfs ${vars})`);
    return { supported: false };
  }
  const read = async (v: string) => {
    const b = await r.bytes(join(vars, `${v}-${EFI_GLOBAL}`), `secureBoot.${v === 'SecureBoot' ? 'enabled' : 'setupMode'}`);
    return b ? efiBoolean(b) : undefined;
  };
  const enabled = await read('SecureBoot');
  const setupMode = await read('SetupMode');
  return { supported: true, ...(enabled !== undefined ? { enabled } : {}), ...(setupMode !== undefined ? { setupMode } : {}) };
}

const MAX_OUTPUT = 256 * 1024;

async function commands(list: ExtraCommand[], tools: ToolRunner, r: Reader): Promise<CommandOutputInfo[]> {
  const out: CommandOutputInfo[] = [];
  for (const c of list) {
    const argv = typeof c.command === 'string' ? ['/bin/sh', '-c', c.command] : c.command;
    const res = await tools.run(argv[0]!, argv.slice(1), { timeoutMs: (c.timeout ?? 60) * 1000 });
    if (res.failure) r.error(`commands.${c.name}`, res.missing ? missingMessage(argv[0]!) : res.failure);
    out.push({ name: c.name, command: argv, exitCode: res.exitCode, stdout: res.stdout.slice(0, MAX_OUTPUT), stderr: res.stderr.slice(0, MAX_OUTPUT) });
  }
  return out;
}
