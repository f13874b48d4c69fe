// A local image file (path or file:// URL): seekable, size known, nothing to resume.
import { createReadStream } from 'node:fs';
import { open as openFile, stat } from 'node:fs/promises';
import { addAbortSignal } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import type { Source } from '../types.ts';

/** Large reads: the consumer is a disk writer, and 64 KiB default chunks cost syscalls. */
const READ_CHUNK = 1024 * 1024;

export class FileSource implements Source {
  readonly display: string;
  readonly seekable = true;
  readonly path: string;
  readonly localPath: string;

  constructor(spec: string) {
    this.path = /^file:/i.test(spec) ? fileURLToPath(spec) : spec;
    this.localPath = this.path;
    this.display = this.path;
  }

  async size(): Promise<number | undefined> {
    const st = await stat(this.path);
    // A block device reports 0 here; unknown is more honest than empty.
    return st.isFile() ? st.size : undefined;
  }

  async exists(): Promise<boolean> {
    try {
      const st = await stat(this.path);
      return st.isFile() || st.isBlockDevice();
    } catch {
      return false;
    }
  }

  async open(offset: number, signal?: AbortSignal): Promise<Readable> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
    signal?.throwIfAborted();
    // Opening here (not lazily in the stream) makes a missing or unreadable file reject `open`.
    const handle = await openFile(this.path, 'r');
    const stream = createReadStream('', { fd: handle, start: offset, highWaterMark: READ_CHUNK });
    return signal ? addAbortSignal(signal, stream) : stream;
  }
}
