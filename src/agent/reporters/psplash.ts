// The psplash reporter: drives the boot splash's progress bar and message line through
// its FIFO. psplash may start after us, exit, or be absent altogether, so every write
// is non-blocking and best effort, and the splash is brought up to date whenever it
// (re)appears.
//
// Wire format (psplash-write.c / psplash.c): each command is sent as one write of the
// string *including its terminating NUL*; psplash reads until a NUL and parses
// "PROGRESS <n>" or "MSG <text>". Old psplash versions parse only the first command of
// one read, so each command gets its own write (atomic below PIPE_BUF).
import { closeSync, constants, fstatSync, openSync, statSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { BootlineEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import type { Reporter, Warn } from './reporter.ts';

export interface SplashState {
  percent?: number;
  msg?: string;
}

/** psplash's command buffer is 2 KiB; keep well below it and below PIPE_BUF. */
const MAX_MSG = 200;

/** The splash content after `event`: overall percent, and the message line. */
export function splashTarget(event: BootlineEvent, prev: SplashState): SplashState {
  const percent = Math.floor(Math.max(0, Math.min(100, event.progress)));
  let msg = prev.msg;
  if (event.type === 'task-start') msg = event.task;
  else if (event.type === 'task-end' && event.status === 'failed') msg = `${event.task} failed`;
  else if (event.type === 'run-end') msg = event.status === 'ok' ? 'Done' : 'Failed';
  return { percent, msg };
}

/** Commands that bring the splash from `sent` to `target`, message first. */
export function splashCommands(sent: SplashState, target: SplashState): string[] {
  const out: string[] = [];
  if (target.msg !== undefined && target.msg !== sent.msg) out.push(`MSG ${target.msg}`);
  if (target.percent !== undefined && target.percent !== sent.percent) out.push(`PROGRESS ${target.percent}`);
  return out;
}

/** One command on the wire: control characters (NUL above all) would split or garble it. */
export function encodeCommand(command: string): Buffer {
  // eslint-disable-next-line no-control-regex
  const clean = command.replace(/[\x00-\x1f\x7f]+/g, ' ');
  const chars = Array.from(clean);
  const text = chars.length > MAX_MSG ? `${chars.slice(0, MAX_MSG - 1).join('')}…` : clean;
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.from([0])]);
}

export interface PsplashReporterOptions {
  warn: Warn;
  /** Least ms between attempts to open the FIFO while psplash is not there (default 1000). */
  reopenMs?: number;
  /** Monotonic ms clock (default performance.now), so a clock set by NTP cannot stall retries. */
  now?: () => number;
}

export class PsplashReporter implements Reporter {
  readonly name: string;
  private readonly fifo: string;
  private readonly warn: Warn;
  private readonly reopenMs: number;
  private readonly now: () => number;
  private fd: number | undefined;
  private lastOpenAttempt = -Infinity;
  private warnedNotFifo = false;
  private target: SplashState = {};
  /** What psplash has been told since the FIFO was last opened. */
  private sent: SplashState = {};

  constructor(cfg: ReporterConfigOf<'psplash'>, opts: PsplashReporterOptions) {
    this.fifo = cfg.fifo ?? '/run/psplash_fifo';
    this.name = `psplash(${this.fifo})`;
    this.warn = opts.warn;
    this.reopenMs = opts.reopenMs ?? 1000;
    this.now = opts.now ?? (() => performance.now());
  }

  handle(event: BootlineEvent): void {
    this.target = splashTarget(event, this.target);
    if (this.fd === undefined && !this.open()) return;
    for (const command of splashCommands(this.sent, this.target)) {
      if (!this.send(command)) return;
    }
  }

  async close(_deadline?: number): Promise<void> {
    this.disconnect();
  }

  private open(): boolean {
    const now = this.now();
    if (now - this.lastOpenAttempt < this.reopenMs) return false;
    this.lastOpenAttempt = now;
    try {
      // Checked before opening: a regular file would happily take our commands forever.
      if (!statSync(this.fifo).isFIFO()) {
        this.notFifo();
        return false;
      }
      const fd = openSync(this.fifo, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
      if (!fstatSync(fd).isFIFO()) {
        closeSync(fd);
        this.notFifo();
        return false;
      }
      this.fd = fd;
      // A fresh reader knows nothing of what an earlier one was told.
      this.sent = {};
      return true;
    } catch {
      // ENOENT (psplash not started), ENXIO (no reader yet) and the like: try again later.
      return false;
    }
  }

  private notFifo(): void {
    if (this.warnedNotFifo) return;
    this.warnedNotFifo = true;
    this.warn(`${this.name}: ${this.fifo} is not a FIFO; is psplash using another path (PSPLASH_FIFO_DIR)? Not writing to it.`);
  }

  private send(command: string): boolean {
    if (this.fd === undefined) return false;
    try {
      writeSync(this.fd, encodeCommand(command));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // EAGAIN: psplash is not reading; drop this command, the next event resends the state.
      if (code !== 'EAGAIN') this.disconnect(); // EPIPE: psplash went away
      return false;
    }
    if (command.startsWith('MSG ')) this.sent.msg = this.target.msg;
    else this.sent.percent = this.target.percent;
    return true;
  }

  private disconnect(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // nothing left to release
    }
    this.fd = undefined;
  }
}
