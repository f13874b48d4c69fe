// The BOOTLINE_PROGRESS FIFO a script may write psplash commands to (exactly what
// `bmaptool copy --psplash-pipe=$BOOTLINE_PROGRESS` writes). Opened read-write and
// non-blocking: the open never waits for a writer, writers never get ENXIO, and a
// writer closing does not end the stream.
import { openSync, constants, closeSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { Socket } from 'node:net';
import { PsplashSplitter, parsePsplashCommand, type PsplashCommand } from './psplash-protocol.ts';

export class ProgressFifo {
  private socket: Socket | undefined;

  private constructor(readonly path: string) {}

  static create(path: string, onCommand: (c: PsplashCommand) => void): ProgressFifo {
    const fifo = new ProgressFifo(path);
    try {
      execFileSync('rm', ['-f', path]);
      execFileSync('mkfifo', ['-m', '0600', path]);
    } catch (e) {
      throw new Error(`cannot create the progress FIFO ${path}: ${(e as Error).message}`);
    }
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      const socket = new Socket({ fd, readable: true, writable: false });
      const splitter = new PsplashSplitter();
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => {
        for (const cmd of splitter.push(d)) {
          const c = parsePsplashCommand(cmd);
          if (c) onCommand(c);
        }
      });
      socket.on('error', () => {});
      fifo.socket = socket;
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return fifo;
  }

  /** Gives writers a moment to be read, then closes and removes the FIFO. */
  async close(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    this.socket?.destroy();
    await unlink(this.path).catch(() => {});
  }
}
