// Decompressors as Duplex streams (compressed in, image bytes out): the
// fastest correct choice per format on the target machine. External tools run
// as child processes, which also puts decompression on another core.
//
// gzip was measured (node 20, 2 cores, a 320 MiB ext4 image holding 224 MiB of
// real files, 95 MiB as gzip -6; best of 3, counting the bytes in node):
//   node zlib createGunzip, 256 KiB chunks   0.49 s  (680 MB/s of output)
//   node zlib createGunzip, default 16 KiB   0.62 s  (540 MB/s)
//   pigz -dc (child process, piped)          0.99 s  (340 MB/s)
//   gzip -dc (child process, piped)          1.56 s  (215 MB/s)
// so gzip stayed in-process: zlib inflates in the libuv threadpool, off the
// main thread, and saves the pipe copies a child process costs.
// igzip (Debian package isal; Intel's ISA-L) is faster than all of these. The benchmark's 2 GiB
// image as gzip -6, page cache warm, to /dev/null: igzip -dc 3.0-3.4 s, pigz -dc 6.8-7.2 s,
// gzip -dc 13-14 s; through bootline's zlib stream alone 4.7 s. Copied onto a loop device,
// 7.4-7.5 s against 10.0-10.2 s with zlib, and node's peak RSS 83 MB against 115 MB. So an image
// goes through igzip when it is installed and the image's trailer allows it (gzip-trailer.ts).
import { spawn, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import { resolve } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import type { Readable, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Compression } from '../types.ts';
import { onPath } from '../../which.ts';
import { withOutputBuffer } from './output-buffer.ts';
import { toolOutput, type SegmentOptions, type Segments } from './tool-output.ts';

export { detectCompression, DETECT_HEAD_BYTES } from './detect.ts';

export interface Decompressor {
  /** Write compressed bytes, read image bytes; errors name the tool and what it said. */
  stream: Duplex;
  /** What runs, for logs: "zstd -dc -q", "node zlib gunzip". */
  describe: string;
}

/** Bigger than the 16 KiB default: fewer hops per MiB, still a small bounded amount of memory. */
const HIGH_WATER = 1024 * 1024;
/** Output chunk of zlib: 256 KiB measured fastest (see above). */
const ZLIB_CHUNK = 256 * 1024;
/** What is kept of a tool's stderr for the error message. */
const STDERR_MAX = 4096;

interface Tool {
  /** Candidates, fastest first. */
  commands: { cmd: string; args: string[] }[];
  /** The Debian package that provides the first (preferred) candidate that is always acceptable. */
  pkg: string;
}

// -q: progress/info lines on stderr would otherwise read as errors (lz4 prints "decoded N bytes").
const TOOLS: Record<Exclude<Compression, 'none'>, Tool> = {
  // Only where hasGzipTool() and the image's trailer allow it (gzip-trailer.ts); node's zlib otherwise.
  gzip: { commands: [{ cmd: 'igzip', args: ['-dc'] }], pkg: 'isal' },
  zstd: { commands: [{ cmd: 'zstd', args: ['-dc', '-q'] }], pkg: 'zstd' },
  // Only for an .xz image whose block index cannot be read first (stdin, no size, several streams):
  // one with an index is decompressed by xz-lanes.ts, a single-threaded xz per core. -T0 lets xz 5.4
  // decompress blocks in parallel itself, but it holds whole blocks per thread: 141 MB for a -6
  // image on 2 cores, and more per core. The cap keeps it to about 94 MB here, at 12.2 s against
  // 10.5 s unlimited and 20 s on one thread (xz -dc of the benchmark's 2 GiB image).
  xz: { commands: [{ cmd: 'xz', args: ['-dc', '-T0', '--memlimit-mt=80MiB'] }], pkg: 'xz-utils' },
  // lbzip2 and pbzip2 decompress on every core; bzip2 itself on one.
  bzip2: {
    commands: [
      { cmd: 'lbzip2', args: ['-dc'] },
      { cmd: 'pbzip2', args: ['-dc'] },
      { cmd: 'bzip2', args: ['-dc'] },
    ],
    pkg: 'bzip2 (or lbzip2, faster)',
  },
  lz4: { commands: [{ cmd: 'lz4', args: ['-dc', '-q'] }], pkg: 'lz4' },
};


/** Formats always decompressed by a program, which can be given a local file to read itself (toolChunks). */
export function readsFileItself(kind: Compression): kind is Exclude<Compression, 'none' | 'gzip'> {
  return kind !== 'none' && kind !== 'gzip';
}

/** Whether igzip is installed: gzip is decompressed by it where the image allows (gzip-trailer.ts). */
export function hasGzipTool(): boolean {
  return onPath('igzip') !== undefined;
}

/**
 * A decompressor for `kind`. Throws at once (before anything is written) when
 * the needed program is missing, naming the Debian package that provides it.
 */
export function decompressor(kind: Compression, opts: { reusedInput?: boolean; gzipTool?: boolean } = {}): Decompressor {
  if (kind === 'none') return { stream: new PassThrough({ highWaterMark: HIGH_WATER }), describe: 'none (raw image)' };
  if (kind === 'gzip' && !opts.gzipTool) return { stream: gunzipStream(opts.reusedInput ?? false), describe: 'node zlib gunzip' };
  const { name, path, args } = findTool(kind);
  return { stream: processStream(name, path, args), describe: `${name} ${args.join(' ')}` };
}

/**
 * Joins a writable input and a readable output into one Duplex with
 * backpressure both ways. The readable side ends only when the owner calls
 * `complete()` as well, so that a failure noticed after the last output byte
 * (a tool's exit status, trailing garbage) still fails the stream instead of
 * arriving after the consumer has declared success.
 */
class Bridge extends Duplex {
  private outputEnded = false;
  private completed = false;
  /** A write waiting for the input to drain. */
  private pending: (() => void) | undefined;
  /** Input no longer accepts data (tool exited, zlib ended): later writes are dropped, `dropped` says so. */
  inputGone = false;
  dropped = false;

  constructor(
    private readonly input: Writable,
    private readonly output: Readable,
    private readonly stop: () => void,
    /** Writes' buffers are reused by the writer: a write completes only once the input has taken it. */
    private readonly reusedInput = false,
  ) {
    super({ readableHighWaterMark: HIGH_WATER, writableHighWaterMark: HIGH_WATER });
    output.on('data', (c: Buffer) => {
      if (!this.push(c)) output.pause();
    });
    output.once('end', () => {
      this.outputEnded = true;
      this.maybeEnd();
    });
    const release = () => this.release();
    input.on('drain', release).once('close', release);
  }

  private release(): void {
    const p = this.pending;
    this.pending = undefined;
    p?.();
  }

  /** The owner has seen successful completion (tool exit 0, zlib finished). */
  complete(): void {
    this.completed = true;
    this.inputGone = true;
    this.release();
    this.maybeEnd();
  }

  /** Input closed early (EPIPE): pending and later writes are dropped, and the owner decides. */
  inputClosed(): void {
    this.inputGone = true;
    this.dropped = true; // EPIPE means bytes were written that nobody read
    this.release();
  }

  private maybeEnd(): void {
    if (this.outputEnded && this.completed && !this.destroyed) this.push(null);
  }

  override _read(): void {
    this.output.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.inputGone || this.input.destroyed) {
      this.dropped = true;
      cb();
      return;
    }
    if (this.reusedInput) this.input.write(chunk, () => cb());
    else if (this.input.write(chunk)) cb();
    else this.pending = () => cb();
  }

  override _final(cb: (e?: Error | null) => void): void {
    if (!this.inputGone && !this.input.destroyed) this.input.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (e?: Error | null) => void): void {
    this.release();
    this.stop();
    cb(err);
  }
}

