// Choosing the disk to write (block-device facts come from src/image/block-devices.ts).
// The decisions (chooseTarget, autoSelect, overwriteDecision) are pure so they
// can be tested without hardware; everything that touches /proc, /sys or /dev
// is below them. Opening the disk exclusively and writing it is the image
// engine's job (src/image/target.ts, src/image/copy.ts).
import { open, readFile, readdir, readlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { formatBytes } from '../../../format.ts';
import { TaskError } from '../builtin.ts';
import { parseMountInfo, type BootMedium } from '../../../image/block-devices.ts';

/** How much of the target is inspected to decide whether it "is empty" (as Isar's `cmp -n 1M`). */
export const EMPTY_PROBE_BYTES = 1024 * 1024;


export interface TargetFacts {
  isBlockDevice(path: string): boolean;
  exists(path: string): boolean;
  /** Regular file? Defaults to "exists and is not a block device". */
  isFile?(path: string): boolean;
  /** Canonical name (symlinks such as /dev/disk/by-id/* resolved). Defaults to identity. */
  resolve?(path: string): string;
  /** Disks (or BootMedium records) that hold / or /boot and must never be written. */
  bootDisks: readonly (string | BootMedium)[];
  /** Accept a regular file, or a path to create, as the target (tests, dry labs). */
  allowFile: boolean;
}

export interface TargetChoice {
  target: string;
  kind: 'block' | 'file' | 'new-file';
  /** Candidates before the chosen one, and why they were skipped. */
  rejected: { path: string; reason: string }[];
}

/** Splits Isar-style candidate lists ("/dev/sda,/dev/vda:/dev/nvme0n1") and tolerates a single string. */
export function splitCandidates(target: string | readonly string[]): string[] {
  const items = typeof target === 'string' ? [target] : target;
  return items.flatMap((t) => t.split(/[,:]/)).map((t) => t.trim()).filter((t) => t.length > 0);
}

/**
 * The first candidate that is a block device and is not the boot medium
 * (Isar's rule); with allowFile also a regular file or a path to create.
 * Throws a TaskError naming every candidate and why it was rejected.
 */
export function chooseTarget(candidates: readonly string[], facts: TargetFacts): TargetChoice {
  const resolve = facts.resolve ?? ((p: string) => p);
  const isFile = facts.isFile ?? ((p: string) => facts.exists(p) && !facts.isBlockDevice(p));
  const boot = new Map<string, string>();
  for (const b of facts.bootDisks) {
    if (typeof b === 'string') boot.set(b, 'holds / or /boot (boot medium)');
    else {
      const why = `holds ${b.mountPoint} (boot medium)`;
      if (!boot.has(b.disk)) boot.set(b.disk, why);
      if (!boot.has(b.device)) boot.set(b.device, why);
    }
  }

  const rejected: { path: string; reason: string }[] = [];
  for (const path of candidates) {
    const real = resolve(path);
    const bootReason = boot.get(real) ?? boot.get(path);
    let reason: string | undefined;
    let kind: TargetChoice['kind'] | undefined;
    if (bootReason) reason = bootReason;
    else if (facts.isBlockDevice(path)) kind = 'block';
    else if (!facts.exists(path)) {
      if (facts.allowFile) kind = 'new-file';
      else reason = 'does not exist';
    } else if (facts.allowFile && isFile(path)) kind = 'file';
    else reason = facts.allowFile ? 'neither a block device nor a regular file' : 'not a block device';
    if (kind) return { target: path, kind, rejected };
    rejected.push({ path, reason: reason ?? 'rejected' });
  }

  if (candidates.length === 0) {
    throw new TaskError('no target device given: set installer.target.dev (or the task option `target`) to a comma-separated list of candidate disks');
  }
  const why = rejected.map((r) => `${r.path}: ${r.reason}`).join('; ');
  throw new TaskError(
    `no usable target device among ${candidates.length} candidate(s): ${why}. ` +
      'Check that the disk is attached and visible (lsblk), and set installer.target.dev to it; the disk holding / or /boot is never used.',
  );
}

/** The rules of `target: [auto]`. */
export interface TargetRules {
  /** Smallest acceptable disk, in bytes. */
  minSize?: number;
  /** Also consider removable disks (USB sticks, SD cards). Default false. */
  removable?: boolean;
  /** A glob ("ata-Samsung*") or a /regex/ matched against the disk's /dev/disk/by-id names. */
  byId?: string;
}

/** What automatic selection needs to know about one entry of /sys/block. */
export interface DiskFacts {
  /** sysfs name, e.g. "sda", "nvme0n1". */
  name: string;
  size: number;
  removable: boolean;
  /** Holders of the disk or of its partitions (RAID, LVM, dm-crypt), e.g. "dm-0 on sda2". */
  holders: string[];
  /** Mounted devices of the disk, e.g. "/dev/sdb1 on /mnt". */
  mounted: string[];
  /** Names in /dev/disk/by-id that link to the disk itself (not its partitions). */
  byId: string[];
}

export interface AutoChoice {
  target: string;
  disk: DiskFacts;
  /** Every other disk, and why it was not chosen. */
  rejected: { name: string; reason: string }[];
}

/** Kernel devices that are never an installation target; the value says why, for messages. */
const NOT_A_DISK: [RegExp, string][] = [
  [/^loop\d/, 'loop device'],
  [/^z?ram\d/, 'RAM disk'],
  [/^sr\d/, 'optical drive'],
  [/^md\d/, 'software RAID'],
  [/^dm-\d/, 'device-mapper device'],
];

/** A glob (* ? [...]) or a /regex/ as a whole-name RegExp. */
export function byIdMatcher(pattern: string): RegExp {
  const re = /^\/(.+)\/([a-z]*)$/.exec(pattern);
  if (re) {
    try {
      return new RegExp(re[1] as string, re[2]);
    } catch (e) {
      throw new TaskError(`targetRules.byId ${pattern} is not a valid regular expression: ${(e as Error).message}`);
    }
  }
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] as string;
    if (c === '*') out += '.*';
    else if (c === '?') out += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) out += '\\[';
      else {
        const body = pattern.slice(i + 1, end);
        out += `[${body.startsWith('!') ? `^${body.slice(1)}` : body}]`;
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${out}$`);
}

function describeRules(r: TargetRules): string {
  const parts = [`removable ${r.removable ? 'allowed' : 'excluded'}`];
  if (r.minSize !== undefined) parts.push(`minSize ${formatBytes(r.minSize)}`);
  if (r.byId !== undefined) parts.push(`byId ${r.byId}`);
  return parts.join(', ');
}

function describeDisk(d: DiskFacts): string {
  const id = d.byId[0] ? `, ${d.byId[0]}` : '';
  return `/dev/${d.name} (${formatBytes(d.size)}${d.removable ? ', removable' : ''}${id})`;
}

/**
 * `target: [auto]`: the one whole disk that is not the boot medium, not a
 * loop/RAM/optical/RAID/device-mapper device, not in use, not removable unless
 * allowed, at least minSize, and (with byId) has a matching /dev/disk/by-id name.
 * None or several: a TaskError naming every disk and why, and how to narrow.
 */
export function autoSelect(disks: readonly DiskFacts[], rules: TargetRules, bootDisks: readonly (string | BootMedium)[]): AutoChoice {
  const boot = new Map<string, string>();
  for (const b of bootDisks) {
    const disk = basename(typeof b === 'string' ? b : b.disk);
    if (!boot.has(disk)) boot.set(disk, typeof b === 'string' ? 'boot medium (holds / or /boot)' : `boot medium (holds ${b.mountPoint})`);
  }
  const byId = rules.byId === undefined ? undefined : byIdMatcher(rules.byId);
  const ignored = new Map<string, string[]>();
  const rejected: { name: string; reason: string }[] = [];
  const fits: DiskFacts[] = [];
  for (const d of [...disks].sort((a, b) => a.name.localeCompare(b.name))) {
    const kind = NOT_A_DISK.find(([re]) => re.test(d.name))?.[1];
    if (kind) {
      ignored.set(kind, [...(ignored.get(kind) ?? []), d.name]);
      continue;
    }
    let reason: string | undefined;
    if (boot.has(d.name)) reason = boot.get(d.name);
    else if (d.holders.length > 0) reason = `in use by ${d.holders.join(', ')}`;
    else if (d.mounted.length > 0) reason = `mounted (${d.mounted.join(', ')})`;
    else if (d.size <= 0) reason = 'no medium (size 0)';
    else if (d.removable && !rules.removable) reason = 'removable (allow with targetRules.removable: true)';
    else if (rules.minSize !== undefined && d.size < rules.minSize) reason = `${formatBytes(d.size)}, smaller than minSize ${formatBytes(rules.minSize)}`;
    else if (byId && !d.byId.some((n) => byId.test(n))) {
      reason = `no /dev/disk/by-id name matches ${rules.byId} (${d.byId.length > 0 ? `has ${d.byId.join(', ')}` : 'has none'})`;
    }
    if (reason) rejected.push({ name: d.name, reason });
    else fits.push(d);
  }
  const only = fits[0];
  if (fits.length === 1 && only) {
    return { target: `/dev/${only.name}`, disk: only, rejected };
  }
  const rulesText = `target: auto (${describeRules(rules)})`;
  if (fits.length > 1) {
    throw new TaskError(
      `${fits.length} disks match ${rulesText}: ${fits.map(describeDisk).join(', ')}; refusing to guess. ` +
        'Set the task option target (installer.target.dev) to the disk to write, or narrow the choice with targetRules.byId or targetRules.minSize.',
    );
  }
  const why = rejected.map((r) => `/dev/${r.name}: ${r.reason}`);
  for (const [kind, names] of ignored) why.push(`${names.join(', ')}: ${kind}${names.length > 1 ? 's' : ''}, never a target`);
  throw new TaskError(
    `no disk matches ${rulesText}: ${why.length > 0 ? why.join('; ') : 'no disks found in /sys/block'}. ` +
      'Check that the disk is attached (lsblk), relax targetRules, or set the task option target (installer.target.dev) to the disk.',
  );
}

async function readTrim(p: string): Promise<string | undefined> {
  try {
    return (await readFile(p, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

async function listDir(p: string): Promise<string[]> {
  try {
    return await readdir(p);
  } catch {
    return [];
  }
}

export interface DiskFactsRoots {
  /** sysfs mount point; default /sys. */
  sysfs?: string;
  /** devtmpfs mount point (for disk/by-id); default /dev. */
  dev?: string;
  /** Mount table text (mountinfo); default: read /proc/self/mountinfo. */
  mountinfo?: string;
}

/** The facts autoSelect needs, for every entry of <sysfs>/block. */
export async function gatherDiskFacts(roots: DiskFactsRoots = {}): Promise<DiskFacts[]> {
  const sysfs = roots.sysfs ?? '/sys';
  const dev = roots.dev ?? '/dev';
  const mounts = parseMountInfo(roots.mountinfo ?? (await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')));
  // by-id names of whole disks: links to ../../sda (partitions link to sda1, which is no disk name).
  const ids = new Map<string, string[]>();
  const idDir = join(dev, 'disk', 'by-id');
  for (const link of (await listDir(idDir)).sort()) {
    const to = await readlink(join(idDir, link)).catch(() => undefined);
    if (to === undefined) continue;
    const name = basename(to);
    ids.set(name, [...(ids.get(name) ?? []), link]);
  }
  const out: DiskFacts[] = [];
  for (const name of (await listDir(join(sysfs, 'block'))).sort()) {
    const dir = join(sysfs, 'block', name);
    const parts: string[] = [];
    for (const entry of await listDir(dir)) {
      if ((await readTrim(join(dir, entry, 'partition'))) !== undefined) parts.push(entry);
    }
    const holders: string[] = [];
    const mounted: string[] = [];
    for (const n of [name, ...parts.sort()]) {
      const base = n === name ? dir : join(dir, n);
      for (const h of await listDir(join(base, 'holders'))) holders.push(`${h} on /dev/${n}`);
      const majMin = await readTrim(join(base, 'dev'));
      for (const m of mounts) {
        if ((majMin !== undefined && m.majMin === majMin) || m.source === `/dev/${n}`) mounted.push(`/dev/${n} on ${m.mountPoint}`);
      }
    }
    const sectors = Number(await readTrim(join(dir, 'size')));
    out.push({
      name,
      size: Number.isFinite(sectors) ? sectors * 512 : 0,
      removable: (await readTrim(join(dir, 'removable'))) === '1',
      holders,
      mounted,
      byId: ids.get(name) ?? [],
    });
  }
  return out;
}

export type OverwriteAction = 'write' | 'ask' | 'abort';

/**
 * What to do with a target, following Isar: an empty target is just written;
 * in attended mode the person at the console decides about a non-empty one;
 * unattended, the overwrite policy decides.
 */
export function overwriteDecision(o: { empty: boolean; policy: 'OVERWRITE' | 'ABORT'; unattended: boolean }): OverwriteAction {
  if (o.empty) return 'write';
  if (!o.unattended) return 'ask';
  return o.policy === 'OVERWRITE' ? 'write' : 'abort';
}


/** True when the first MiB (or the whole of a shorter device) is all zeros; a missing path is empty. */
export async function isEmpty(path: string): Promise<boolean> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw e;
  }
  try {
    const buf = Buffer.alloc(EMPTY_PROBE_BYTES);
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    for (let i = 0; i < got; i++) if (buf[i] !== 0) return false;
    return true;
  } finally {
    await fh.close();
  }
}
