// The console reporter: plain lines for serial logs and pipes, or a block redrawn in
// place on a terminal. Formatting is pure (tested directly); the reporter class only
// decides when to write and where.
import { closeSync, constants, openSync, writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { BootlineEvent, RunEndEvent, RunStartEvent, RunStatus, TaskProgressEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import type { Reporter, Warn } from './reporter.ts';
import { formatBytes, formatDuration } from '../../format.ts';

// ---------------------------------------------------------------------------------
// Pure formatting


/** "512.0 MiB / 2.0 GiB, 85.3 MiB/s", with whichever parts are known. */
export function formatTransfer(p: { bytesDone?: number; bytesTotal?: number; rate?: number }): string {
  const parts: string[] = [];
  if (p.bytesDone !== undefined) {
    parts.push(p.bytesTotal !== undefined ? `${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}` : formatBytes(p.bytesDone));
  }
  if (p.rate !== undefined) parts.push(`${formatBytes(p.rate)}/s`);
  return parts.join(', ');
}

const pct = (n: number) => Math.floor(Math.max(0, Math.min(100, n)));

function lines(text: string): string[] {
  return text.replace(/\r?\n$/, '').split(/\r?\n/);
}

function renderRunStart(e: RunStartEvent): string[] {
  const out = [`Found ${e.count} tasks to execute`];
  const resumed = new Set(e.resumed);
  e.tasks.forEach((t, i) => {
    const note = resumed.has(t.name) ? ' (already done)' : '';
    out.push(`  ${i + 1}. ${t.name} [${t.kind}, ${Math.round(t.share)}%]${note}`);
  });
  return out;
}

function renderRunEnd(e: RunEndEvent): string[] {
  const took = formatDuration(e.durationMs);
  if (e.status === 'ok') return [`All tasks completed! (${took})`];
  const tasks = e.report.tasks;
  const failed = tasks.find((t) => t.status === 'failed' && !t.optional) ?? tasks.find((t) => t.status === 'failed');
  const what = e.status === 'aborted' ? 'Run aborted' : 'Run failed';
  const out: string[] = [];
  if (failed) {
    const why = failed.message ?? e.message;
    out.push(`${what} after ${took}: task ${failed.name} failed${why ? `: ${why}` : ''}`);
    for (const l of failed.lastLines) out.push(`  | ${l}`);
  } else {
    out.push(`${what} after ${took}${e.message ? `: ${e.message}` : ''}`);
  }
  const notRun = tasks.filter((t) => t.status === 'not-run').map((t) => t.name);
  if (notRun.length > 0) out.push(`Not run: ${notRun.join(', ')}`);
  return out;
}

function renderProgress(e: TaskProgressEvent): string {
  const transfer = formatTransfer(e);
  let s = `  ${e.task}: ${pct(e.taskProgress)}%`;
  if (e.message) s += ` ${e.message}`;
  if (transfer) s += ` (${transfer})`;
  return s;
}

/** The plain (serial-log friendly) lines for one event; [] when it prints nothing. */
export function renderPlain(e: BootlineEvent): string[] {
  switch (e.type) {
    case 'run-start':
      return renderRunStart(e);
    case 'task-start':
      return [
        `Task ${e.index + 1}/${e.count} - ${pct(e.progress)}%`,
        `Handling task ${e.task}${e.attempt > 1 ? ` (attempt ${e.attempt})` : ''}`,
      ];
    case 'task-progress':
      return [renderProgress(e)];
    case 'task-end':
      if (e.status === 'ok') return [`${e.task} executed successfully (${formatDuration(e.durationMs)})`];
      if (e.status === 'skipped') return [`${e.task} skipped${e.message ? ` (${e.message})` : ''}`];
      return [
        `${e.task} failed${e.optional ? ' (optional, continuing)' : ''}: ${
          e.message ?? (e.exitCode != null ? `exit code ${e.exitCode}` : 'no reason given')
        }`,
      ];
    case 'run-end':
      return renderRunEnd(e);
    case 'log':
      // Script output is indented so it stands apart from the agent's own lines.
      if (e.stream === 'stdout' || e.stream === 'stderr') return lines(e.message).map((l) => `  | ${l}`);
      if (e.level === 'debug') return [];
      if (e.level === 'warn') return lines(e.message).map((l) => `warning: ${l}`);
      if (e.level === 'error') return lines(e.message).map((l) => `error: ${l}`);
      return lines(e.message);
  }
}

export interface PrintedProgress {
  task: string;
  percent: number;
  message?: string;
}

/** Progress lines in a serial log are kept readable: a new line only every 10% or on a new message. */
export function shouldPrintProgress(last: PrintedProgress | undefined, e: TaskProgressEvent): boolean {
  if (!last || last.task !== e.task) return true;
  if ((e.message ?? '') !== (last.message ?? '')) return true;
  return Math.abs(pct(e.taskProgress) - last.percent) >= 10;
}

export type TaskMark = 'pending' | 'running' | 'ok' | 'failed' | 'skipped';

export interface TtyState {
  tasks: { name: string; status: TaskMark; durationMs?: number }[];
  progress: number;
  /** Progress when this run (or resumed run) began, so the ETA counts only work done now. */
  startProgress: number;
  /** When the first event (or run-start) was received, in the caller's clock (ms). */
  startedAt?: number;
  current?: {
    task: string;
    index: number;
    count: number;
    taskProgress: number;
    message?: string;
    bytesDone?: number;
    bytesTotal?: number;
    rate?: number;
  };
  end?: { status: RunStatus; durationMs: number };
}

export function initialTtyState(): TtyState {
  return { tasks: [], progress: 0, startProgress: 0 };
}

/**
 * Folds one event into the state (mutates and returns it); no I/O. `now` is when the
 * event was received, on a monotonic clock: a device without an RTC may get its wall
 * clock set by NTP in the middle of a run, which would wreck elapsed time and ETA.
 */
export function applyTtyEvent(state: TtyState, e: BootlineEvent, now: number): TtyState {
  state.progress = Math.max(state.progress, e.progress);
  if (state.startedAt === undefined) {
    state.startedAt = now;
    state.startProgress = e.progress;
  }
  const slot = (index: number, name: string, count: number) => {
    // A reporter may join after run-start: grow the list from what task events say.
    while (state.tasks.length < count) state.tasks.push({ name: '?', status: 'pending' });
    const t = state.tasks[index] ?? (state.tasks[index] = { name, status: 'pending' });
    t.name = name;
    return t;
  };
  switch (e.type) {
    case 'run-start': {
      const resumed = new Set(e.resumed);
      state.tasks = e.tasks.map((t) => ({ name: t.name, status: resumed.has(t.name) ? 'ok' : 'pending' }));
      state.startedAt = now;
      state.startProgress = e.progress;
      state.progress = e.progress;
      state.current = undefined;
      state.end = undefined;
      break;
    }
    case 'task-start':
      slot(e.index, e.task, e.count).status = 'running';
      state.current = { task: e.task, index: e.index, count: e.count, taskProgress: e.taskProgress };
      break;
    case 'task-progress': {
      slot(e.index, e.task, e.count).status = 'running';
      const { task, index, count, taskProgress, message, bytesDone, bytesTotal, rate } = e;
      state.current = { task, index, count, taskProgress, message, bytesDone, bytesTotal, rate };
      break;
    }
    case 'task-end': {
      const t = slot(e.index, e.task, e.count);
      t.status = e.status;
      t.durationMs = e.durationMs;
      if (state.current?.index === e.index) state.current = undefined;
      break;
    }
    case 'run-end':
      state.end = { status: e.status, durationMs: e.durationMs };
      state.current = undefined;
      break;
    case 'log':
      break;
  }
  return state;
}

const MARKS: Record<TaskMark, string> = { ok: '✓', failed: '✗', skipped: '-', running: '▶', pending: '·' };
const BAR_WIDTH = 30;
const MAX_TASK_ROWS = 10;

export function progressBar(percent: number, width = BAR_WIDTH): string {
  const filled = Math.round((pct(percent) / 100) * width);
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
}

/** ETA from the overall rate since start; undefined until it means something. */
export function estimateEta(state: TtyState, now: number): number | undefined {
  if (state.startedAt === undefined || state.end) return undefined;
  const elapsed = now - state.startedAt;
  const done = state.progress - state.startProgress;
  if (state.progress <= 2 || done <= 0 || elapsed < 3000) return undefined;
  return (elapsed * (100 - state.progress)) / done;
}

function fit(line: string, width: number): string {
  // A line that wraps would break the cursor-up redraw, so cut it.
  const max = Math.max(10, width - 1);
  const chars = Array.from(line);
  return chars.length <= max ? line : `${chars.slice(0, max - 1).join('')}…`;
}

/** The block shown on a terminal; each string is one screen line. */
export function renderTty(state: TtyState, now: number, width = 80): string[] {
  const out: string[] = [];
  const count = state.tasks.length;
  const finished = state.tasks.filter((t) => t.status !== 'pending' && t.status !== 'running').length;
  const elapsed = state.end ? state.end.durationMs : state.startedAt === undefined ? 0 : now - state.startedAt;
  const eta = estimateEta(state, now);
  out.push(
    `bootline: ${finished}/${count} tasks, elapsed ${formatDuration(elapsed)}${eta === undefined ? '' : `, ETA ${formatDuration(eta)}`}`,
  );

  // Long plans get a window around the running task so the block stays on screen.
  let from = 0;
  let to = count;
  if (count > MAX_TASK_ROWS) {
    const focus = state.current?.index ?? Math.max(0, state.tasks.findIndex((t) => t.status === 'pending' || t.status === 'running'));
    from = Math.max(0, Math.min(focus - 3, count - MAX_TASK_ROWS));
    to = from + MAX_TASK_ROWS;
  }
  if (from > 0) out.push(`  … ${from} earlier`);
  const nameWidth = Math.min(32, Math.max(0, ...state.tasks.map((t) => t.name.length)));
  for (let i = from; i < to; i++) {
    const t = state.tasks[i];
    if (!t) continue;
    let line = `  ${MARKS[t.status]} ${t.name.padEnd(nameWidth)}`;
    if (t.status === 'running' && state.current?.index === i) line += `  ${pct(state.current.taskProgress)}%`;
    else if (t.durationMs !== undefined && t.status !== 'skipped') line += `  ${formatDuration(t.durationMs)}`;
    out.push(line.trimEnd());
  }
  if (to < count) out.push(`  … ${count - to} more`);

  out.push(`${progressBar(state.progress)} ${String(pct(state.progress)).padStart(3)}%`);
  if (state.current) {
    const c = state.current;
    let line = `${MARKS.running} ${c.task} ${pct(c.taskProgress)}%`;
    if (c.message) line += `  ${c.message}`;
    const transfer = formatTransfer(c);
    if (transfer) line += `  ${transfer}`;
    out.push(line);
  }
  // At the end the summary line is printed below the block (see handleTty), not in it.
  return out.map((l) => fit(l, width));
}

// ---------------------------------------------------------------------------------
// I/O

const CLEAR_LINE_UP = '\x1b[1A\x1b[2K';

interface Sink {
  write(text: string): void;
  close(): void;
}

/**
 * An extra console opened without blocking and without becoming our controlling
 * terminal: a serial line with flow control held off must never stall the agent, so
 * output that does not fit is dropped. No O_CREAT: a missing /dev node is an error,
 * not a reason to create a file in /dev.
 */
function openTty(path: string, warn: Warn): Sink | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_NOCTTY | constants.O_NONBLOCK);
  } catch (err) {
    warn(`console: cannot open ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)}); not mirroring the console there`);
    return undefined;
  }
  let broken = false;
  return {
    write(text) {
      if (broken) return;
      let buf = Buffer.from(text);
      try {
        while (buf.length > 0) {
          const n = writeSync(fd, buf);
          buf = buf.subarray(n);
        }
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return;
        broken = true;
        warn(`console: writing to ${path} failed (${code ?? String(err)}); not mirroring the console there any more`);
      }
    },
    close() {
      try {
        closeSync(fd);
      } catch {
        // already gone
      }
    },
  };
}