/**
 * gunzip in-process. zlib ends its output at zero padding after the last
 * member (accepted, as gzip(1) does) while input may remain; the bridge keeps
 * feeding that rest, so any non-zero trailing byte still fails the stream.
 */
function gunzipStream(reusedInput: boolean): Duplex {
  const gz = createGunzip({ chunkSize: ZLIB_CHUNK });
  // zlib calls a write back once it has consumed all of that chunk's bytes.
  const bridge = new Bridge(gz, gz, () => gz.destroy(), reusedInput);
  let ended = false;
  let finished = false;
  const check = () => {
    if (ended && finished) bridge.complete();
  };
  gz.once('end', () => {
    ended = true;
    check();
  });
  gz.once('finish', () => {
    finished = true;
    check();
  });
  gz.on('error', (e: NodeJS.ErrnoException) => {
    const what = e.code === 'Z_BUF_ERROR' ? 'the compressed image is truncated' : 'the compressed image is corrupt';
    bridge.destroy(new Error(`gzip: ${e.message} (${e.code ?? 'zlib error'}): ${what}`));
  });
  return bridge;
}

/** Runs `cmd` with stdin <- compressed bytes, stdout -> image bytes; non-zero exit or stderr text fails the stream. */
function processStream(name: string, path: string, args: string[]): Duplex {
  const child = startTool(name, path, args, 'pipe');
  let killedByUs = false;
  const bridge = new Bridge(child.stdin, child.stdout, () => {
    if (child.exitCode === null && child.signalCode === null) {
      killedByUs = true;
      child.kill('SIGKILL');
    }
  });
  const stderr = keepStderr(child);
  child.stdin.on('error', (e: NodeJS.ErrnoException) => {
    // The tool stopped reading (it failed, or found the end early): its exit status tells which.
    if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') bridge.inputClosed();
    else bridge.destroy(new Error(`${name}: writing to its input failed: ${e.message}`));
  });
  child.stdout.on('error', (e) => bridge.destroy(new Error(`${name}: reading its output failed: ${e.message}`)));
  child.once('error', (e: NodeJS.ErrnoException) => bridge.destroy(startError(name, path, e)));
  // 'close': the process has exited and its stdout/stderr are fully read.
  child.once('close', (code, signal) => {
    if (killedByUs || bridge.destroyed) return;
    const err = exitError(name, code, signal, stderr());
    if (err) bridge.destroy(err);
    else if (bridge.dropped) bridge.destroy(new Error(`${name} exited before reading all of the compressed image: trailing data was not decompressed`));
    else bridge.complete();
  });
  return bridge;
}

