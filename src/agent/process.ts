// Runs a child in its own process group, so that a timeout or a stop kills everything
// it started (a script's own children included), and hands its output over line by line.
import { spawn } from 'node:child_process';

export interface RunProcessOptions {
  file: string;
  args: readonly string[];
  cwd?: string;
  env: NodeJS.ProcessEnv;
  /** Kill the group after this many ms. */
  timeoutMs?: number;
  /** Kill the group when aborted. */
  signal?: AbortSignal;
  /** Time between SIGTERM and SIGKILL. */
  graceMs?: number;
  /** Longest line handed to onLine; longer ones are cut. */
  maxLine?: number;
  onLine?: (stream: 'stdout' | 'stderr', line: string) => void;
  /** Written to the child's stdin, which is then closed. */
  input?: string;
}

export interface ProcessResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  aborted: boolean;
  /** Set when the program could not be started at all (ENOENT, EACCES...). */
  spawnError?: NodeJS.ErrnoException;
}

export function runProcess(o: RunProcessOptions): Promise<ProcessResult> {
  return new Promise((resolve) => {
    let timedOut = false;
    let aborted = false;
    let settled = false;
    const child = spawn(o.file, o.args, {
      cwd: o.cwd,
      env: o.env,
      detached: true,
      stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (o.input !== undefined && child.stdin) {
      child.stdin.on('error', () => {}); // the child need not read its input
      child.stdin.end(o.input);
    }
    const timers: NodeJS.Timeout[] = [];
    const killGroup = () => {
      signalGroup(child.pid, 'SIGTERM');
      const t = setTimeout(() => signalGroup(child.pid, 'SIGKILL'), o.graceMs ?? 5000);
      t.unref();
      timers.push(t);
    };
    if (o.timeoutMs !== undefined) {
      timers.push(
        setTimeout(() => {
          timedOut = true;
          killGroup();
        }, o.timeoutMs),
      );
    }
    const onAbort = () => {
      aborted = true;
      killGroup();
    };
    if (o.signal?.aborted) onAbort();
    else o.signal?.addEventListener('abort', onAbort, { once: true });

    const splitters = (['stdout', 'stderr'] as const).map((name) => {
      const split = new LineSplitter(o.maxLine ?? 4000, (line) => o.onLine?.(name, line));
      child[name]?.setEncoding('utf8');
      child[name]?.on('data', (d: string) => split.push(d));
      return split;
    });

    const finish = (r: ProcessResult) => {
      if (settled) return;
      settled = true;
      for (const t of timers) clearTimeout(t);
      o.signal?.removeEventListener('abort', onAbort);
      for (const s of splitters) s.end();
      resolve(r);
    };
    child.on('error', (e: NodeJS.ErrnoException) => finish({ exitCode: null, signal: null, timedOut, aborted, spawnError: e }));
    child.on('exit', (code, sig) => {
      // A background grandchild may hold stdout open: wait briefly for the pipes, then go on.
      const result = { exitCode: code, signal: sig, timedOut, aborted };
      const t = setTimeout(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
        finish(result);
      }, 2000);
      child.on('close', () => {
        clearTimeout(t);
        finish(result);
      });
    });
  });
}

function signalGroup(pid: number | undefined, sig: NodeJS.Signals) {
  if (pid === undefined) return;
  try {
    process.kill(-pid, sig);
  } catch {
    // already gone
  }
}

/** Splits text into lines on \n, \r\n or a lone \r (progress output), cutting long lines. */
export class LineSplitter {
  private buf = '';
  constructor(
    private readonly max: number,
    private readonly emit: (line: string) => void,
  ) {}
  push(chunk: string): void {
    this.buf += chunk;
    const parts = this.buf.split(/\r\n|\n|\r/);
    this.buf = parts.pop() ?? '';
    for (const p of parts) this.emit(this.cut(p));
    if (this.buf.length > this.max) {
      this.emit(this.cut(this.buf));
      this.buf = '';
    }
  }
  end(): void {
    if (this.buf !== '') this.emit(this.cut(this.buf));
    this.buf = '';
  }
  private cut(line: string): string {
    return line.length > this.max ? `${line.slice(0, this.max)}…` : line;
  }
}

/** "exit status 3", "killed by SIGKILL", "timed out after 600 s"... */
export function describeResult(r: ProcessResult, timeoutS?: number): string {
  if (r.spawnError) return `could not start: ${r.spawnError.code === 'ENOENT' ? 'not found' : r.spawnError.message}`;
  if (r.timedOut) return `timed out after ${timeoutS ?? '?'} s (process group killed)`;
  if (r.aborted) return 'stopped';
  if (r.signal) return `killed by ${r.signal}`;
  return `exit status ${r.exitCode}`;
}
