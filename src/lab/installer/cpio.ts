// The "newc" cpio format the kernel unpacks an initramfs from, written by hand so that the
// archive depends only on the tree: entries in sorted order, owner 0:0, one fixed mtime,
// inode numbers counted from 1 — the same tree gives the same bytes. Device nodes
// (/dev/console) need no root: they are just headers.
import { createReadStream } from 'node:fs';
import type { Entry } from './tree.ts';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export interface CpioHeader {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  filesize: number;
  rdevmajor?: number;
  rdevminor?: number;
  name: string;
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

/** One header with its name, padded so that the data starts on a 4-byte boundary. */
export function cpioHeader(h: CpioHeader): Buffer {
  const name = Buffer.from(`${h.name}\0`);
  const fields = [h.ino, h.mode, 0, 0, h.nlink, h.mtime, h.filesize, 0, 0, h.rdevmajor ?? 0, h.rdevminor ?? 0, name.length, 0];
  const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
  return Buffer.concat([head, name, Buffer.alloc(pad4(head.length + name.length))]);
}

export const cpioPadding = (size: number): Buffer => Buffer.alloc(pad4(size));

export const cpioTrailer = (): Buffer => cpioHeader({ ino: 0, mode: 0, nlink: 1, mtime: 0, filesize: 0, name: 'TRAILER!!!' });

/** The archive's bytes, entry by entry; file contents are streamed from their source. */
export async function* cpioStream(entries: Iterable<[string, Entry]>, mtime: number): AsyncGenerator<Buffer> {
  let ino = 1;
  for (const [name, e] of entries) {
    const common = { ino: ino++, mtime, name };
    switch (e.kind) {
      case 'dir':
        yield cpioHeader({ ...common, mode: S_IFDIR | e.mode, nlink: 2, filesize: 0 });
        break;
      case 'symlink': {
        const target = Buffer.from(e.target);
        yield cpioHeader({ ...common, mode: S_IFLNK | 0o777, nlink: 1, filesize: target.length });
        yield Buffer.concat([target, cpioPadding(target.length)]);
        break;
      }
      case 'chardev':
        yield cpioHeader({ ...common, mode: S_IFCHR | e.mode, nlink: 1, filesize: 0, rdevmajor: e.major, rdevminor: e.minor });
        break;
      case 'data':
        yield cpioHeader({ ...common, mode: S_IFREG | e.mode, nlink: 1, filesize: e.data.length });
        yield Buffer.concat([e.data, cpioPadding(e.data.length)]);
        break;
      case 'file': {
        yield cpioHeader({ ...common, mode: S_IFREG | e.mode, nlink: 1, filesize: e.size });
        let got = 0;
        for await (const chunk of createReadStream(e.source, { highWaterMark: 1 << 20 })) {
          got += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
        if (got !== e.size) throw new Error(`${e.source} changed while the initramfs was packed (${got} bytes, expected ${e.size}): build again`);
        yield cpioPadding(e.size);
        break;
      }
    }
  }
  yield cpioTrailer();
}
