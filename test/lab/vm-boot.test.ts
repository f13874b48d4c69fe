// Virtual devices booting for real (QEMU under TCG here, KVM where it works): OVMF ->
// iPXE ROM -> the lab's TFTP script -> the server's /boot.ipxe -> the per-device script
// -> Debian's kernel and a test initramfs that prints the device's identity. Needs
// qemu-system-x86, ovmf, ipxe-qemu, swtpm, cpio, and Debian's kernel and busybox-static
// (downloaded once into the lab cache).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { startLab, type Lab } from '../../src/lab/vm/lab.ts';
import { startDevice, DeviceStartError } from '../../src/lab/vm/device.ts';
import { deviceIdentity } from '../../src/lab/vm/identity.ts';
import { chooseFirmware } from '../../src/lab/vm/ovmf.ts';
import { isAlive } from '../../src/lab/vm/processes.ts';
import { onPath } from '../../src/which.ts';
import { installTestInstaller, MARKER_RE } from './vm-fixtures.ts';

const skip = !onPath('qemu-system-x86_64') || !onPath('swtpm') ? 'needs qemu-system-x86 and swtpm (scripts/setup.sh)' : false;

let line: TestServer;
/** Paths the server was asked for, in order. */
const requested: string[] = [];

before(async () => {
  if (skip) return;
  line = await startTestServer();
  line.server.app.server.on('request', (req: IncomingMessage) => requested.push(req.url ?? ''));
  await installTestInstaller(join(line.data, 'installer'));
  assert.equal((await line.admin('PUT', '/api/v1/plans/lab', { config: { unattended: true, tasks: [{ name: 'hello', script: 'hello.sh' }] } })).status, 200);
  const rule = await line.admin('POST', '/api/v1/rules', { match: 'default', action: 'run', plan: 'lab', priority: 100 });
  assert.equal(rule.status, 201, rule.text);
});
after(async () => {
  await line?.close();
});

