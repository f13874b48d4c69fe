// The disk (or file) an image is written to: opened exclusively after the
// checks that keep a mounted disk or the running system's own disk safe, then
// positional writes, syncs, discards and a partition-table re-read.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { bootMedia, deviceSize, parseMountInfo } from './block-devices.ts';
import { formatBytes } from '../format.ts';
import { isPageAligned } from './aligned-buffer.ts';

export interface Target {
  /** As given by the caller (for messages). */
  readonly path: string;
  /** Capacity in bytes; Infinity for a regular file, which grows as it is written. */
  readonly size: number;
  readonly isBlockDevice: boolean;
  /** Writes all of `buf` at `pos` (short writes are continued). */
  write(buf: Uint8Array, pos: number): Promise<void>;
  /** Block devices: bytes written past the page cache (O_DIRECT) so far. */
  readonly directBytes?: number;
  /** True while whole aligned pages are written past the page cache (each such write waits for the device). */
  readonly writesDirect?: boolean;
  /** One positional read; returns the bytes read (0 at the end). */
  read(buf: Uint8Array, pos: number): Promise<number>;
  /** fdatasync. */
  sync(): Promise<void>;
  /** Tells the device [start, end) is unused (contents undefined afterwards). Throws when unsupported. */
  discard(start: number, end: number): Promise<void>;
  /** Makes [start, end) read back as zeros. */
  zero(start: number, end: number): Promise<void>;
  /** Regular files only: sets the length (an image file ends where the image ends). */
  setSize?(bytes: number): Promise<void>;
  /** Block devices: makes the kernel see the new partition table; throws (callers log it) when that fails. */
  rereadPartitions(): Promise<void>;
  close(): Promise<void>;
}

export interface OpenTargetOptions {
  /** Accept a regular file as the target (tests, building image files). */
  allowFile?: boolean;
  /** With allowFile: create the file when it does not exist. */
  create?: boolean;
  /**
   * Open a block device without O_EXCL and accept dm-crypt holders on it: write-through
   * encryption has opened a partition of it itself (the mount and boot-medium checks stay).
   */
  shared?: boolean;
}

/** Zeros are written this many at a time where the device cannot zero by itself. */
const ZERO_CHUNK = 1024 * 1024;

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: 10 * 60_000 }, (err, _out, stderr) => {
      if (!err) return resolve();
      const said = String(stderr).trim() || err.message;
      reject(new Error(`${cmd} ${args.join(' ')}: ${said}`));
    });
  });
}

/**
 * Makes the kernel see a disk's new partition table. BLKRRPART needs exclusive use, which
 * an open target holds itself (usually EBUSY then), so partx -u (BLKPG per partition, no
 * exclusivity needed) is the second try.
 */
export async function rereadPartitionTable(dev: string, shown = dev): Promise<void> {
  try {
    await run('blockdev', ['--rereadpt', dev]);
  } catch (e1) {
    try {
      await run('partx', ['-u', dev]);
    } catch (e2) {
      throw new Error(`re-reading the partition table of ${shown} failed (${(e1 as Error).message}; ${(e2 as Error).message}); the kernel sees it after a reboot or replug`);
    }
  }
}

const errText = (e: unknown) => {
  const err = e as NodeJS.ErrnoException;
  return err.code ? `${err.code} (${err.message.replace(/^[A-Z]+: /, '').replace(/, \w+ .*$/, '')})` : String(err.message ?? e);
};

/** sysfs facts about a whole disk: its partitions, and what is mounted or stacked on any of them. */
interface Usage {
  mounts: { device: string; mountPoint: string }[];
  holders: string[];
}