function streamSink(stream: NodeJS.WritableStream, warn: Warn): Sink {
  let broken = false;
  // Without a listener an EPIPE on stdout would be an uncaught exception.
  stream.on('error', (err: Error) => {
    if (broken) return;
    broken = true;
    warn(`console: output failed (${(err as NodeJS.ErrnoException).code ?? err.message}); console output stops`);
  });
  return {
    write(text) {
      if (!broken) stream.write(text);
    },
    close() {},
  };
}

export interface ConsoleReporterOptions {
  warn: Warn;
  stdout?: NodeJS.WritableStream;
  isTTY?: boolean;
  /** Minimum ms between progress redraws (default 100). */
  minRedrawMs?: number;
  /** Redraw period that keeps the elapsed time moving while a task is silent (default 1000; 0 disables). */
  tickMs?: number;
  /** Monotonic ms clock (default performance.now). */
  now?: () => number;
}

export class ConsoleReporter implements Reporter {
  readonly name = 'console';
  readonly mode: 'tty' | 'plain';
  private readonly sinks: Sink[] = [];
  private readonly now: () => number;
  private readonly minRedrawMs: number;
  private readonly tickMs: number;
  private readonly width: () => number;
  private lastProgress: PrintedProgress | undefined;
  private readonly state = initialTtyState();
  private drawn = 0;
  private lastDraw = 0;
  private pending: NodeJS.Timeout | undefined;
  private ticker: NodeJS.Timeout | undefined;

