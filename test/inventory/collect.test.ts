// The inventory collectors on recorded trees (exact values), a real swtpm for the TPM and
// its endorsement key, efivarfs bytes for Secure Boot, and the per-field errors that
// replace aborting when a tool or file is missing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { collectInventory } from '../../src/inventory/collect.ts';
import { InventoryDocument } from '../../src/inventory/schema.ts';
import { inventoryJsonSchema } from '../../src/inventory/json-schema.ts';
import { deviceInfosDir, writeDeviceInfos } from '../../src/inventory/device-infos.ts';
import { parseDmidecodeMemory, parseTpmFixedProperties } from '../../src/inventory/parse.ts';
import { toolRunner } from '../../src/inventory/tools.ts';
import { tempDir } from '../helpers.ts';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
/** Recorded from this project's CI machine (a cloud VM: virtio disk and NIC, no DMI, no TPM, BIOS boot). */
const VM = join(FIXTURES, 'sysfs-vm');
const PC = join(FIXTURES, 'sysfs-pc');
const dir = tempDir('bootline-inventory-');
/** A PATH with none of the tools: every tool is "not installed". */
const NO_TOOLS = join(dir, 'empty-path');
mkdirSync(NO_TOOLS);
// Fastify's validator knows the JSON Schema formats; TypeBox's Value needs to be told.
if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', (v) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(v));

test('a recorded VM: CPUs, memory, the virtio disk, the NIC and every PCI function, exactly as recorded; loop and zram devices are not disks', async () => {
  const doc = await collectInventory({ sysfs: join(VM, 'sys'), proc: join(VM, 'proc'), path: NO_TOOLS, hostname: 'line-7', now: new Date('2026-12-01T02:44:00Z') });
  assert.ok(Value.Check(InventoryDocument, doc), [...Value.Errors(InventoryDocument, doc)].map((e) => `${e.path}: ${e.message}`).join('\n'));
  assert.equal(doc.collectedAt, '2026-12-01T02:44:00.000Z');
  assert.equal(doc.hostname, 'line-7');
  assert.deepEqual(doc.cpus, { architecture: process.arch, model: 'AMD EPYC', vendor: 'AuthenticAMD', sockets: 1, cores: 2, threads: 2, mhz: 2445.404 });
  assert.deepEqual(doc.memory, { totalBytes: 24683656 * 1024 });
  assert.deepEqual(doc.disks, [{ name: 'vda', sizeBytes: 536870912 * 512, vendor: '0x1af4', serial: '20066335207100159', transport: 'virtio', rotational: true, removable: false }]);
  assert.deepEqual(doc.nics, [{ name: 'eth0', state: 'up', mac: '02:fc:00:00:00:01', driver: 'virtio_net', bus: 'virtio2', carrier: true }]);
  assert.deepEqual(
    doc.pci.map((p) => `${p.address} ${p.vendorId}:${p.deviceId} ${p.class} ${p.driver ?? '-'}`),
    ['0000:00:00.0 8086:0d57 060000 -', '0000:00:01.0 1af4:1045 ffff00 virtio-pci', '0000:00:02.0 1af4:1042 018000 virtio-pci', '0000:00:03.0 1af4:1041 020000 virtio-pci', '0000:00:04.0 1af4:1053 ffff00 virtio-pci', '0000:00:05.0 1af4:1044 ffff00 virtio-pci'],
  );
  assert.deepEqual(doc.usb, []);
  assert.deepEqual(doc.tpm, { present: false });
  assert.deepEqual(doc.secureBoot, { supported: false });
  assert.equal(doc.firmware.mode, 'bios');
  assert.equal(doc.serial, undefined, 'no DMI: no serial');
  // dmidecode is not on PATH: said for the field it would have filled, nothing aborted.
  assert.deepEqual(doc.errors, [{ field: 'memory.modules', message: 'dmidecode is not installed (Debian package dmidecode)' }]);
});