/** Processes whose command line mentions `dir` (QEMU and swtpm name their sockets there). */
function processesIn(dir: string): string[] {
  try {
    return execFileSync('pgrep', ['-a', '-f', dir], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

async function bootToMarker(lab: Lab, index: number, timeoutMs = 80_000) {
  const d = lab.devices[index - 1]!;
  const m = await lab.waitForSerial(d, MARKER_RE, timeoutMs);
  const seconds = (Date.now() - Date.parse(d.startedAt)) / 1000;
  const [, serial, uuid, mac, tpm, server] = m;
  return { d, serial, uuid, mac, tpm, server, seconds };
}

// One lab of two devices covers both the boot path of each and their distinct identities: a
// TCG boot costs 35-50 s, and the suite must stay under 20 minutes.
test('two devices network-boot side by side OVMF -> iPXE -> the server -> the installer, each sees its own SMBIOS serial, UUID, MAC and TPM, and powers off', { skip, timeout: 170_000 }, async (t) => {
  const lab = await startLab({ devices: 2, serverUrl: line.url, diskSize: '1G', memoryMiB: 512 });
  try {
    assert.equal(lab.accel.accel === 'kvm' || lab.accel.accel === 'tcg', true);
    const [a, b] = await Promise.all([bootToMarker(lab, 1, 130_000), bootToMarker(lab, 2, 130_000)]);
    t.diagnostic(`${lab.accel.accel.toUpperCase()}: QEMU start to marker ${a.seconds.toFixed(1)} s and ${b.seconds.toFixed(1)} s (2 devices at once)`);
    for (const r of [a, b]) {
      assert.equal(r.serial, r.d.serial);
      assert.equal(r.uuid, r.d.uuid);
      assert.equal(r.mac, r.d.mac);
      assert.equal(r.tpm, 'tpm0', 'swtpm gives the guest a TPM');
      assert.equal(r.server, lab.guestServerUrl, 'the kernel command line came from the per-device script');
      const hyphens = r.d.mac.replace(/:/g, '-');
      for (const path of ['/boot.ipxe', `/boot/${hyphens}.ipxe`, '/installer/vmlinuz', '/installer/initrd.img'])
        assert.ok(requested.includes(path), `the server was asked for ${path}: ${requested.join(' ')}`);
    }
    assert.notEqual(a.serial, b.serial);
    assert.notEqual(a.uuid, b.uuid);
    assert.notEqual(a.mac, b.mac);
    // /init powers off: QEMU ends by itself.
    assert.equal(await lab.waitForExit(1, 30_000), true, 'the first guest powered off');
    assert.equal(await lab.waitForExit(2, 30_000), true, 'the second guest powered off');
  } finally {
    await lab.stop();
  }
  assert.equal(existsSync(lab.dir), false, 'the lab dir is gone');
  assert.deepEqual(processesIn(lab.dir), [], 'no QEMU or swtpm of the lab is left');
});

/** The lab's sample target (a real bootable UEFI disk: systemd-boot, kernel, a first-boot marker), built once. */
let sampleTarget: Promise<{ image: string; marker: string }> | undefined;
let sampleDir: string | undefined;
after(() => {
  if (sampleDir) rmSync(sampleDir, { recursive: true, force: true });
});
function sample(): Promise<{ image: string; marker: string }> {
  return (sampleTarget ??= (async () => {
    const { buildSampleTarget } = await import('../../src/lab/sample-target/build.ts');
    const { TARGET_MARKER } = await import('../../src/lab/sample-target/init-script.ts');
    sampleDir = mkdtempSync(join(tmpdir(), 'bootline-lab-target-'));
    const t = await buildSampleTarget({ out: sampleDir, rootFilesBytes: 4 << 20, diskBytes: 64 << 20 });
    return { image: t.image, marker: TARGET_MARKER };
  })());
}

test('a device the server has nothing for: iPXE exits and the firmware boots the disk next (network first, then disk)', { skip, timeout: 120_000 }, async (t) => {
  const target = await sample();
  const TARGET_MARKER = target.marker;
  const id = 'diskboot';
  const rule = await line.admin('POST', '/api/v1/rules', { match: 'mac', pattern: deviceIdentity(id, 1).mac, action: 'none', priority: 10 });
  assert.equal(rule.status, 201, rule.text);
  const lab = await startLab({ devices: 1, id, serverUrl: line.url, diskImage: target.image, diskSize: '128M', memoryMiB: 512 });
  try {
    const d = lab.devices[0]!;
    const m = await lab.waitForSerial(d, new RegExp(`${TARGET_MARKER} release=\\S+ serial=(\\S+)`), 80_000);
    t.diagnostic(`QEMU start to the disk's marker after the server said exit: ${((Date.now() - Date.parse(d.startedAt)) / 1000).toFixed(1)} s`);
    assert.equal(m[1], d.serial);
    const text = readFileSync(d.serialLog, 'latin1');
    assert.ok(requested.includes(`/boot/${d.mac.replace(/:/g, '-')}.ipxe`), 'the network was tried first');
    assert.match(text, /booting from disk/, "the server's exit script ran");
    // After iPXE's entry ("UEFI PXEv4 (MAC:…)", which iPXE's exit ends with Not Found), the
    // next entry OVMF loads is the disk, not its own PXE or HTTP boot.
    const rest = text.slice(text.lastIndexOf('booting from disk'));
    assert.match(rest, /BdsDxe: failed to load Boot\d+ "UEFI PXEv4 \(MAC:[0-9A-F]{12}\)" [^\n]*Not Found\r?\nBdsDxe: loading Boot\d+ "UEFI Misc Device"/);
    assert.match(rest, /BdsDxe: (loading|starting) Boot\d+ "UEFI Misc Device" from PciRoot\(0x0\)\/Pci\(0x2,0x0\)/);
    assert.doesNotMatch(rest, /Start PXE over|Start HTTP Boot|PXEv6|HTTPv4|HTTPv6/);
  } finally {
    await lab.stop();
  }
});

test('a USB stick boots before the network', { skip, timeout: 120_000 }, async (t) => {
  const target = await sample();
  const lab = await startLab({ devices: 1, serverUrl: line.url, usb: target.image, diskSize: '64M', memoryMiB: 512 });
  try {
    const d = lab.devices[0]!;
    const m = await lab.waitForSerial(d, new RegExp(`${target.marker} release=\\S+ serial=(\\S+)`), 80_000);
    t.diagnostic(`QEMU start to the USB stick's marker: ${((Date.now() - Date.parse(d.startedAt)) / 1000).toFixed(1)} s`);
    assert.equal(m[1], d.serial);
    assert.match(readFileSync(d.serialLog, 'latin1'), /BdsDxe: starting Boot\d+ "UEFI QEMU QEMU USB HARDDRIVE/);
    assert.ok(!requested.includes(`/boot/${d.mac.replace(/:/g, '-')}.ipxe`), 'the network was not tried');
  } finally {
    await lab.stop();
  }
});

test('stop() in the middle of a boot leaves no process and no file; QMP answers while it runs', { skip, timeout: 60_000 }, async () => {
  const lab = await startLab({ devices: 1, serverUrl: line.url, diskSize: '64M', memoryMiB: 512 });
  const d = lab.devices[0]!;
  try {
    assert.equal((await lab.qmp<{ status: string }>(1, 'query-status')).status, 'running');
    assert.ok(isAlive(d.qemuPid) && isAlive(d.swtpmPid!));
  } finally {
    await lab.stop();
  }
  assert.equal(isAlive(d.qemuPid), false);
  assert.equal(isAlive(d.swtpmPid!), false);
  assert.equal(existsSync(lab.dir), false);
  assert.deepEqual(processesIn(lab.dir), []);
});

test('a QEMU that dies at start takes its swtpm with it and says why', { skip, timeout: 30_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bootline-lab-fail-'));
  try {
    // A "firmware" that is not one: QEMU refuses the pflash and exits.
    const firmware = { ...chooseFirmware({ secureBoot: false, vars: 'empty' }), code: '/etc/hostname' };
    const err = await startDevice({
      labDir: dir, identity: deviceIdentity('fail', 1), accel: 'tcg', memoryMiB: 256, cpus: 1, diskBytes: 64 << 20,
      firmware, tftpDir: dir, bootfile: 'boot.ipxe', tpm: true, tpmModel: 'tpm-crb',
    }).then(() => null, (e: Error) => e);
    assert.ok(err instanceof DeviceStartError, String(err));
    assert.match(err.message, /QEMU exited at start/);
    assert.deepEqual(processesIn(dir), [], 'swtpm was stopped');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
