// The real installer: built from Debian packages (the default cache, so that a second run
// is fast; a first one downloads about 100 MB from Debian's mirror), twice to the same
// bytes, with a USB image; then booted under QEMU (TCG, SeaBIOS -kernel/-initrd), where
// /init gets a DHCP lease, the agent fetches its config from this test's HTTP server
// (10.0.2.2 in the guest is the host's 127.0.0.1), partitions the virtio disk with sfdisk
// and reports to the same server. Needs QEMU, apt and root (CI runs as root).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { buildInstaller, type Manifest } from '../../src/lab/installer/build.ts';
import { DEFAULT_LAB_CACHE } from '../../src/lab/debian-packages.ts';
import type { BootlineEvent } from '../../src/events.ts';
import { readDevice, tempDir } from '../helpers.ts';

const AGENT = resolve(import.meta.dirname, '../../dist/bootline.mjs');
const dir = tempDir('bootline-installer-');
const figures: string[] = [];
const note = (s: string) => {
  figures.push(s);
  process.stderr.write(`installer-build: ${s}\n`);
};

/** The serial console last (it becomes /dev/console); no network: the offline case. */
const USB_CMDLINE = 'bootline.exit=poweroff bootline.net=off console=ttyS0,115200';

let first: Manifest;
let qemu: ChildProcess | undefined;
let usbQemu: ChildProcess | undefined;
let server: Server | undefined;

function build(out: string, extra: Partial<Parameters<typeof buildInstaller>[0]> = {}) {
  const lines: string[] = [];
  const started = Date.now();
  return buildInstaller({
    out, cache: DEFAULT_LAB_CACHE, usbImages: [], cmdline: '', modules: [], agent: AGENT, zstdLevel: 3, force: true,
    log: (l) => lines.push(l), ...extra,
  }).then((m) => ({ manifest: m, lines, seconds: (Date.now() - started) / 1000 }));
}

/** The offline case: a target image with its bmap and an auto.install that deploys it, on a USB image. */
const withUsb = (usb: string) => ({ usb, usbImages: [join(dir, 'disk.img')], usbAutoInstall: join(dir, 'auto.install'), cmdline: USB_CMDLINE });

before(async () => {
  assert.ok(existsSync(AGENT), `${AGENT} is missing: run "npm run build" first`);
  writeFileSync(join(dir, 'disk.img'), randomBytes(4 << 20));
  execFileSync('bmaptool', ['create', '-o', join(dir, 'disk.bmap'), join(dir, 'disk.img')], { stdio: 'ignore' });
  writeFileSync(join(dir, 'auto.install'), 'disk.img\n/dev/vda\nOVERWRITE\n');
  const b = await build(join(dir, 'a'), withUsb(join(dir, 'usb.img')));
  first = b.manifest;
  note(`build with a USB image: ${b.seconds.toFixed(1)} s, initrd.img ${(first.files['initrd.img'].bytes / 1e6).toFixed(1)} MB at zstd -3`);
});

after(() => {
  for (const q of [qemu, usbQemu]) if (q?.exitCode === null) q.kill('SIGKILL');
  server?.close();
  server?.closeAllConnections();
  if (figures.length > 0) process.stderr.write(`installer-build figures:\n  ${figures.join('\n  ')}\n`);
});