  constructor(cfg: ReporterConfigOf<'console'>, opts: ConsoleReporterOptions) {
    const stdout = opts.stdout ?? process.stdout;
    const isTTY = opts.isTTY ?? (stdout as { isTTY?: boolean }).isTTY === true;
    const mode = cfg.mode ?? 'auto';
    this.mode = mode === 'auto' ? (isTTY ? 'tty' : 'plain') : mode;
    this.now = opts.now ?? (() => performance.now());
    this.minRedrawMs = opts.minRedrawMs ?? 100;
    this.tickMs = opts.tickMs ?? 1000;
    // A serial console or a pty without a size reports 0 columns: assume 80.
    this.width = () => (stdout as { columns?: number }).columns || 80;
    this.sinks.push(streamSink(stdout, opts.warn));
    for (const path of cfg.ttys ?? []) {
      const sink = openTty(path, opts.warn);
      if (sink) this.sinks.push(sink);
    }
  }

  handle(event: BootlineEvent): void {
    if (this.mode === 'plain') this.handlePlain(event);
    else this.handleTty(event);
  }

  async close(_deadline?: number): Promise<void> {
    this.stopTimers();
    if (this.mode === 'tty' && this.drawn > 0 && !this.state.end) this.redraw();
    for (const s of this.sinks) s.close();
    this.sinks.length = 0;
  }

