// The same installer as a bootable USB/disk image: GPT with an ESP (FAT) holding
// systemd-boot, the kernel and the initramfs, and a data partition labelled BOOTLINE (ext4)
// with the target images and auto.install for the offline case — Isar's /install. Built
// from files with sfdisk, mkfs.vfat, mtools and mke2fs -d: no loop devices, no mounts.
import { execFile as execFileCb } from 'node:child_process';
import { copyFileSync, mkdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { bmapCandidates } from '../../image/sources/find-bmap.ts';
import { assembleGptImage, ESP_TYPE, LINUX_DATA_TYPE, MiB, sparseFile } from '../disk-image.ts';

const execFile = promisify(execFileCb);

export const USB_DATA_LABEL = 'BOOTLINE';
export const USB_TOOLS = { sfdisk: 'fdisk', 'mkfs.vfat': 'dosfstools', mmd: 'mtools', mcopy: 'mtools', mke2fs: 'e2fsprogs', debugfs: 'e2fsprogs' } as const;

/** 1980-01-01 UTC: FAT cannot store earlier times. */
const FAT_EPOCH = 315532800;
// Fixed identifiers: the same inputs give the same partition table.
const DISK_GUID = 'B0071E4E-0000-4000-8000-000000000001';
const ESP_GUID = 'B0071E4E-0000-4000-8000-000000000002';
const DATA_GUID = 'B0071E4E-0000-4000-8000-000000000003';

/**
 * How the ESP boots the installer: systemd-boot with the kernel, the initramfs and a loader
 * entry; or (Secure Boot) one signed Unified Kernel Image as the removable-media default
 * loader, so that nothing else on the stick needs a signature.
 */
export type UsbBoot =
  | { kind: 'systemd-boot'; vmlinuz: string; initrd: string; /** systemd-bootx64.efi */ bootloader: string; /** Kernel command line of the boot entry. */ cmdline: string }
  | { kind: 'uki'; /** The UKI, its command line built in. */ uki: string };

export interface UsbImageInput {
  /** The image file to write. */
  file: string;
  boot: UsbBoot;
  /** Target images (their .bmap beside them is taken too) and auto.install for the data partition. */
  images: string[];
  autoInstall?: string;
  work: string;
  mtime: number;
}

const roundMiB = (bytes: number): number => Math.ceil(bytes / MiB) * MiB;

/** systemd-boot's loader.conf and the installer's entry. */
export function loaderFiles(cmdline: string): Record<string, string> {
  return {
    'loader/loader.conf': 'default bootline.conf\ntimeout 0\neditor no\n',
    'loader/entries/bootline.conf': `title bootline installer\nlinux /vmlinuz\ninitrd /initrd.img\noptions ${cmdline}\n`,
  };
}

/** The files of the data partition: each image, the bmap bmaptool would find beside it, auto.install. */
export function dataFiles(images: string[], autoInstall: string | undefined, exists: (p: string) => boolean): Map<string, string> {
  const files = new Map<string, string>();
  for (const img of images) {
    files.set(basename(img), img);
    const bmap = bmapCandidates(img).find(exists);
    if (bmap) files.set(basename(bmap), bmap);
  }
  if (autoInstall) files.set('auto.install', autoInstall);
  return files;
}

export async function buildUsbImage(i: UsbImageInput): Promise<{ bytes: number; espBytes: number; dataBytes: number }> {
  const exists = (p: string) => {
    try {
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  // The ESP: systemd-boot (or the UKI) as the removable-media default loader.
  const b = i.boot;
  const espFiles = b.kind === 'uki' ? [b.uki] : [b.vmlinuz, b.initrd, b.bootloader];
  const espPayload = espFiles.reduce((n, f) => n + statSync(f).size, 0);
  const espBytes = roundMiB(espPayload * 1.05 + 4 * MiB);
  mkdirSync(i.work, { recursive: true });
  const esp = join(i.work, 'esp.img');
  sparseFile(esp, espBytes);
  // Same inputs, same bytes: a fixed volume id, --invariant for mkfs.vfat's own times, and
  // mtools stamps files and directories with SOURCE_DATE_EPOCH (FAT times start in 1980).
  await execFile('mkfs.vfat', ['--invariant', '-n', 'BOOTLINEEFI', '-i', 'B0071E4E', esp]);
  const fatTime = String(Math.max(i.mtime, FAT_EPOCH));
  const mt = (args: string[]) => execFile(args[0]!, args.slice(1), { env: { ...process.env, MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: fatTime, TZ: 'UTC' } });
  if (b.kind === 'uki') {
    await mt(['mmd', '-i', esp, '::/EFI', '::/EFI/BOOT']);
    await mt(['mcopy', '-i', esp, b.uki, '::/EFI/BOOT/BOOTX64.EFI']);
  } else {
    const loader = loaderFiles(b.cmdline);
    await mt(['mmd', '-i', esp, '::/EFI', '::/EFI/BOOT', '::/loader', '::/loader/entries']);
    const loaderDir = join(i.work, 'loader');
    mkdirSync(join(loaderDir, 'entries'), { recursive: true });
    for (const [p, text] of Object.entries(loader)) writeFileSync(join(i.work, p), text);
    await mt(['mcopy', '-i', esp, b.bootloader, '::/EFI/BOOT/BOOTX64.EFI']);
    await mt(['mcopy', '-i', esp, b.vmlinuz, '::/vmlinuz']);
    await mt(['mcopy', '-i', esp, b.initrd, '::/initrd.img']);
    for (const p of Object.keys(loader)) await mt(['mcopy', '-i', esp, join(i.work, p), `::/${p}`]);
  }

  // The data partition (Isar's install data): ext4, populated from a folder.
  const dataDir = join(i.work, 'data');
  mkdirSync(dataDir, { recursive: true });
  let payload = 0;
  const extTime = i.mtime || 1;
  const files = dataFiles(i.images, i.autoInstall, exists);
  for (const [name, src] of files) {
    copyFileSync(src, join(dataDir, name));
    utimesSync(join(dataDir, name), extTime, extTime);
    payload += statSync(src).size;
  }
  const dataBytes = roundMiB(payload * 1.1 + 16 * MiB);
  const data = join(i.work, 'data.img');
  sparseFile(data, dataBytes);
  // mke2fs -d takes each file's times from the copy; E2FSPROGS_FAKE_TIME fixes the file
  // system's own, and debugfs the ctimes (which no copy can be given).
  const e2env = { env: { ...process.env, E2FSPROGS_FAKE_TIME: String(extTime) } };
  await execFile('mke2fs', ['-q', '-t', 'ext4', '-L', USB_DATA_LABEL, '-U', DATA_GUID.toLowerCase(), '-E', `root_owner=0:0,hash_seed=${DATA_GUID.toLowerCase()}`, '-d', dataDir, '-F', data], e2env);
  const ctimes = ['/', ...[...files.keys()].map((n) => `/${n}`)].map((p) => `sif "${p}" ctime @${extTime}\n`).join('');
  writeFileSync(join(i.work, 'ctimes.debugfs'), ctimes);
  await execFile('debugfs', ['-w', '-f', join(i.work, 'ctimes.debugfs'), data], e2env);

  // GPT: 1 MiB before the ESP, 1 MiB after the data partition for the backup table.
  const { bytes: total } = await assembleGptImage(i.file, DISK_GUID, [
    { name: 'EFI System', type: ESP_TYPE, uuid: ESP_GUID, image: esp },
    { name: USB_DATA_LABEL, type: LINUX_DATA_TYPE, uuid: DATA_GUID, image: data },
  ]);
  return { bytes: total, espBytes, dataBytes };
}
