// `-`: the image piped into the process. Read once, from the start; nothing to seek or resume.
import { fstatSync } from 'node:fs';
import { addAbortSignal } from 'node:stream';
import type { Readable } from 'node:stream';
import type { Source } from '../types.ts';

export class StdinSource implements Source {
  readonly display = 'stdin';
  readonly seekable = false;
  private opened = false;

  /** `input` defaults to process.stdin; tests pass their own stream. */
  constructor(private readonly input: Readable = process.stdin) {}

  async size(): Promise<number | undefined> {
    if (this.input !== process.stdin) return undefined;
    try {
      // `bootline image copy - dev < image` redirects a file: its size is known.
      const st = fstatSync(0);
      return st.isFile() ? st.size : undefined;
    } catch {
      return undefined;
    }
  }

  async exists(): Promise<boolean> {
    return true;
  }

  async open(offset: number, signal?: AbortSignal): Promise<Readable> {
    if (offset !== 0) {
      throw new Error(`stdin cannot seek: cannot start at byte ${offset}; pass the image as a file or URL to resume`);
    }
    if (this.opened) throw new Error('stdin can be read only once; pass the image as a file or URL to read it again');
    signal?.throwIfAborted();
    this.opened = true;
    return signal ? addAbortSignal(signal, this.input) : this.input;
  }
}