  private write(text: string): void {
    if (text) for (const s of this.sinks) s.write(text);
  }

  private handlePlain(e: BootlineEvent): void {
    if (e.type === 'task-progress') {
      if (!shouldPrintProgress(this.lastProgress, e)) return;
      this.lastProgress = { task: e.task, percent: pct(e.taskProgress), message: e.message };
    } else if (e.type === 'task-start' || e.type === 'task-end') {
      this.lastProgress = undefined;
    }
    const out = renderPlain(e);
    if (out.length > 0) this.write(out.map((l) => `${l}\n`).join(''));
  }

  private handleTty(e: BootlineEvent): void {
    applyTtyEvent(this.state, e, this.now());
    if (e.type === 'log') {
      // Log lines scroll above the block: clear it, print, draw it again below.
      const out = renderPlain(e);
      if (out.length > 0) this.redraw(out);
      return;
    }
    if (e.type === 'run-start' && this.tickMs > 0 && !this.ticker) {
      this.ticker = setInterval(() => this.redraw(), this.tickMs);
      this.ticker.unref();
    }
    if (e.type === 'task-progress') {
      this.throttledRedraw();
      return;
    }
    if (e.type === 'run-end') {
      this.stopTimers();
      this.redraw();
      // The final block stays on screen; the summary goes below it for good.
      this.write(renderPlain(e).map((l) => `${l}\n`).join(''));
      this.drawn = 0;
      return;
    }
    this.redraw();
  }

  private throttledRedraw(): void {
    const wait = this.lastDraw + this.minRedrawMs - this.now();
    if (wait <= 0) {
      this.redraw();
    } else if (!this.pending) {
      this.pending = setTimeout(() => this.redraw(), wait);
      this.pending.unref();
    }
  }

  private redraw(above: string[] = []): void {
    if (this.pending) clearTimeout(this.pending);
    this.pending = undefined;
    this.lastDraw = this.now();
    const block = renderTty(this.state, this.lastDraw, this.width());
    let text = CLEAR_LINE_UP.repeat(this.drawn) + '\r';
    for (const l of above) text += `${l}\n`;
    for (const l of block) text += `${l}\n`;
    this.drawn = block.length;
    this.write(text);
  }

  private stopTimers(): void {
    if (this.pending) clearTimeout(this.pending);
    if (this.ticker) clearInterval(this.ticker);
    this.pending = undefined;
    this.ticker = undefined;
  }
}