/**
 * The image bytes of the program for `kind`, given either a local file to read itself or the
 * compressed bytes to feed its stdin. Its output goes to a unix socket that node reads into two
 * reused segments (tool-output.ts) instead of a pipe stream, which allocates 64 KiB per read: at
 * GiB/s that external memory made V8 run a full GC every few tens of MiB. Each chunk is valid
 * until the next is asked for. `chunks` ends only after the program exited cleanly having read
 * all of its input; stopping early (return, or `stop`) kills it. A missing program throws here.
 */
export function toolChunks(
  kind: Exclude<Compression, 'none'>,
  input: string | AsyncIterable<Buffer>,
  opts: {
    /** Instead of the tool's usual arguments. */
    args?: string[];
    /** `input` reuses its buffers: each chunk is written out before the next is asked for. */
    reusedInput?: boolean;
    /** The output buffers: two of 1 MiB by default. */
    segments?: SegmentOptions;
    /** Room asked for in the kernel's socket buffer of the output; output-buffer.ts's 4 MiB unless given, 0 leaves the kernel's. */
    outputBuffer?: number;
    /** Another program for `kind` than the usual one (its name on PATH; `args` are then its arguments). */
    program?: string;
  } = {},
): { chunks: AsyncGenerator<Buffer>; stop(): void } {
  const found = opts.program ? programOnPath(opts.program) : findTool(kind);
  const { name, path } = found;
  const args = opts.args ?? found.args;
  const fromFile = typeof input === 'string';
  let child: ChildProcess | undefined;
  let output: Segments | undefined;
  let failed: Error | undefined;
  let stopped = false;
  const fail = (e: Error) => {
    failed ??= e;
    output?.destroy(e);
  };
  const stop = () => {
    stopped = true;
    output?.destroy(new Error('stopped'));
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  // Feeds stdin with backpressure. EPIPE: the program stopped reading (it failed, or its data
  // ended before the input did): its exit status tells which.
  let dropped = false;
  async function feed(stdin: Writable, src: AsyncIterable<Buffer>): Promise<void> {
    let gone = false;
    stdin.on('error', (e: NodeJS.ErrnoException) => {
      gone = true;
      if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') dropped = true;
      else fail(new Error(`${name}: writing to its input failed: ${e.message}`));
    });
    try {
      for await (const c of src) {
        if (stopped) return;
        if (gone) {
          dropped = true;
          return;
        }
        if (opts.reusedInput) await new Promise<void>((r) => stdin.write(c, () => r()));
        else if (!stdin.write(c)) await drainedOrClosed(stdin);
      }
      stdin.end();
    } catch (e) {
      fail(e as Error);
      stop();
    }
  }
  async function start() {
    const { writeEnd, reader } = await toolOutput(opts.segments);
    output = reader;
    if (stopped) {
      writeEnd.destroy();
      reader.destroy(new Error('stopped'));
      throw new Error('stopped');
    }
    let c: ChildProcess;
    try {
      // An absolute path cannot be taken for an option, whatever the file is called.
      const run = withOutputBuffer(path, name, fromFile ? [...args, resolve(input)] : args, opts.outputBuffer);
      c = spawn(run.file, run.args, { stdio: [fromFile ? 'ignore' : 'pipe', writeEnd, 'pipe'], argv0: run.argv0 });
    } finally {
      // The child has its own copy.
      writeEnd.destroy();
    }
    child = c;
    const stderr = keepStderr(c as { stderr: Readable });
    const closed = new Promise<[number | null, NodeJS.Signals | null]>((r) => c.once('close', (code, signal) => r([code, signal])));
    c.once('error', (e: NodeJS.ErrnoException) => fail(startError(name, path, e)));
    const fed = fromFile ? Promise.resolve() : feed(c.stdin as Writable, input);
    return { reader, stderr, closed, fed };
  }
  const started = start();
  // Stopped before anyone asked for a chunk: nobody else awaits `started`.
  started.catch(() => undefined);

  async function* chunks(): AsyncGenerator<Buffer> {
    let ok = false;
    try {
      const { reader, stderr, closed, fed } = await started;
      for (;;) {
        let c: Buffer | undefined;
        try {
          c = await reader.next();
        } catch (e) {
          if (failed) throw failed;
          throw stopped ? new Error('stopped') : new Error(`${name}: reading its output failed: ${(e as Error).message}`);
        }
        if (!c) break;
        yield c;
      }
      const [code, signal] = await closed;
      // A failed program is reported at once: its input may never be taken again.
      const err = exitError(name, code, signal, stderr());
      if (err) throw failed ?? err;
      await fed;
      if (failed) throw failed;
      if (dropped) throw new Error(`${name} exited before reading all of the compressed image: trailing data was not decompressed`);
      ok = true;
    } finally {
      if (!ok) stop();
      output?.destroy(new Error('stopped'));
    }
  }
  return { chunks: chunks(), stop };
}

/** Waits for `w` to take more, or to close; leaves no listener behind (one is added per full pipe). */
export function drainedOrClosed(w: Writable): Promise<void> {
  // Already gone: 'close' will not come again.
  if (w.destroyed || w.closed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      w.off('drain', done).off('close', done);
      resolve();
    };
    w.on('drain', done).on('close', done);
  });
}

