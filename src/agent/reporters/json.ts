// The json reporter: one event per line (NDJSON), for log collectors and tests of the
// agent itself. A write stream keeps the lines in order without blocking the agent.
import { createWriteStream, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BootlineEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import type { Reporter, Warn } from './reporter.ts';

/** How long one write may wait for a slow reader before the next event is taken anyway. */
const DRAIN_WAIT_MS = 5000;

export function toJsonLine(event: BootlineEvent): string {
  return `${JSON.stringify(event)}\n`;
}

/** Resolves on the first of `events` or after `ms`; never rejects. */
function waitFor(emitter: NodeJS.EventEmitter, events: string[], ms: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const e of events) emitter.removeListener(e, done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    for (const e of events) emitter.once(e, done);
  });
}

export interface JsonReporterOptions {
  warn: Warn;
  /** Stream used for fd 1 (defaults to process.stdout), so stdout output stays in one order. */
  stdout?: NodeJS.WritableStream;
}

export class JsonReporter implements Reporter {
  readonly name: string;
  private readonly stream: NodeJS.WritableStream | undefined;
  /** We opened it (path, or an fd other than 1/2): close() ends it. */
  private readonly owned: boolean;
  private readonly closesFd: boolean;
  private readonly warn: Warn;
  private broken = false;

  constructor(cfg: ReporterConfigOf<'json'>, opts: JsonReporterOptions) {
    this.warn = opts.warn;
    if (cfg.path !== undefined) {
      this.name = `json(${cfg.path})`;
      this.owned = true;
      this.closesFd = true;
      const dir = dirname(cfg.path);
      if (!existsSync(dir)) {
        this.warn(`${this.name}: directory ${dir} does not exist; create it or change reporters[].path. No events are written there.`);
        this.stream = undefined;
        return;
      }
      this.stream = createWriteStream(cfg.path, { flags: 'a', mode: 0o644 });
    } else {
      const fd = cfg.fd ?? 1;
      this.name = `json(fd ${fd})`;
      this.closesFd = false;
      if (fd === 1 || fd === 2) {
        this.owned = false;
        this.stream = fd === 1 ? (opts.stdout ?? process.stdout) : process.stderr;
      } else {
        this.owned = true;
        // The fd was handed to us (e.g. by a parent process): flush it at the end, leave it open.
        this.stream = createWriteStream('', { fd, autoClose: false });
      }
    }
    this.stream.on('error', (err: Error) => {
      if (this.broken) return;
      this.broken = true;
      const code = (err as NodeJS.ErrnoException).code;
      this.warn(`${this.name}: cannot write events (${code ?? err.message})${code === 'EACCES' ? '; check the permissions' : ''}; json output stops`);
    });
  }

  handle(event: BootlineEvent): void | Promise<void> {
    if (!this.stream || this.broken) return;
    if (!this.stream.write(toJsonLine(event))) {
      // Let the dispatcher see the back-pressure, but never wait forever on a stuck reader.
      return waitFor(this.stream, ['drain', 'error', 'close'], DRAIN_WAIT_MS);
    }
  }

  async close(deadline: number): Promise<void> {
    const stream = this.stream;
    if (!stream) return;
    const left = deadline - Date.now();
    if (!this.owned) {
      if ((stream as { writableNeedDrain?: boolean }).writableNeedDrain) await waitFor(stream, ['drain', 'error', 'close'], left);
      return;
    }
    if (this.broken) return;
    const done = waitFor(stream, this.closesFd ? ['close', 'error'] : ['finish', 'error'], left);
    stream.end();
    await done;
  }
}