test('a recorded PC: the serial skips the firmware placeholder and comes from the board; virtual interfaces are not NICs', async () => {
  const doc = await collectInventory({ sysfs: PC, proc: join(VM, 'proc'), path: NO_TOOLS });
  assert.equal(doc.serial, 'PF3XK2A9');
  assert.equal(doc.system.serial, 'Default string', 'the raw value is kept');
  assert.equal(doc.system.uuid, '4c4c4544-0042-3510-8052-b4c04f564432');
  assert.deepEqual(
    doc.nics.map((n) => [n.name, n.mac ?? null]),
    [['eno1', '3c:ec:ef:12:34:56'], ['enp3s0', null], ['enp4s0', '00:1b:21:aa:00:02'], ['ib0', null], ['wlp2s0', 'a4:c3:f0:aa:bb:cc']],
  );
});

test('missing procfs and an unreadable DMI file are reported per field; the rest is still collected', async () => {
  const sys = join(dir, 'broken-sys');
  mkdirSync(join(sys, 'class', 'dmi', 'id', 'product_serial'), { recursive: true }); // a directory: EISDIR
  writeFileSync(join(sys, 'class', 'dmi', 'id', 'board_serial'), 'BRD-1\n');
  const doc = await collectInventory({ sysfs: sys, proc: join(dir, 'no-proc'), path: NO_TOOLS });
  assert.equal(doc.serial, 'BRD-1');
  const fields = doc.errors.map((e) => e.field);
  assert.deepEqual(fields, ['system.serial', 'memory.modules', 'cpus', 'memory.totalBytes'], JSON.stringify(doc.errors));
  assert.deepEqual(fields, ['system.serial', 'memory.modules', 'cpus', 'memory.totalBytes']);
  assert.match(doc.errors[0]!.message, /cannot read .*product_serial: EISDIR/);
  assert.match(doc.errors[2]!.message, /no-proc\/cpuinfo does not exist: is procfs mounted there\?/);
  assert.ok(Value.Check(InventoryDocument, doc));
});

test("the real dmidecode on a machine without SMBIOS tables: its own words in the memory field's error", async () => {
  const doc = await collectInventory({ sysfs: join(VM, 'sys'), proc: join(VM, 'proc') });
  const e = doc.errors.find((x) => x.field === 'memory.modules');
  assert.ok(e, JSON.stringify(doc.errors));
  assert.match(e.message, /^dmidecode (exited with \d+|is not installed)/);
});

test('extra commands of the plan: their output is in the document; one that fails is an error of its own field', async () => {
  const doc = await collectInventory({
    sysfs: join(VM, 'sys'),
    proc: join(VM, 'proc'),
    path: process.env.PATH!,
    commands: [
      { name: 'kernel', command: ['uname', '-s'] },
      { name: 'shell', command: 'echo one; echo two >&2; exit 3' },
      { name: 'vendor-tool', command: ['acme-hwcheck', '--all'] },
    ],
  });
  assert.deepEqual(doc.commands, [
    { name: 'kernel', command: ['uname', '-s'], exitCode: 0, stdout: 'Linux\n', stderr: '' },
    { name: 'shell', command: ['/bin/sh', '-c', 'echo one; echo two >&2; exit 3'], exitCode: 3, stdout: 'one\n', stderr: 'two\n' },
    { name: 'vendor-tool', command: ['acme-hwcheck', '--all'], exitCode: null, stdout: '', stderr: '' },
  ]);
  const errs = doc.errors.filter((e) => e.field.startsWith('commands.'));
  assert.deepEqual(errs, [
    { field: 'commands.shell', message: '/bin/sh exited with 3: two' },
    { field: 'commands.vendor-tool', message: 'acme-hwcheck is not installed' },
  ]);
});