function programOnPath(name: string): { name: string; path: string; args: string[] } {
  const path = onPath(name);
  if (!path) throw new Error(`the program \`${name}\` is not installed`);
  return { name, path, args: [] };
}

function findTool(kind: Exclude<Compression, 'none'>): { name: string; path: string; args: string[] } {
  const tool = TOOLS[kind];
  for (const c of tool.commands) {
    const path = onPath(c.cmd);
    if (path) return { name: c.cmd, path, args: c.args };
  }
  throw new Error(
    `cannot decompress the ${kind} image: the program ${tool.commands.map((c) => `\`${c.cmd}\``).join(' / ')} is not installed; ` +
      `install the Debian package ${tool.pkg} (apt-get install ${tool.pkg.split(' ')[0]})`,
  );
}

function startTool<I extends 'pipe' | 'ignore'>(name: string, path: string, args: string[], stdin: I) {
  // argv0: tools name themselves by it in messages ("xz: (stdin): ..." rather than "/usr/bin/xz: ...").
  return spawn(path, args, { stdio: [stdin, 'pipe', 'pipe'], argv0: name }) as ChildProcessByStdio<I extends 'pipe' ? Writable : null, Readable, Readable>;
}

/** Collects the start of a tool's stderr for error messages. */
function keepStderr(child: { stderr: Readable }): () => string {
  let text = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    if (text.length < STDERR_MAX) text += s;
  });
  return () => text;
}

function startError(name: string, path: string, e: NodeJS.ErrnoException): Error {
  const hint = e.code === 'ENOENT' ? ` (${path} is missing)` : '';
  return new Error(`${name}: could not be started: ${e.message}${hint}`);
}

/** What a failure means, for tools whose own words do not say it ("Error encountered while decompressing file X"). */
const FAILURE_MEANS: Record<string, string> = { igzip: 'the compressed image is corrupt or truncated', '7zz': 'the compressed image is corrupt or truncated' };

/** A decompressor that ended with an error of its own (as opposed to its input or output failing). */
export class ToolExitError extends Error {}

/** What a finished tool's exit says: undefined when it succeeded and said nothing. */
function exitError(name: string, code: number | null, signal: NodeJS.Signals | null, stderr: string): Error | undefined {
  // 7-Zip ends an error about its stdin with " : ~" (its name for it): that says nothing here.
  const said = stderr
    .trim()
    .split('\n')
    .filter(Boolean)
    .slice(-3)
    .map((l) => (name === '7zz' ? l.replace(/ : ~$/, '') : l))
    .join('; ');
  const text = said ? (said.startsWith(`${name}:`) ? said : `${name}: ${said}`) : '';
  if (signal) return new ToolExitError(`${name} was killed by ${signal}${text ? ` (${text})` : ''}`);
  const means = FAILURE_MEANS[name] ? `: ${FAILURE_MEANS[name]}` : '';
  if (code !== 0) return new ToolExitError(text ? `${text} (exit status ${code})${means}` : `${name} failed with exit status ${code}${means}`);
  if (text) return new ToolExitError(text);
  return undefined;
}
