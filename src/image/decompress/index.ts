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
// so gzip stays in-process: zlib inflates in the libuv threadpool, off the
// main thread, and saves the pipe copies a child process costs.
import { spawn } from 'node:child_process';
import { Duplex, PassThrough } from 'node:stream';
import type { Readable, Writable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Compression } from '../types.ts';
import { onPath } from '../../which.ts';

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
const TOOLS: Record<Exclude<Compression, 'none' | 'gzip'>, Tool> = {
  zstd: { commands: [{ cmd: 'zstd', args: ['-dc', '-q'] }], pkg: 'zstd' },
  // -T0: xz 5.4 decompresses multi-block files (xz -T0 output) in parallel.
  xz: { commands: [{ cmd: 'xz', args: ['-dc', '-T0'] }], pkg: 'xz-utils' },
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


/**
 * A decompressor for `kind`. Throws at once (before anything is written) when
 * the needed program is missing, naming the Debian package that provides it.
 */
export function decompressor(kind: Compression): Decompressor {
  if (kind === 'none') return { stream: new PassThrough({ highWaterMark: HIGH_WATER }), describe: 'none (raw image)' };
  if (kind === 'gzip') return { stream: gunzipStream(), describe: 'node zlib gunzip' };
  const tool = TOOLS[kind];
  for (const c of tool.commands) {
    const path = onPath(c.cmd);
    if (path) return { stream: processStream(c.cmd, path, c.args), describe: `${c.cmd} ${c.args.join(' ')}` };
  }
  throw new Error(
    `cannot decompress the ${kind} image: the program ${tool.commands.map((c) => `\`${c.cmd}\``).join(' / ')} is not installed; ` +
      `install the Debian package ${tool.pkg} (apt-get install ${tool.pkg.split(' ')[0]})`,
  );
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
    if (this.input.write(chunk)) cb();
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
function gunzipStream(): Duplex {
  const gz = createGunzip({ chunkSize: ZLIB_CHUNK });
  const bridge = new Bridge(gz, gz, () => gz.destroy());
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
  // argv0: tools name themselves by it in messages ("xz: (stdin): ..." rather than "/usr/bin/xz: ...").
  const child = spawn(path, args, { stdio: ['pipe', 'pipe', 'pipe'], argv0: name });
  let killedByUs = false;
  const bridge = new Bridge(child.stdin, child.stdout, () => {
    if (child.exitCode === null && child.signalCode === null) {
      killedByUs = true;
      child.kill('SIGKILL');
    }
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    if (stderr.length < STDERR_MAX) stderr += s;
  });
  child.stdin.on('error', (e: NodeJS.ErrnoException) => {
    // The tool stopped reading (it failed, or found the end early): its exit status tells which.
    if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') bridge.inputClosed();
    else bridge.destroy(new Error(`${name}: writing to its input failed: ${e.message}`));
  });
  child.stdout.on('error', (e) => bridge.destroy(new Error(`${name}: reading its output failed: ${e.message}`)));
  child.once('error', (e: NodeJS.ErrnoException) => {
    const hint = e.code === 'ENOENT' ? ` (${path} is missing)` : '';
    bridge.destroy(new Error(`${name}: could not be started: ${e.message}${hint}`));
  });
  // 'close': the process has exited and its stdout/stderr are fully read.
  child.once('close', (code, signal) => {
    if (killedByUs || bridge.destroyed) return;
    const said = stderr.trim().split('\n').filter(Boolean).slice(-3).join('; ');
    const text = said ? (said.startsWith(`${name}:`) ? said : `${name}: ${said}`) : '';
    if (signal) bridge.destroy(new Error(`${name} was killed by ${signal}${text ? ` (${text})` : ''}`));
    else if (code !== 0) bridge.destroy(new Error(text ? `${text} (exit status ${code})` : `${name} failed with exit status ${code}`));
    else if (text) bridge.destroy(new Error(text));
    else if (bridge.dropped) bridge.destroy(new Error(`${name} exited before reading all of the compressed image: trailing data was not decompressed`));
    else bridge.complete();
  });
  return bridge;
}