test('a second build gives the same bytes, and so does its USB image; a build with the same inputs is skipped as up to date', async () => {
  const usb = join(dir, 'usb.img');
  const usb2 = join(dir, 'usb2.img');
  const b = await build(join(dir, 'b'), withUsb(usb2));
  assert.deepEqual(b.manifest.files, first.files, 'vmlinuz and initrd.img: same sha256');
  assert.equal(readFileSync(join(dir, 'b', 'initrd.img')).equals(readFileSync(join(dir, 'a', 'initrd.img'))), true);
  assert.ok(readFileSync(usb2).equals(readFileSync(usb)), 'the USB image too: same bytes');
  assert.ok(b.lines.every((l) => /^(build-installer: | {2})/.test(l)), 'progress lines');

  // The USB image: GPT with the ESP (systemd-boot, kernel, initramfs) and the BOOTLINE data partition.
  const table = JSON.parse(execFileSync('sfdisk', ['-J', usb], { encoding: 'utf8' })) as { partitiontable: { partitions: { start: number; size: number; type: string; name: string }[] } };
  const [esp, data] = table.partitiontable.partitions;
  assert.equal(esp?.type, 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
  assert.equal(data?.name, 'BOOTLINE');
  const espAt = `${usb}@@${esp!.start * 512}`;
  const mtools = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  assert.match(execFileSync('mdir', ['-b', '-i', espAt, '::/EFI/BOOT'], { encoding: 'utf8', env: mtools }), /BOOTX64\.EFI/);
  const entry = execFileSync('mtype', ['-i', espAt, '::/loader/entries/bootline.conf'], { encoding: 'utf8', env: mtools });
  assert.match(entry, /^options console=ttyS0,115200 console=tty0 bootline\.install=BOOTLINE bootline\.exit=poweroff bootline\.net=off console=ttyS0,115200$/m);
  assert.equal(execFileSync('mtype', ['-i', espAt, '::/initrd.img'], { env: mtools, maxBuffer: 256 << 20 }).length, first.files['initrd.img'].bytes);
  const part = join(dir, 'data.part');
  writeFileSync(part, readRange(usb, data!.start * 512, data!.size * 512));
  const listing = execFileSync('debugfs', ['-R', 'ls -l /', part], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  for (const f of ['disk.img', 'disk.bmap', 'auto.install']) assert.match(listing, new RegExp(` ${f.replace('.', '\\.')}\\s*$`, 'm'));
  assert.equal(execFileSync('e2label', [part], { encoding: 'utf8' }).trim(), 'BOOTLINE');

  const c = await build(join(dir, 'a'), { ...withUsb(usb), force: false });
  assert.ok(c.lines.some((l) => /is up to date/.test(l)), c.lines.join('\n'));
  note(`cached build (up to date): ${c.seconds.toFixed(1)} s; rebuild with --force and a USB image: ${b.seconds.toFixed(1)} s`);
});

test('the manifest says what is in the installer, and the initramfs holds the tools, modules, node and the agent', () => {
  const m = JSON.parse(readFileSync(join(dir, 'a', 'installer.json'), 'utf8')) as Manifest;
  assert.equal(m.files['initrd.img'].bytes, readFileSync(join(dir, 'a', 'initrd.img')).length);
  assert.match(m.kernel.release, /^\d+\.\d+\.\d+-\d+-amd64$/);
  const names = m.packages.map((p) => p.name);
  for (const p of ['busybox-static', 'util-linux', 'fdisk', 'e2fsprogs', 'cryptsetup-bin', 'tpm2-tools', 'kmod', 'libc6', 'systemd', 'libsystemd-shared']) assert.ok(names.includes(p), p);
  assert.equal(m.node.note, 'node runtime copied from the build host');
  assert.ok(m.modules.load.includes('virtio_blk') && m.modules.load.includes('dm_crypt'));

  const initrd = readFileSync(join(dir, 'a', 'initrd.img'));
  const zstdAt = initrd.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
  const head = execFileSync('cpio', ['-it', '--quiet'], { input: initrd.subarray(0, zstdAt), encoding: 'utf8' });
  assert.match(head, /^etc\/bootline\/installer\.json$/m, 'the first archive holds installer.json');
  const list = execFileSync('sh', ['-c', 'zstd -dc | cpio -itv --quiet'], { input: initrd.subarray(zstdAt), encoding: 'utf8', maxBuffer: 64 << 20 });
  const paths = new Set(execFileSync('sh', ['-c', 'zstd -dc | cpio -it --quiet'], { input: initrd.subarray(zstdAt), encoding: 'utf8', maxBuffer: 64 << 20 }).split('\n'));
  const want = [
    'init', 'dev/console', 'usr/bin/node', 'usr/lib/bootline/bootline.mjs', 'usr/bin/bootline', 'usr/bin/busybox', 'usr/bin/sh',
    'usr/sbin/sfdisk', 'usr/sbin/blkdiscard', 'usr/bin/lsblk', 'usr/sbin/blockdev', 'usr/sbin/losetup', 'usr/sbin/wipefs', 'usr/sbin/mke2fs', 'usr/sbin/e2fsck',
    'usr/sbin/resize2fs', 'usr/sbin/mkfs.vfat', 'usr/sbin/cryptsetup', 'usr/bin/tpm2_getcap', 'usr/sbin/dmidecode', 'usr/bin/efibootmgr', 'usr/bin/zstd', 'usr/bin/xz',
    'usr/bin/lbzip2', 'usr/bin/lz4', 'usr/bin/gzip', 'usr/bin/igzip', 'usr/bin/perl', 'usr/sbin/modprobe', 'usr/sbin/udhcpc', 'etc/ssl/certs/ca-certificates.crt',
    `usr/lib/modules/${m.kernel.release}/modules.dep.bin`, `usr/lib/modules/${m.kernel.release}/kernel/drivers/block/virtio_blk.ko`,
    // disk encryption (encrypt-disk): systemd's TPM2 enrollment, its library and the TSS2 libraries it loads with dlopen, dm-crypt's modules
    'usr/bin/systemd-cryptenroll', 'usr/lib/systemd/systemd-cryptsetup', 'usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so',
    'usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so', 'usr/lib/x86_64-linux-gnu/libtss2-esys.so.0', 'usr/lib/x86_64-linux-gnu/libtss2-rc.so.0',
    'usr/lib/x86_64-linux-gnu/libtss2-mu.so.0', 'usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0',
    ...['md/dm-mod', 'md/dm-crypt'].map((f) => `usr/lib/modules/${m.kernel.release}/kernel/drivers/${f}.ko`),
    ...['xts', 'ecb', 'algif_skcipher', 'algif_hash', 'af_alg'].map((f) => `usr/lib/modules/${m.kernel.release}/kernel/crypto/${f}.ko`),
  ];
  assert.deepEqual(want.filter((p) => !paths.has(p)), [], 'missing from the initramfs');
  // Only those files of systemd: not its service manager, units or other tools (each MB costs boot time under TCG).
  const systemd = [...paths].filter((p) => /(^|\/)systemd/.test(p) && !p.startsWith('usr/lib/modules/'));
  assert.deepEqual(systemd.filter((p) => !/^usr\/(bin\/systemd-cryptenroll|lib\/systemd(\/systemd-cryptsetup)?|lib\/x86_64-linux-gnu\/(systemd(\/libsystemd-shared-252\.so)?|cryptsetup\/libcryptsetup-token-systemd-tpm2\.so))$/.test(p)), [], 'systemd files beyond the ones for encryption');
  for (const mod of ['dm_crypt', 'xts', 'ecb', 'algif_skcipher']) assert.ok(m.modules.load.includes(mod), mod);
  assert.ok(![...paths].some((p) => p.startsWith('usr/share/doc/') || p.startsWith('usr/share/man/')), 'no documentation');
  // perl is there for one -e script (src/image/decompress/output-buffer.ts), not its modules.
  assert.deepEqual([...paths].filter((p) => /(^|\/)perl/.test(p)), ['usr/bin/perl']);
  assert.match(list, /^-rwxr-xr-x +1 root +root .* Jan +1 +1970 init$/m, 'root-owned, fixed mtime');
});

test('the installer boots under QEMU: DHCP, config over HTTP, sfdisk on the virtio disk, run-start with the installer', async () => {
  const events: BootlineEvent[] = [];
  let firstEventAt = 0;
  let configFetched = false;
  const disk = join(dir, 'vda.img');
  writeFileSync(disk, Buffer.alloc(0));
  execFileSync('truncate', ['-s', '64M', disk]);
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/config.yaml') {
        configFetched = true;
        res.end(config);
      } else if (req.method === 'GET' && req.url === '/tools.sh') {
        res.end(TOOLS_SCRIPT);
      } else if (req.method === 'POST' && req.url === '/events') {
        if (!firstEventAt) firstEventAt = Date.now();
        events.push(...(JSON.parse(body) as { events: BootlineEvent[] }).events);
        res.end('{}');
      } else res.writeHead(404).end();
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const config = [
    'unattended: true',
    'tasks:',
    '  - name: partition',
    '    script: /bin/sh',
    `    args: ["-c", "lsblk -b -n -d -o NAME,SIZE /dev/vda && printf 'label: gpt\\\\n,\\\\n' | sfdisk --quiet /dev/vda && sfdisk -d /dev/vda"]`,
    '  - name: tools',
    '    script: /bin/sh',
    `    args: ["-c", "wget -q -O /tmp/tools.sh http://10.0.2.2:${port}/tools.sh && sh /tmp/tools.sh"]`,
    'reporters:',
    '  - type: console',
    `  - { type: http, url: "http://10.0.2.2:${port}/events" }`,
    'onSuccess: { action: poweroff }',
    '',
  ].join('\n');

  const serial = join(dir, 'serial.log');
  const started = Date.now();
  qemu = spawn('qemu-system-x86_64', [
    '-machine', 'q35', '-m', '1024', '-nographic', '-no-reboot', '-monitor', 'none', '-serial', `file:${serial}`,
    '-kernel', join(dir, 'a', 'vmlinuz'), '-initrd', join(dir, 'a', 'initrd.img'),
    '-append', `console=ttyS0 bootline.config=http://10.0.2.2:${port}/config.yaml bootline.exit=poweroff`,
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
    '-drive', `file=${disk},if=virtio,format=raw`,
  ], { stdio: 'ignore' });
  const code = await new Promise<number | null>((r) => {
    const timer = setTimeout(() => qemu!.kill('SIGKILL'), 150_000);
    qemu!.on('exit', (c) => (clearTimeout(timer), r(c)));
  });
  const log = readFileSync(serial, 'latin1');
  const tail = log.split('\n').slice(-40).join('\n');
  assert.equal(code, 0, `QEMU ended by the guest's power-off (not killed):\n${tail}`);

  assert.ok(configFetched, 'the guest fetched its config over HTTP');
  assert.match(log, /bootline-init: \[[\d.]+\] eth0: 10\.0\.2\.15\/24, router 10\.0\.2\.2/, 'DHCP lease');
  const start = events.find((e) => e.type === 'run-start');
  assert.ok(start && start.type === 'run-start', tail);
  assert.deepEqual({ ...start.installer, bootSeconds: 0 }, { version: first.bootline, kernel: first.kernel.release, initramfsBytes: first.files['initrd.img'].bytes, bootSeconds: 0 });
  assert.ok((start.installer?.bootSeconds ?? 0) > 0);
  const ends = events.filter((e) => e.type === 'task-end');
  assert.deepEqual(ends.map((e) => e.type === 'task-end' && `${e.task} ${e.status}`), ['partition ok', 'tools ok'], tail);
  const ran = events.filter((e) => e.type === 'log' && e.task === 'tools').map((e) => (e.type === 'log' ? e.message : ''));
  assert.deepEqual(TOOLS.filter((t) => !ran.includes(`ok ${t}`)), [], `every tool starts in the guest:\n${ran.join('\n')}`);
  assert.ok(events.some((e) => e.type === 'log' && /^\/dev\/vda1 : start= +2048/.test(e.message)), 'sfdisk -d output reported');
  assert.equal(readDevice(disk, 1024).subarray(512, 520).toString('latin1'), 'EFI PART', 'GPT written to the virtio disk');

  const at = (re: RegExp) => new RegExp(`bootline-init: \\[([\\d.]+)\\] ${re.source}`).exec(log)?.[1];
  note(`kernel uptime: /init ${at(/bootline installer/)} s, modules loaded ${at(/modules loaded/)} s, DHCP lease ${at(/eth0:/)} s, agent started ${at(/starting the agent/)} s`);
  const upAt = at(/bootline installer/);
  note(`QEMU (TCG) start to the agent's first event at the host: ${((firstEventAt - started) / 1000).toFixed(1)} s; ` +
    `kernel uptime at /init ${upAt} s, at the agent's start ${start.installer?.bootSeconds?.toFixed(2)} s; whole run to power-off ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

test('the USB image boots under UEFI (OVMF) offline: systemd-boot, /install from BOOTLINE, auto.install deploys the image', async () => {
  const usb = join(dir, 'usb.img');
  assert.ok(existsSync(usb), 'built before the tests');
  const vars = join(dir, 'OVMF_VARS.fd');
  copyFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd', vars);
  const disk = join(dir, 'usb-target.img');
  writeFileSync(disk, Buffer.alloc(0));
  execFileSync('truncate', ['-s', '64M', disk]);
  const serial = join(dir, 'usb-serial.log');
  const started = Date.now();
  usbQemu = spawn('qemu-system-x86_64', [
    '-machine', 'q35', '-m', '1024', '-nographic', '-no-reboot', '-monitor', 'none', '-serial', `file:${serial}`, '-nic', 'none',
    '-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd', '-drive', `if=pflash,format=raw,file=${vars}`,
    '-drive', `file=${usb},if=none,id=stick,format=raw,readonly=on`, '-device', 'qemu-xhci', '-device', 'usb-storage,drive=stick,bootindex=0',
    '-drive', `file=${disk},if=virtio,format=raw`,
  ], { stdio: 'ignore' });
  const code = await new Promise<number | null>((r) => {
    const timer = setTimeout(() => usbQemu!.kill('SIGKILL'), 150_000);
    usbQemu!.on('exit', (c) => (clearTimeout(timer), r(c)));
  });
  const log = readFileSync(serial, 'latin1');
  const tail = log.split('\n').slice(-40).join('\n');
  assert.equal(code, 0, `QEMU ended by the guest's power-off:\n${tail}`);
  assert.match(log, /EFI stub: Loaded initrd/, 'systemd-boot started the kernel with the initramfs');
  assert.match(log, /bootline-init: \[[\d.]+\] install data: \/dev\/sd\w+ \(BOOTLINE\) mounted on \/install/);
  assert.match(log, /wrote 4\.0 MiB to \/dev\/vda .*bmap \/install\/disk\.bmap/);
  assert.ok(readDevice(disk, 4 << 20).equals(readFileSync(join(dir, 'disk.img'))), 'the image is on the target disk');
  note(`USB image under OVMF (TCG), offline deploy of a 4 MiB image: QEMU start to power-off ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

/** Tools the tasks call, each started in the guest: it must be there and find its libraries. */
const TOOLS = [
  'sfdisk -v', 'lsblk -V', 'blkdiscard -V', 'blockdev -V', 'wipefs -V', 'losetup -V', 'blkid -V', 'mke2fs -V', 'e2fsck -V', 'resize2fs -P /dev/null',
  'mkfs.vfat --help', 'cryptsetup --version', 'tpm2_getcap -v', 'dmidecode --version', 'efibootmgr --version', 'zstd -V', 'xz -V', 'lbzip2 -V',
  'lz4 -V', 'gzip -V', 'igzip -V', 'bzip2 -V', 'modprobe -V', 'node -v', 'bootline --version',
  'systemd-cryptenroll --version', '/usr/lib/systemd/systemd-cryptsetup --help',
];
const TOOLS_SCRIPT = `for c in ${TOOLS.map((t) => `'${t}'`).join(' ')}; do
  out=$($c 2>&1 < /dev/null); rc=$?
  case "$out" in *"error while loading shared libraries"*) echo "broken $c: $out"; exit 1 ;; esac
  [ $rc -ne 127 ] || { echo "missing $c"; exit 1; }
  echo "ok $c"
done
`;

function readRange(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}