async function readText(p: string): Promise<string | undefined> {
  try {
    return (await readFile(p, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

async function usage(name: string): Promise<Usage> {
  // The disk itself and its partitions, as sysfs names with their major:minor.
  const names = [name];
  try {
    for (const entry of await readdir(`/sys/class/block/${name}`)) {
      if ((await readText(`/sys/class/block/${name}/${entry}/partition`)) !== undefined) names.push(entry);
    }
  } catch {
    // no sysfs: O_EXCL below still protects
  }
  const byMajMin = new Map<string, string>();
  for (const n of names) {
    const mm = await readText(`/sys/class/block/${n}/dev`);
    if (mm) byMajMin.set(mm, n);
  }
  const holders: string[] = [];
  for (const n of names) {
    try {
      for (const h of await readdir(`/sys/class/block/${n}/holders`)) holders.push(`${h} on /dev/${n}`);
    } catch {
      // no holders directory
    }
  }
  const mounts: Usage['mounts'] = [];
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const m of parseMountInfo(info)) {
    let dev = m.majMin ? byMajMin.get(m.majMin) : undefined;
    // btrfs and some others report an anonymous 0:NN; the source path still names the device.
    if (!dev && m.source.startsWith('/dev/')) {
      const src = basename(await realpath(m.source).catch(() => m.source));
      if (names.includes(src)) dev = src;
    }
    if (dev) mounts.push({ device: `/dev/${dev}`, mountPoint: m.mountPoint });
  }
  return { mounts, holders };
}

/**
 * Opens `path` for writing an image. A block device is refused when it is the
 * boot medium, when it or a partition is mounted (naming the mount point) or
 * held (RAID, LVM, dm-crypt), and is then opened O_EXCL so nothing can mount
 * it while it is written. Regular files only with allowFile.
 */
export async function openTarget(path: string, opts: OpenTargetOptions = {}): Promise<Target> {
  let real: string;
  let st;
  try {
    real = await realpath(path);
    st = await stat(real);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code !== 'ENOENT') throw new Error(`cannot use ${path} as the target: ${errText(e)}`);
    if (!opts.allowFile) throw new Error(`the target ${path} does not exist: check the device name (lsblk lists the disks)`);
    if (!opts.create) throw new Error(`the target file ${path} does not exist (and creating it was not asked for)`);
    const fh = await open(path, constants.O_RDWR | constants.O_CREAT, 0o644).catch((e2: unknown) => {
      throw new Error(`cannot create the target file ${path}: ${errText(e2)}`);
    });
    return new FileTarget(path, fh);
  }

  if (st.isBlockDevice()) {
    const name = basename(real);
    for (const b of await bootMedia()) {
      if (b.disk === real || b.device === real) {
        throw new Error(`${path} holds ${b.mountPoint} of the running system (the boot medium): refusing to overwrite it; choose another disk`);
      }
    }
    const use = await usage(name);
    if (use.mounts.length > 0) {
      const list = use.mounts.map((m) => `${m.device} on ${m.mountPoint}`).join(', ');
      throw new Error(`${path} is in use: mounted (${list}); unmount it first (umount ${use.mounts[0]?.mountPoint ?? ''})`);
    }
    if (use.holders.length > 0 && !opts.shared) {
      throw new Error(`${path} is in use by ${use.holders.join(', ')} (RAID, LVM or dm-crypt): stop that first`);
    }
    let fh: FileHandle;
    try {
      // O_EXCL on a block device: exclusive open, fails with EBUSY when mounted or claimed.
      fh = await open(real, constants.O_RDWR | (opts.shared ? 0 : constants.O_EXCL));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EBUSY') throw new Error(`${path} is in use (mounted or held by another program): unmount it first`);
      if (code === 'EACCES' || code === 'EPERM') throw new Error(`cannot open ${path} for writing: permission denied; run as root`);
      if (code === 'EROFS') throw new Error(`${path} is read-only (write-protect switch, or a read-only device)`);
      throw new Error(`cannot open ${path} for writing: ${errText(e)}`);
    }
    // A second descriptor for writes past the page cache; without it (refused), all writes are cached.
    const direct = await open(real, constants.O_RDWR | constants.O_DIRECT).catch(() => undefined);
    try {
      const size = await deviceSize(real);
      const lbs = Number(await readText(`/sys/class/block/${name}/queue/logical_block_size`)) || 512;
      return new BlockTarget(path, real, fh, size, lbs, direct);
    } catch (e) {
      await fh.close();
      await direct?.close();
      throw e;
    }
  }

  if (!st.isFile()) throw new Error(`${path} is neither a block device nor a regular file: it cannot be a target`);
  if (!opts.allowFile) throw new Error(`${path} is a regular file, not a block device: give a disk such as /dev/sdX (lsblk lists them)`);
  // r+: never truncated at open; setSize() gives it the image's length at the end.
  const fh = await open(real, 'r+').catch((e: unknown) => {
    throw new Error(`cannot open the target file ${path} for writing: ${errText(e)}`);
  });
  return new FileTarget(path, fh);
}

abstract class BaseTarget implements Target {
  abstract readonly size: number;
  abstract readonly isBlockDevice: boolean;
  private closed = false;

  constructor(
    readonly path: string,
    protected readonly fh: FileHandle,
  ) {}

  async write(buf: Uint8Array, pos: number): Promise<void> {
    await this.writeWith(this.fh, buf, pos);
  }

  /** Writes all of `buf` at `pos` through `fh`; a failure names the target and the byte (the errno error is its cause). */
  protected async writeWith(fh: FileHandle, buf: Uint8Array, pos: number): Promise<void> {
    let off = 0;
    while (off < buf.length) {
      let n: number;
      try {
        ({ bytesWritten: n } = await fh.write(buf, off, buf.length - off, pos + off));
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        const hint = err.code === 'ENOSPC' ? ': past the end of the target (it is too small for the image)' : err.code === 'EIO' ? ': the disk reports an I/O error (failing or removed?)' : '';
        throw new Error(`writing ${this.path} at byte ${pos + off} failed: ${errText(e)}${hint}`, { cause: e });
      }
      if (n === 0) throw new Error(`writing ${this.path} at byte ${pos + off} made no progress: the target is full or gone`);
      off += n;
    }
  }

  async read(buf: Uint8Array, pos: number): Promise<number> {
    try {
      return (await this.fh.read(buf, 0, buf.length, pos)).bytesRead;
    } catch (e) {
      throw new Error(`reading ${this.path} at byte ${pos} failed: ${errText(e)}`);
    }
  }

  async sync(): Promise<void> {
    try {
      await this.fh.datasync();
    } catch (e) {
      throw new Error(`flushing ${this.path} to the disk (fdatasync) failed: ${errText(e)}`);
    }
  }

  protected async writeZeros(start: number, end: number): Promise<void> {
    const zeros = Buffer.alloc(Math.min(ZERO_CHUNK, Math.max(0, end - start)));
    for (let p = start; p < end; p += zeros.length) await this.write(zeros.subarray(0, Math.min(zeros.length, end - p)), p);
  }

  abstract discard(start: number, end: number): Promise<void>;
  abstract zero(start: number, end: number): Promise<void>;
  abstract rereadPartitions(): Promise<void>;

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

class BlockTarget extends BaseTarget {
  readonly isBlockDevice = true;
  /** blkdiscard and O_DIRECT want sector-aligned ranges; page alignment also keeps them off pages written through the cache. */
  private readonly align: number;
  directBytes = 0;

  get writesDirect(): boolean {
    return this.direct !== undefined;
  }

  constructor(
    path: string,
    private readonly dev: string,
    fh: FileHandle,
    readonly size: number,
    logicalBlockSize: number,
    /** The device opened with O_DIRECT; unset when it refused, or refused a write. */
    private direct: FileHandle | undefined,
  ) {
    super(path, fh);
    this.align = Math.max(4096, logicalBlockSize);
  }

  /**
   * Whole aligned pages from a page-aligned buffer (the copy's write pool) go past the page cache:
   * the data is copied once, to the device, instead of into the cache and out again. Measured with
   * dd onto a loop device, 1.3 GB: 3.2-3.7 s and 0.3-0.5 s of system CPU, against 5.7-6.4 s and
   * 2.4-3.5 s through the cache. Anything else (an image's unaligned end, zeros) is written
   * through the cache; fdatasync flushes both, as they are one device.
   */
  override async write(buf: Uint8Array, pos: number): Promise<void> {
    const direct = this.direct;
    if (direct && isPageAligned(buf) && pos % this.align === 0 && buf.length % this.align === 0) {
      try {
        await this.writeWith(direct, buf, pos);
        this.directBytes += buf.length;
        return;
      } catch (e) {
        // EINVAL: the device wants another alignment than it says; every later write goes through the cache.
        if (((e as Error).cause as NodeJS.ErrnoException | undefined)?.code !== 'EINVAL') throw e;
        this.direct = undefined;
        await direct.close().catch(() => undefined);
      }
    }
    await super.write(buf, pos);
  }

  override async close(): Promise<void> {
    const direct = this.direct;
    this.direct = undefined;
    await direct?.close();
    await super.close();
  }

  private inner(start: number, end: number): [number, number] {
    const a = Math.ceil(start / this.align) * this.align;
    const b = Math.floor(end / this.align) * this.align;
    return b > a ? [a, b] : [start, start];
  }

  private blkdiscard(extra: string[], a: number, b: number): Promise<void> {
    // -f: blkdiscard opens O_EXCL itself, which our own exclusive open would refuse.
    return run('blkdiscard', ['-f', ...extra, '-o', String(a), '-l', String(b - a), this.dev]);
  }

  async discard(start: number, end: number): Promise<void> {
    // Unaligned edges are left alone: discarding is only a hint to the device.
    const [a, b] = this.inner(start, end);
    if (b > a) await this.blkdiscard([], a, b);
  }

  async zero(start: number, end: number): Promise<void> {
    const [a, b] = this.inner(start, end);
    if (b <= a) return this.writeZeros(start, end);
    try {
      // BLKZEROOUT: the device zeroes (WRITE ZEROES / TRIM with zeroing) or the kernel writes zeros.
      await this.blkdiscard(['-z'], a, b);
    } catch {
      await this.writeZeros(a, b);
    }
    await this.writeZeros(start, a);
    await this.writeZeros(b, end);
  }

  async rereadPartitions(): Promise<void> {
    await rereadPartitionTable(this.dev, this.path);
  }
}

class FileTarget extends BaseTarget {
  readonly isBlockDevice = false;
  readonly size = Number.POSITIVE_INFINITY;

  async discard(start: number, end: number): Promise<void> {
    await this.zero(start, end);
  }

  async zero(start: number, end: number): Promise<void> {
    if (end <= start) return;
    try {
      // node has no fallocate(); util-linux's punches a hole, which reads back as zeros and stays sparse.
      await run('fallocate', ['-p', '-o', String(start), '-l', String(end - start), this.path]);
    } catch {
      await this.writeZeros(start, end);
    }
  }

  async setSize(bytes: number): Promise<void> {
    try {
      await this.fh.truncate(bytes);
    } catch (e) {
      throw new Error(`setting the size of ${this.path} to ${formatBytes(bytes)} failed: ${errText(e)}`);
    }
  }

  async rereadPartitions(): Promise<void> {
    // a file has no partitions the kernel tracks
  }
}
