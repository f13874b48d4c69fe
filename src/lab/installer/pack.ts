// initrd.img = a small uncompressed cpio holding /etc/bootline/installer.json, then the
// zstd-compressed cpio of everything else. The kernel unpacks concatenated archives in
// turn (as it does early microcode). Splitting them lets installer.json state the size of
// the whole initrd.img — known only after compressing — without compressing twice: the
// size field has a fixed width, so the first archive's length does not depend on it.
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { cpioStream } from './cpio.ts';
import type { Entry, FileTree } from './tree.ts';
import { INIT_PATHS } from './init-script.ts';

export interface InstallerInfoFile {
  version: string;
  kernel: string;
  initramfsBytes: number;
}

/** Width the size is padded to (JSON allows the spaces): the file's length never changes. */
const SIZE_WIDTH = 14;

export function installerInfoJson(info: InstallerInfoFile): Buffer {
  const size = String(info.initramfsBytes).padEnd(SIZE_WIDTH, ' ');
  return Buffer.from(`{"version": ${JSON.stringify(info.version)}, "kernel": ${JSON.stringify(info.kernel)}, "initramfsBytes": ${size}}\n`);
}

/** The first, uncompressed archive, padded to 512 bytes (the kernel skips the zeros). */
export async function infoArchive(info: InstallerInfoFile, mtime: number): Promise<Buffer> {
  const entries: [string, Entry][] = [
    ['etc', { kind: 'dir', mode: 0o755 }],
    ['etc/bootline', { kind: 'dir', mode: 0o755 }],
    [INIT_PATHS.info, { kind: 'data', mode: 0o644, data: installerInfoJson(info) }],
  ];
  const parts: Buffer[] = [];
  for await (const b of cpioStream(entries, mtime)) parts.push(b);
  const all = Buffer.concat(parts);
  return Buffer.concat([all, Buffer.alloc((512 - (all.length % 512)) % 512)]);
}

export interface Packed {
  /** Bytes of the uncompressed cpio. */
  archiveBytes: number;
  compressedBytes: number;
}

/** Packs the tree into `outFile` through `zstd -<level>`. */
export async function packCompressed(tree: FileTree, mtime: number, level: number, outFile: string, onProgress?: (archiveBytes: number) => void): Promise<Packed> {
  // -T0: every core; zstd's multi-threaded output does not depend on the number of threads.
  const zstd = spawn('zstd', ['-q', `-${level}`, '-T0', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  zstd.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve, reject) => zstd.on('error', reject).on('close', resolve));
  let archiveBytes = 0;
  let compressedBytes = 0;
  let lastReport = 0;
  const count = new Transform({
    transform(chunk: Buffer, _enc, done) {
      archiveBytes += chunk.length;
      if (onProgress && archiveBytes - lastReport >= 32 << 20) onProgress((lastReport = archiveBytes));
      done(null, chunk);
    },
  });
  const entries = tree.paths().map((p) => [p, tree.entries.get(p)!] as [string, Entry]);
  const writing = pipeline(
    zstd.stdout,
    new Transform({ transform: (c: Buffer, _e, done) => ((compressedBytes += c.length), done(null, c)) }),
    createWriteStream(outFile),
  );
  await Promise.all([pipeline(Readable.from(cpioStream(entries, mtime)), count, zstd.stdin), writing]);
  const code = await exited;
  if (code !== 0) throw new Error(`zstd failed (exit status ${code}): ${stderr.trim() || 'no message'}`);
  return { archiveBytes, compressedBytes };
}