test('Secure Boot state from the efivarfs variables (4 attribute bytes, then the value)', async () => {
  const sys = join(dir, 'efi-sys');
  const vars = join(sys, 'firmware', 'efi', 'efivars');
  mkdirSync(vars, { recursive: true });
  const g = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
  writeFileSync(join(vars, `SecureBoot-${g}`), Buffer.from([6, 0, 0, 0, 1]));
  writeFileSync(join(vars, `SetupMode-${g}`), Buffer.from([6, 0, 0, 0, 0]));
  const doc = await collectInventory({ sysfs: sys, proc: join(VM, 'proc'), path: NO_TOOLS });
  assert.deepEqual(doc.secureBoot, { supported: true, enabled: true, setupMode: false });
  assert.equal(doc.firmware.mode, 'uefi');

  // UEFI firmware, but efivarfs is not mounted: said, with the command that fixes it.
  const bare = join(dir, 'efi-bare');
  mkdirSync(join(bare, 'firmware', 'efi', 'efivars'), { recursive: true });
  writeFileSync(join(bare, 'firmware', 'efi', 'fw_platform_size'), '64\n');
  const d2 = await collectInventory({ sysfs: bare, proc: join(VM, 'proc'), path: NO_TOOLS });
  assert.deepEqual(d2.secureBoot, { supported: false });
  assert.match(d2.errors.find((e) => e.field === 'secureBoot')?.message ?? '', /mount -t efivarfs efivarfs/);
});

// ------------------------------------------------------------------ a real (software) TPM

let swtpm: ChildProcess | undefined;
const tpmState = join(dir, 'tpm');
let tcti = '';

before(async () => {
  mkdirSync(tpmState);
  // Manufactured like a real TPM: an EK and its certificate in NV (signed by swtpm's local CA).
  execFileSync('swtpm_setup', ['--tpm2', '--tpmstate', tpmState, '--createek', '--create-ek-cert', '--overwrite', '--pcr-banks', 'sha256'], { stdio: 'ignore' });
  const port = 20000 + Math.floor(Math.random() * 20000);
  swtpm = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${tpmState}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'], { stdio: 'ignore' });
  tcti = `swtpm:host=127.0.0.1,port=${port}`;
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('tpm2_getcap', ['properties-fixed'], { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, stdio: 'ignore' });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error('swtpm did not answer');
});
after(() => {
  if (swtpm?.exitCode === null) swtpm.kill('SIGKILL');
});

function tpmSysfs(): string {
  const sys = join(dir, 'tpm-sys');
  mkdirSync(join(sys, 'class', 'tpm', 'tpm0'), { recursive: true });
  writeFileSync(join(sys, 'class', 'tpm', 'tpm0', 'tpm_version_major'), '2\n');
  return sys;
}

test('a TPM 2.0 (swtpm): manufacturer, firmware version, the EK public key, and the EK certificate that certifies that very key', async () => {
  const doc = await collectInventory({ sysfs: tpmSysfs(), proc: join(VM, 'proc'), tpmTcti: tcti });
  const t = doc.tpm;
  assert.equal(t.present, true);
  assert.equal(t.device, '/dev/tpmrm0');
  assert.equal(t.version, '2.0');
  assert.equal(t.manufacturer, 'IBM', 'swtpm reports IBM');
  assert.match(t.firmwareVersion ?? '', /^\d+\.\d+/);
  assert.ok(t.endorsementKey && t.ekCertificatePem, JSON.stringify(doc.errors));
  const cert = new X509Certificate(t.ekCertificatePem);
  assert.match(cert.issuer, /swtpm-localca/);
  const certKey = cert.publicKey.export({ type: 'spki', format: 'der' });
  assert.ok(createPublicKey(t.endorsementKey.publicKeyPem).export({ type: 'spki', format: 'der' }).equals(certKey), 'the EK is the key the certificate certifies');
  // The same key on a second read: the EK is derived from the TPM's seed.
  const again = await collectInventory({ sysfs: tpmSysfs(), proc: join(VM, 'proc'), tpmTcti: tcti });
  assert.equal(again.tpm.endorsementKey?.sha256, t.endorsementKey.sha256);
  assert.deepEqual(doc.errors.filter((e) => e.field.startsWith('tpm')), []);
});

test('a TPM without tpm2-tools installed: present, and each TPM field says what to install', async () => {
  const doc = await collectInventory({ sysfs: tpmSysfs(), proc: join(VM, 'proc'), tpmTcti: tcti, path: NO_TOOLS });
  assert.deepEqual(doc.tpm, { present: true, device: '/dev/tpmrm0', version: '2.0' });
  assert.deepEqual(
    doc.errors.filter((e) => e.field.startsWith('tpm')),
    [
      { field: 'tpm.manufacturer', message: 'tpm2_getcap is not installed (Debian package tpm2-tools)' },
      { field: 'tpm.endorsementKey', message: 'tpm2_createek is not installed (Debian package tpm2-tools)' },
      { field: 'tpm.ekCertificatePem', message: 'tpm2_getcap is not installed (Debian package tpm2-tools)' },
    ],
  );
});

