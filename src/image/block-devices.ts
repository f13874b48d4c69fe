// Facts about the machine's block devices: which disks the running system booted
// from (through partitions, device-mapper and md down to whole disks), whether a path
// is a block device, and its size. Used by the image engine's target checks and by the
// deploy-image task's target choice.
import { open, readFile, readdir, realpath, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';

/** A disk the running system booted from, and the mount point that makes it one. */
export interface BootMedium {
  /** Whole disk, e.g. /dev/sda. */
  disk: string;
  /** The device actually mounted, e.g. /dev/sda2 (equals disk when unpartitioned). */
  device: string;
  mountPoint: string;
}

export interface MountEntry {
  /** "major:minor" of the mounted device ("0:NN" for virtual or some btrfs mounts). */
  majMin?: string;
  mountPoint: string;
  source: string;
}

/** Unescapes the octal escapes (\040 for space) the kernel uses in mount tables. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses /proc/self/mountinfo: "id parent maj:min root mountpoint opts [optional...] - fstype source superopts". */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(' ');
    const sep = f.indexOf('-');
    if (f.length < 5 || sep < 6 || f[sep + 2] === undefined) continue;
    out.push({ majMin: f[2], mountPoint: unescapeMount(f[4] ?? ''), source: unescapeMount(f[sep + 2] ?? '') });
  }
  return out;
}

/** Parses /proc/mounts: "source mountpoint fstype opts 0 0". */
export function parseProcMounts(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 2 || !f[0] || !f[1]) continue;
    out.push({ mountPoint: unescapeMount(f[1]), source: unescapeMount(f[0]) });
  }
  return out;
}

/** The boot mounts: the last mount of / and of /boot (later mounts hide earlier ones). */
export function bootMounts(entries: readonly MountEntry[]): MountEntry[] {
  const last = new Map<string, MountEntry>();
  for (const e of entries) if (e.mountPoint === '/' || e.mountPoint === '/boot') last.set(e.mountPoint, e);
  return [...last.values()];
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * The whole disks under a block device name in sysfs: a partition's parent,
 * and through slaves/ the disks under device-mapper or md (LUKS root, RAID).
 */
async function disksUnder(name: string, depth = 0): Promise<string[]> {
  const dir = `/sys/class/block/${name}`;
  if (depth > 8 || !(await exists(dir))) return [];
  let slaves: string[] = [];
  try {
    slaves = await readdir(`${dir}/slaves`);
  } catch {
    // no slaves/ directory: a plain disk or partition
  }
  if (slaves.length > 0) return (await Promise.all(slaves.map((s) => disksUnder(s, depth + 1)))).flat();
  if (await exists(`${dir}/partition`)) return [basename(dirname(await realpath(dir)))];
  return [name];
}

/** sysfs name of a mount's device: via major:minor when real, else via a /dev/* source. */
async function sysfsName(e: MountEntry): Promise<string | undefined> {
  if (e.majMin && !e.majMin.startsWith('0:')) {
    try {
      return basename(await realpath(`/sys/dev/block/${e.majMin}`));
    } catch {
      // fall back to the source name
    }
  }
  if (e.source.startsWith('/dev/')) {
    try {
      return basename(await realpath(e.source));
    } catch {
      return basename(e.source);
    }
  }
  return undefined; // rootfs, tmpfs, overlay, nfs: not on a local disk
}

/** The disks holding / and /boot, with the mount that makes each one the boot medium. */
export async function bootMedia(): Promise<BootMedium[]> {
  let entries: MountEntry[];
  try {
    entries = parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
  } catch {
    entries = parseProcMounts(await readFile('/proc/mounts', 'utf8').catch(() => ''));
  }
  const out: BootMedium[] = [];
  for (const e of bootMounts(entries)) {
    const name = await sysfsName(e);
    if (!name) continue;
    for (const disk of await disksUnder(name)) {
      out.push({ disk: `/dev/${disk}`, device: `/dev/${name}`, mountPoint: e.mountPoint });
    }
  }
  return out;
}

/** The whole disks holding / or /boot, e.g. ['/dev/sda']. */
export async function bootDisks(): Promise<string[]> {
  return [...new Set((await bootMedia()).map((m) => m.disk))];
}

export async function isBlockDevice(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isBlockDevice();
  } catch {
    return false;
  }
}

/**
 * Size in bytes: sysfs for block devices (its `size` is always in 512-byte
 * sectors), stat for files, else a binary search for the last readable byte
 * because node has no lseek(SEEK_END).
 */
export async function deviceSize(path: string): Promise<number> {
  const st = await stat(path);
  if (!st.isBlockDevice()) return st.size;
  try {
    const name = basename(await realpath(path));
    const sectors = Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim());
    if (Number.isFinite(sectors)) return sectors * 512;
  } catch {
    // no sysfs (unusual chroot): probe below
  }
  const fh = await open(path, 'r');
  try {
    const one = Buffer.alloc(1);
    const readable = async (pos: number) => (await fh.read(one, 0, 1, pos)).bytesRead === 1;
    if (!(await readable(0))) return 0;
    let lo = 0; // readable
    let hi = 1;
    while (await readable(hi)) {
      lo = hi;
      hi *= 2;
    }
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (await readable(mid)) lo = mid;
      else hi = mid;
    }
    return lo + 1;
  } finally {
    await fh.close();
  }
}
