// GPT disk images assembled from files: an ESP (FAT, filled with mtools) and filesystem
// images (ext4 made with `mke2fs -d`), placed into a sparse file behind a table written by
// sfdisk. No loop devices, no mounts, no root needed; the same inputs give the same bytes.
import { execFile as execFileCb } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

export const MiB = 1024 * 1024;
const SECTOR = 512;
export const ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B';
export const LINUX_DATA_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4';
/** The Discoverable Partitions Specification's x86-64 root type. */
export const LINUX_ROOT_X86_64_TYPE = '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709';

/** The Debian packages whose tools this needs, by tool. */
export const DISK_IMAGE_TOOLS = { sfdisk: 'fdisk', 'mkfs.vfat': 'dosfstools', mmd: 'mtools', mcopy: 'mtools', mke2fs: 'e2fsprogs' } as const;

/** 1980-01-01, the earliest time FAT can store. */
const FAT_EPOCH = 315532800;

export const roundMiB = (bytes: number): number => Math.ceil(bytes / MiB) * MiB;

/** A sparse file of exactly `bytes`. */
export function sparseFile(path: string, bytes: number): void {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

/**
 * A FAT ESP image of `bytes` holding `files` (destination path in the ESP -> source file),
 * directories made as needed.
 */
export async function buildEsp(file: string, bytes: number, label: string, volumeId: string, files: Record<string, string>, mtime: number): Promise<void> {
  sparseFile(file, bytes);
  // Same inputs, same bytes: --invariant for mkfs.vfat's own times, and mtools stamps what it
  // copies with SOURCE_DATE_EPOCH (FAT times start in 1980).
  await execFile('mkfs.vfat', ['--invariant', '-n', label, '-i', volumeId, file]);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: String(Math.max(mtime, FAT_EPOCH)), TZ: 'UTC' };
  const dirs = new Set<string>();
  for (const dest of Object.keys(files)) {
    const parts = dest.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const sorted = [...dirs].sort();
  if (sorted.length > 0) await execFile('mmd', ['-i', file, ...sorted.map((d) => `::/${d}`)], { env });
  for (const [dest, src] of Object.entries(files).sort(([a], [b]) => (a < b ? -1 : 1))) await execFile('mcopy', ['-i', file, src, `::/${dest}`], { env });
}

/** An ext4 image of `bytes` populated from `dir`, with fixed identifiers and times. */
export async function buildExt4(file: string, bytes: number, label: string, uuid: string, dir: string, mtime: number, blockSize?: number): Promise<void> {
  sparseFile(file, bytes);
  await execFile('mke2fs', ['-q', '-t', 'ext4', ...(blockSize ? ['-b', String(blockSize)] : []), '-L', label, '-U', uuid, '-E', `root_owner=0:0,hash_seed=${uuid}`, '-d', dir, '-F', file], {
    env: { ...process.env, E2FSPROGS_FAKE_TIME: String(mtime || 1) },
  });
}

export interface GptPartition {
  /** GPT partition name (PARTLABEL). */
  name: string;
  type: string;
  uuid: string;
  /** The partition's content: a file exactly as large as the partition. */
  image: string;
}

/**
 * Writes `file`: a GPT with `partitions` one after the other from 1 MiB, each copied from its
 * image (all-zero blocks left as holes), then `tailBytes` of unpartitioned space (at least the
 * 1 MiB the backup table needs).
 */
export async function assembleGptImage(file: string, diskGuid: string, partitions: GptPartition[], tailBytes = MiB): Promise<{ bytes: number; offsets: number[] }> {
  const offsets: number[] = [];
  let at = MiB;
  for (const p of partitions) {
    offsets.push(at);
    at += roundMiB(statSync(p.image).size);
  }
  const total = at + Math.max(MiB, roundMiB(tailBytes));
  sparseFile(file, total);
  const table = [
    'label: gpt',
    `label-id: ${diskGuid}`,
    'unit: sectors',
    ...partitions.map((p, i) => `start=${offsets[i]! / SECTOR}, size=${statSync(p.image).size / SECTOR}, type=${p.type}, uuid=${p.uuid}, name="${p.name}"`),
  ].join('\n');
  await new Promise<void>((resolve, reject) => {
    const child = execFileCb('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', file], (e, _out, err) => (e ? reject(new Error(`sfdisk failed on ${file}: ${err || e.message}`)) : resolve()));
    child.stdin!.end(`${table}\n`);
  });
  partitions.forEach((p, i) => copyInto(p.image, file, offsets[i]!));
  return { bytes: total, offsets };
}

/** Copies `src` into `dest` at `offset`, skipping all-zero blocks (they are holes already). */
function copyInto(src: string, dest: string, offset: number): void {
  const inFd = openSync(src, 'r');
  const outFd = openSync(dest, 'r+');
  const buf = Buffer.alloc(4 * MiB);
  const zeros = Buffer.alloc(buf.length);
  try {
    for (let pos = 0; ; ) {
      const n = readSync(inFd, buf, 0, buf.length, pos);
      if (n === 0) break;
      const chunk = buf.subarray(0, n);
      if (!chunk.equals(zeros.subarray(0, n))) writeSync(outFd, chunk, 0, n, offset + pos);
      pos += n;
    }
  } finally {
    closeSync(inFd);
    closeSync(outFd);
  }
}
