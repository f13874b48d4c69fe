// For tests that boot virtual devices: Debian's kernel and a tiny busybox initramfs whose
// /init prints the device's identity on the serial console and powers off. Built from
// Debian packages into a cpio archive made from a temp dir (no root mounts).
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fetchKernel, fetchPackage } from '../../src/lab/debian-packages.ts';

/**
 * virtio and virtio_net are modules in Debian's kernel; these, in dependency order (from
 * `modinfo -F depends`: the .deb has no modules.dep), give the guest eth0.
 */
const NET_MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/net/core/failover.ko',
  'kernel/drivers/net/net_failover.ko',
  'kernel/drivers/net/virtio_net.ko',
];

/**
 * startLab's tcgCodeBufferMiB for a test that boots a device again after a long first boot:
 * with QEMU's 1 GiB default, that second boot was 20-90 s slower (docs/lab.md has the figures).
 */
export const REBOOT_TCG_CODE_BUFFER_MIB = 128;

/** The line the test initramfs prints; its fields are parsed by MARKER_RE. */
export const MARKER_RE = /LAB-MARKER serial=(\S*) uuid=(\S*) mac=(\S*) tpm=(\S*) server=(\S*)/;

export const TEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${NET_MODULES.map((m) => `/modules/${m.split('/').pop()}`).join(' ')}; do insmod $m; done
mac=$(cat /sys/class/net/eth0/address 2>/dev/null)
serial=$(cat /sys/class/dmi/id/product_serial)
uuid=$(cat /sys/class/dmi/id/product_uuid)
tpm=$(ls /sys/class/tpm 2>/dev/null | head -n 1)
server=$(tr ' ' '\\n' < /proc/cmdline | sed -n 's/^bootline.server=//p')
echo "LAB-MARKER serial=$serial uuid=$uuid mac=\${mac:-none} tpm=\${tpm:-none} server=\${server:-none}" > /dev/ttyS0
poweroff -f
`;

/** Copies Debian's kernel and a freshly built test initramfs into `dir` as vmlinuz and initrd.img. */
export async function installTestInstaller(dir: string): Promise<void> {
  const kernel = await fetchKernel();
  const busybox = await fetchPackage('busybox-static');
  const root = mkdtempSync(join(tmpdir(), 'bootline-initramfs-'));
  try {
    for (const d of ['bin', 'modules', 'proc', 'sys', 'dev']) mkdirSync(join(root, d));
    copyFileSync(join(busybox.root, 'bin', 'busybox'), join(root, 'bin', 'busybox'));
    chmodSync(join(root, 'bin', 'busybox'), 0o755);
    for (const m of NET_MODULES) copyFileSync(join(kernel.modules, m), join(root, 'modules', m.split('/').pop()!));
    writeFileSync(join(root, 'init'), TEST_INIT, { mode: 0o755 });
    mkdirSync(dir, { recursive: true });
    const list = execFileSync('find', ['.', '-mindepth', '1'], { cwd: root, encoding: 'utf8' });
    const cpio = execFileSync('cpio', ['--quiet', '-o', '-H', 'newc', '-R', '0:0'], { cwd: root, input: list, maxBuffer: 64 << 20 });
    writeFileSync(join(dir, 'initrd.img'), cpio);
    copyFileSync(kernel.vmlinuz, join(dir, 'vmlinuz'));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}
