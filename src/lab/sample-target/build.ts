// The lab's sample target image: what a line would deploy, small enough for virtual devices.
// A real bootable UEFI disk: GPT, an ESP with systemd-boot, Debian's kernel and a busybox
// initramfs whose first boot prints TARGET_MARKER on the serial console (then powers off),
// and an ext4 root partition filled with real files, so that writing it is real work. Also
// its bmap (`bootline image create`) and a zstd-compressed copy, as an Isar build delivers.
import { execFile as execFileCb } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { createBmap } from '../../image/create.ts';
import { formatBmap } from '../../image/bmap/write.ts';
import { DEFAULT_LAB_CACHE, fetchKernel, fetchPackage } from '../debian-packages.ts';
import { FileTree } from '../installer/tree.ts';
import { packCompressed } from '../installer/pack.ts';
import { assembleGptImage, buildEsp, buildExt4, ESP_TYPE, LINUX_ROOT_X86_64_TYPE, MiB, roundMiB } from '../disk-image.ts';
import { targetInitScript } from './init-script.ts';

const execFile = promisify(execFileCb);

export interface SampleTargetOptions {
  /** Directory the image, its bmap and its .zst go to. */
  out: string;
  cache?: string;
  /** Bytes of real files copied into the root partition (default 96 MiB). */
  rootFilesBytes?: number;
  /** Where those files come from (default /usr/share). */
  rootFilesFrom?: string;
  /** Size of the whole disk image, mostly unpartitioned holes (default 512 MiB). */
  diskBytes?: number;
  /** Shown in the marker line. */
  release?: string;
  log?: (line: string) => void;
}

export interface SampleTarget {
  /** The raw, sparse disk image. */
  image: string;
  bmap: string;
  /** The image compressed with zstd (its bmap is `bmap`, found beside it by name). */
  zst: string;
  bytes: number;
  mappedBytes: number;
  release: string;
}

const DISK_GUID = '5A3B1E00-0000-4000-8000-000000000001';
const ESP_GUID = '5A3B1E00-0000-4000-8000-000000000002';
const ROOT_GUID = '5A3B1E00-0000-4000-8000-000000000003';
const MTIME = 1_700_000_000;
const BUSYBOX_APPLETS = ['sh', 'mount', 'cat', 'echo', 'poweroff', 'sync', 'sleep'];

/** Regular files under `from`, in name order, until `budget` bytes: real content of a known size. */
function pickFiles(from: string, budget: number): { path: string; size: number }[] {
  const out: { path: string; size: number }[] = [];
  let total = 0;
  const walk = (dir: string): boolean => {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      return true;
    }
    for (const name of names) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) {
        if (!walk(p)) return false;
      } else if (st.isFile() && st.size > 0 && st.size <= 16 * MiB) {
        if (total + st.size > budget) return false;
        out.push({ path: p, size: st.size });
        total += st.size;
      }
    }
    return true;
  };
  walk(from);
  return out;
}