// ------------------------------------------------------------------ parsers, schema, USB output

test('dmidecode memory devices: populated slots with their size, type and part number; empty slots left out', () => {
  const text = [
    '# dmidecode 3.4', 'Handle 0x1100, DMI type 17, 40 bytes', 'Memory Device', '\tTotal Width: 72 bits', '\tSize: 16 GB', '\tLocator: DIMM_A1', '\tType: DDR4',
    '\tSpeed: 2666 MT/s', '\tManufacturer: Samsung', '\tSerial Number: 3A1B2C3D', '\tPart Number: M393A2K43CB2-CTD    ', '',
    'Handle 0x1101, DMI type 17, 40 bytes', 'Memory Device', '\tSize: No Module Installed', '\tLocator: DIMM_A2', '\tType: Unknown', '',
    'Handle 0x1102, DMI type 17, 40 bytes', 'Memory Device', '\tSize: 512 MB', '\tLocator: DIMM 0', '\tType: RAM', '\tManufacturer: QEMU', '\tSerial Number: Not Specified', '',
  ].join('\n');
  assert.deepEqual(parseDmidecodeMemory(text), [
    { locator: 'DIMM_A1', sizeBytes: 16 * 1024 ** 3, type: 'DDR4', speed: '2666 MT/s', manufacturer: 'Samsung', serial: '3A1B2C3D', partNumber: 'M393A2K43CB2-CTD' },
    { locator: 'DIMM 0', sizeBytes: 512 * 1024 ** 2, type: 'RAM', manufacturer: 'QEMU' },
  ]);
});

test('TPM fixed properties: the manufacturer from its four ASCII bytes, the firmware version from its two words', () => {
  const text = 'TPM2_PT_FAMILY_INDICATOR:\n  raw: 0x322E3000\n  value: "2.0"\nTPM2_PT_MANUFACTURER:\n  raw: 0x49465800\n  value: "IFX"\nTPM2_PT_FIRMWARE_VERSION_1:\n  raw: 0x7003F\nTPM2_PT_FIRMWARE_VERSION_2:\n  raw: 0x2C0900\n';
  assert.deepEqual(parseTpmFixedProperties(text), { version: '2.0', manufacturer: 'IFX', firmwareVersion: '7.63.44.2304' });
});

test('docs/inventory.schema.json is the schema the code validates with (npm run schema:inventory rewrites it)', () => {
  const published = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'inventory.schema.json'), 'utf8');
  assert.equal(published, inventoryJsonSchema());
  assert.equal(JSON.parse(published).properties.format.const, 'bootline-inventory/1');
});

test("the USB case: the document lands where Isar's device-info-collector writes, under the lower-cased serial and the UTC time", async () => {
  const doc = await collectInventory({ sysfs: PC, proc: join(VM, 'proc'), path: NO_TOOLS, now: new Date('2026-12-01T02:03:04Z'), commands: [{ name: 'lsblk', command: ['/bin/echo', 'vda 256G'] }] });
  const medium = join(dir, 'install');
  assert.equal(deviceInfosDir(medium, { ...doc, serial: 'Pf3 XK2A9' }), join(medium, 'device-infos', 'pf3xk2a9', '2026-12-01_02-03-04'));
  const out = await writeDeviceInfos(doc, { medium, proc: join(VM, 'proc'), tools: toolRunner({ path: NO_TOOLS }) });
  assert.equal(out, join(medium, 'device-infos', 'pf3xk2a9', '2026-12-01_02-03-04'));
  assert.deepEqual(readdirSync(out).sort(), ['inventory.json', 'lsblk.out', 'proc_cpuinfo']);
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'inventory.json'), 'utf8')), doc);
  assert.equal(readFileSync(join(out, 'lsblk.out'), 'utf8'), 'vda 256G\n');
  assert.ok(readFileSync(join(out, 'proc_cpuinfo')).equals(readFileSync(join(VM, 'proc', 'cpuinfo'))));
});