/** Builds the sample target into `o.out` (reusing a finished build with the same options). */
export async function buildSampleTarget(o: SampleTargetOptions): Promise<SampleTarget> {
  const log = o.log ?? (() => undefined);
  const cache = o.cache ?? DEFAULT_LAB_CACHE;
  const budget = o.rootFilesBytes ?? 96 * MiB;
  const from = o.rootFilesFrom ?? '/usr/share';
  const release = o.release ?? 'sample-1.0';
  const diskBytes = o.diskBytes ?? 512 * MiB;
  const image = join(o.out, 'sample-target.img');
  const result = { image, bmap: `${image}.bmap`, zst: `${image}.zst`, release };
  const stamp = join(o.out, '.sample-target.json');
  // The first-boot script is part of the key: a build with an older one is not reused.
  const init = createHash('sha256').update(targetInitScript(release)).digest('hex').slice(0, 16);
  const key = JSON.stringify({ budget, from, release, diskBytes, init, v: 3 });
  if (existsSync(stamp) && existsSync(result.zst) && existsSync(result.bmap)) {
    const saved = JSON.parse(readFileSync(stamp, 'utf8')) as { key: string; bytes: number; mappedBytes: number };
    if (saved.key === key) return { ...result, bytes: saved.bytes, mappedBytes: saved.mappedBytes };
  }
  mkdirSync(o.out, { recursive: true });
  const work = join(o.out, `.sample-target-work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    log('sample target: Debian kernel, busybox, systemd-boot');
    const [kernel, busybox, boot] = [await fetchKernel(cache), await fetchPackage('busybox-static', cache), await fetchPackage('systemd-boot-efi', cache)];

    // The initramfs: busybox and the first-boot check.
    const tree = new FileTree();
    tree.set('usr/bin/busybox', { kind: 'file', mode: 0o755, source: join(busybox.root, 'bin/busybox'), size: statSync(join(busybox.root, 'bin/busybox')).size, origin: busybox.name });
    for (const a of BUSYBOX_APPLETS) tree.set(`usr/bin/${a}`, { kind: 'symlink', target: 'busybox' });
    for (const d of ['proc', 'sys', 'dev']) tree.dir(d);
    tree.set('dev/console', { kind: 'chardev', mode: 0o600, major: 5, minor: 1 });
    tree.data('init', targetInitScript(release), 0o755);
    const initrd = join(work, 'initrd.img');
    await packCompressed(tree, MTIME, 19, initrd);

    // ESP: systemd-boot as the removable-media loader, booting straight into the kernel.
    const loaderConf = join(work, 'loader.conf');
    const entry = join(work, 'target.conf');
    writeFileSync(loaderConf, 'default target.conf\ntimeout 0\neditor no\n');
    writeFileSync(entry, `title bootline sample target ${release}\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0,115200 quiet\n`);
    const espFiles = {
      'EFI/BOOT/BOOTX64.EFI': join(boot.root, 'usr/lib/systemd/boot/efi/systemd-bootx64.efi'),
      'loader/loader.conf': loaderConf,
      'loader/entries/target.conf': entry,
      vmlinuz: kernel.vmlinuz,
      'initrd.img': initrd,
    };
    const espPayload = Object.values(espFiles).reduce((s, f) => s + statSync(f).size, 0);
    const esp = join(work, 'esp.img');
    await buildEsp(esp, roundMiB(espPayload * 1.1 + 8 * MiB), 'SAMPLE-ESP', '5A3B1E00', espFiles, MTIME);

    // Root: real files, and a release file.
    log(`sample target: root file system with ${Math.round(budget / MiB)} MiB of files from ${from}`);
    const rootDir = join(work, 'root');
    let payload = 0;
    for (const f of pickFiles(from, budget)) {
      const dest = join(rootDir, 'usr/share/sample', relative(from, f.path));
      mkdirSync(dirname(dest), { recursive: true });
      copyFileSync(f.path, dest);
      payload += f.size;
    }
    mkdirSync(join(rootDir, 'etc'), { recursive: true });
    writeFileSync(join(rootDir, 'etc/bootline-sample-release'), `${release}\n`);
    const root = join(work, 'root.img');
    await buildExt4(root, roundMiB(payload * 1.25 + 32 * MiB), 'root', ROOT_GUID.toLowerCase(), rootDir, MTIME);

    const partial = `${image}.partial`;
    const parts = [
      { name: 'esp', type: ESP_TYPE, uuid: ESP_GUID, image: esp },
      { name: 'root', type: LINUX_ROOT_X86_64_TYPE, uuid: ROOT_GUID, image: root },
    ];
    const used = roundMiB(statSync(esp).size) + roundMiB(statSync(root).size) + MiB;
    const { bytes } = await assembleGptImage(partial, DISK_GUID, parts, Math.max(MiB, diskBytes - used));

    log('sample target: bmap and zstd copy');
    const bmap = await createBmap(partial);
    writeFileSync(`${partial}.bmap`, formatBmap(bmap));
    await execFile('zstd', ['-q', '-f', '-T0', '-3', partial, '-o', `${partial}.zst`]);
    renameSync(`${partial}.bmap`, result.bmap);
    renameSync(`${partial}.zst`, result.zst);
    renameSync(partial, image);
    const mappedBytes = bmap.mappedBlocksCount * bmap.blockSize;
    writeFileSync(stamp, JSON.stringify({ key, bytes, mappedBytes }));
    log(`sample target: ${image} (${Math.round(bytes / MiB)} MiB, ${Math.round(mappedBytes / MiB)} MiB mapped), ${result.zst} ${Math.round(statSync(result.zst).size / MiB)} MiB`);
    return { ...result, bytes, mappedBytes };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
