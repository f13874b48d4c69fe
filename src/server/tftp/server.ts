// A read-only TFTP server (RFC 1350 with RFC 2347/2348/2349 options) over node:dgram, for
// firmware that can only PXE: it serves iPXE binaries (ipxe.efi, undionly.kpxe) from one
// root directory. Packets and negotiation are pure functions (packet.ts, negotiate.ts,
// path.ts); this module is the socket and file I/O.
//
// - Read requests only: a WRQ gets ERROR 2 (access violation).
// - Each transfer runs on its own ephemeral UDP port (its TID). A packet reaching that
//   port from anyone but the client gets ERROR 5 and does not disturb the transfer.
// - Lock-step: one DATA outstanding, retransmitted after the timeout (the client's
//   "timeout" option, or timeoutMs) at most `retries` times, then the transfer is dropped.
// - A duplicate ACK is ignored (no resend: the Sorcerer's Apprentice bug, RFC 1123 4.2.3.1).
// - Block numbers wrap from 65535 to 0, so files of any size can be sent.
// - Files are streamed from disk in 64 KiB reads, never loaded whole.
// - A repeated RRQ from a client whose transfer is already running is ignored (it is a
//   retransmission of the same request; the running transfer answers it).
// - Transfer sockets bind to `host`. On a machine with several addresses, listen on the
//   one the devices use: bound to 0.0.0.0 the kernel picks the source address of replies,
//   and a PXE ROM drops replies from an address it did not ask.
import dgram from 'node:dgram';
import { constants } from 'node:fs';
import { open, realpath, stat, type FileHandle } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import { decodePacket, encodeData, encodeError, encodeOack, ErrorCode, netasciiEncode, TftpDecodeError } from './packet.ts';
import { DEFAULT_MAX_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, negotiate, type Negotiated } from './negotiate.ts';
import { checkRequestPath, isWithinRoot } from './path.ts';

/** The subset of a pino logger the server uses. */
export interface TftpLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug?(obj: object, msg?: string): void;
}

export interface TftpServerOptions {
  /** Directory the files are served from; nothing outside it is reachable. */
  root: string;
  /** Address to listen on (default 0.0.0.0). */
  host?: string;
  /** UDP port (default 69; 0 picks a free one). PXE firmware always uses 69. */
  port?: number;
  /** Largest block size granted (default 1468, within 8..65464). */
  maxBlksize?: number;
  /** Retransmission interval when the client does not negotiate one (default 1000 ms). */
  timeoutMs?: number;
  /** Retransmissions of one packet before the transfer is dropped (default 5). */
  retries?: number;
  /** Concurrent transfers; further requests get ERROR 0 "server busy" (default 64). */
  maxTransfers?: number;
  log?: TftpLogger;
}

export interface TftpStats {
  activeTransfers: number;
  transfersStarted: number;
  transfersCompleted: number;
  transfersFailed: number;
  /** Requests answered with an ERROR instead of a transfer. */
  requestsRefused: number;
  /** File bytes sent (first transmissions only). */
  bytesSent: number;
  retransmissions: number;
}

export interface TftpServer {
  /** The port actually bound (useful with port 0). */
  port: number;
  address: string;
  /** Stops listening, aborts running transfers and releases every socket and file. */
  close(): Promise<void>;
  stats(): TftpStats;
}

type Peer = { address: string; port: number };

const READ_CHUNK = 64 * 1024;

/** Reads a file as consecutive blocks of `blksize` bytes (netascii-encoded if asked). */
class BlockReader {
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private pos = 0;
  private eof = false;
  private readonly chunk: number;

  constructor(
    private readonly fh: FileHandle,
    private readonly blksize: number,
    private readonly netascii: boolean,
  ) {
    this.chunk = Math.max(READ_CHUNK, blksize);
  }

  /** The next block; shorter than blksize (possibly empty) means it is the last one. */
  async next(): Promise<Buffer> {
    while (this.queued < this.blksize && !this.eof) {
      const buf = Buffer.allocUnsafe(this.chunk);
      const { bytesRead } = await this.fh.read(buf, 0, this.chunk, this.pos);
      if (bytesRead === 0) {
        this.eof = true;
        break;
      }
      this.pos += bytesRead;
      const data = this.netascii ? netasciiEncode(buf.subarray(0, bytesRead)) : buf.subarray(0, bytesRead);
      this.queue.push(data);
      this.queued += data.length;
    }
    return this.take(Math.min(this.blksize, this.queued));
  }

  private take(n: number): Buffer {
    const first = this.queue[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    this.queued -= n;
    if (first.length > n) {
      this.queue[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) return this.queue.shift()!;
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const head = this.queue[0]!;
      if (head.length <= need) {
        parts.push(this.queue.shift()!);
        need -= head.length;
      } else {
        parts.push(head.subarray(0, need));
        this.queue[0] = head.subarray(need);
        need = 0;
      }
    }
    return Buffer.concat(parts, n);
  }
}

class Refusal extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const peerKey = (p: Peer): string => `${p.address}:${p.port}`;

export async function startTftpServer(options: TftpServerOptions): Promise<TftpServer> {
  const host = options.host ?? '0.0.0.0';
  const maxBlksize = options.maxBlksize ?? DEFAULT_MAX_BLKSIZE;
  const timeoutMs = options.timeoutMs ?? 1000;
  const retries = options.retries ?? 5;
  const maxTransfers = options.maxTransfers ?? 64;
  const log = options.log;
  if (!Number.isInteger(maxBlksize) || maxBlksize < MIN_BLKSIZE || maxBlksize > MAX_BLKSIZE)
    throw new RangeError(`TFTP maxBlksize must be an integer from ${MIN_BLKSIZE} to ${MAX_BLKSIZE}, not ${maxBlksize}`);
  if (!(timeoutMs > 0)) throw new RangeError(`TFTP timeoutMs must be positive, not ${timeoutMs}`);
  if (!Number.isInteger(retries) || retries < 0) throw new RangeError(`TFTP retries must be a whole number, not ${retries}`);

  const rootReal = await realpath(options.root).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`TFTP root ${options.root}: ${e.code === 'ENOENT' ? 'no such directory' : e.message}`);
  });
  if (!(await stat(rootReal)).isDirectory()) throw new Error(`TFTP root ${options.root} is not a directory`);

  const type = isIPv6(host) ? 'udp6' : 'udp4';
  const counters = { transfersStarted: 0, transfersCompleted: 0, transfersFailed: 0, requestsRefused: 0, bytesSent: 0, retransmissions: 0 };
  const transfers = new Map<string, Transfer>();
  /** Peers whose RRQ is being opened (not yet a Transfer). */
  const opening = new Set<string>();
  let closed = false;

  const main = dgram.createSocket({ type });
  await new Promise<void>((resolve, reject) => {
    main.once('error', reject);
    main.bind({ address: host, port: options.port ?? 69 }, () => {
      main.off('error', reject);
      resolve();
    });
  });
  main.on('error', (err) => log?.warn({ event: 'tftp-socket-error', err: err.message }, 'TFTP socket error'));

  const refuse = (sock: dgram.Socket, peer: Peer, code: ErrorCode, message: string, file?: string): void => {
    counters.requestsRefused++;
    log?.warn({ event: 'tftp-refused', client: peerKey(peer), file, code, message }, `TFTP request refused: ${message}`);
    if (!closed) sock.send(encodeError(code, message), peer.port, peer.address);
  };

  class Transfer {
    private readonly socket = dgram.createSocket({ type });
    private readonly reader: BlockReader;
    private block = 0;
    private packet: Buffer = Buffer.alloc(0);
    private final = false;
    /** The outstanding packet is the OACK (block 0 of the option phase, not a wrapped DATA 0). */
    private isOack = false;
    private busy = false;
    private ending = false;
    private attempts = 0;
    private timer: NodeJS.Timeout | undefined;
    private finished = false;
    private readonly startedAt = Date.now();
    private bytes = 0;
    private blocks = 0;
    private retransmits = 0;
    readonly done: Promise<void>;
    private resolveDone!: () => void;

    constructor(
      readonly peer: Peer,
      readonly file: string,
      private readonly fh: FileHandle,
      readonly mode: 'octet' | 'netascii',
      private readonly neg: Negotiated,
    ) {
      this.reader = new BlockReader(fh, neg.blksize, mode === 'netascii');
      this.done = new Promise((r) => (this.resolveDone = r));
    }

    async start(): Promise<void> {
      await new Promise<void>((resolve, reject) => {
        this.socket.once('error', reject);
        this.socket.bind({ address: host, port: 0 }, () => {
          this.socket.off('error', reject);
          resolve();
        });
      });
      this.socket.on('error', (err) => this.fail(`socket error: ${err.message}`));
      this.socket.on('message', (msg, rinfo) => this.onMessage(msg, { address: rinfo.address, port: rinfo.port }));
      if (this.neg.oack) {
        this.block = 0;
        this.isOack = true;
        this.packet = encodeOack(this.neg.oack);
        this.transmit();
      } else await this.sendNext();
    }

    /** The port this transfer sends from (its TID). */
    get port(): number {
      return this.socket.address().port;
    }

    private transmit(): void {
      this.socket.send(this.packet, this.peer.port, this.peer.address, (err) => {
        if (err) this.fail(`send failed: ${err.message}`);
      });
      this.arm();
    }

    private arm(): void {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.onTimeout(), this.neg.timeoutMs);
    }

    private onTimeout(): void {
      if (this.finished || this.ending) return;
      if (this.attempts >= retries) {
        this.abort(ErrorCode.NOT_DEFINED, `no acknowledgement of block ${this.block} after ${retries + 1} tries`);
        return;
      }
      this.attempts++;
      this.retransmits++;
      counters.retransmissions++;
      this.transmit();
    }

    private async sendNext(): Promise<void> {
      this.busy = true;
      clearTimeout(this.timer);
      let data: Buffer;
      try {
        data = await this.reader.next();
      } catch (e) {
        this.abort(ErrorCode.NOT_DEFINED, `read error: ${(e as Error).message}`);
        return;
      }
      if (this.finished) return;
      this.block = (this.block + 1) & 0xffff;
      this.isOack = false;
      this.packet = encodeData(this.block, data);
      this.final = data.length < this.neg.blksize;
      this.attempts = 0;
      this.bytes += data.length;
      this.blocks++;
      counters.bytesSent += data.length;
      this.busy = false;
      this.transmit();
    }

    private onMessage(msg: Buffer, from: Peer): void {
      if (this.finished || this.ending) return;
      if (from.address !== this.peer.address || from.port !== this.peer.port) {
        // RFC 1350: answer the stranger with ERROR 5 and carry on with the real client.
        log?.debug?.({ event: 'tftp-unknown-tid', client: peerKey(this.peer), from: peerKey(from) }, 'TFTP packet from an unknown TID');
        this.socket.send(encodeError(ErrorCode.UNKNOWN_TID, 'unknown transfer ID'), from.port, from.address);
        return;
      }
      let p;
      try {
        p = decodePacket(msg);
      } catch (e) {
        if (e instanceof TftpDecodeError) return this.abort(ErrorCode.ILLEGAL_OPERATION, e.message);
        throw e;
      }
      if (p.op === 'ERROR') return this.fail(`client sent ERROR ${p.code}: ${p.message}`);
      if (p.op !== 'ACK') return this.abort(ErrorCode.ILLEGAL_OPERATION, `expected an ACK during a read, got ${p.op}`);
      // Only the ACK of the outstanding packet moves on. An older (duplicate) ACK is
      // ignored: resending on it would double every later packet.
      if (this.busy || p.block !== this.block) return;
      if (!this.isOack && this.final) return this.complete();
      void this.sendNext();
    }

    private complete(): void {
      counters.transfersCompleted++;
      log?.info(
        {
          event: 'tftp-done',
          client: peerKey(this.peer),
          file: this.file,
          mode: this.mode,
          bytes: this.bytes,
          blocks: this.blocks,
          blksize: this.neg.blksize,
          tsize: this.neg.tsize,
          timeoutMs: this.neg.timeoutMs,
          retransmissions: this.retransmits,
          ms: Date.now() - this.startedAt,
        },
        'TFTP transfer done',
      );
      void this.release();
    }

    /** Ends the transfer telling the client why. */
    abort(code: ErrorCode, message: string): void {
      if (this.finished || this.ending) return;
      this.ending = true;
      clearTimeout(this.timer);
      this.socket.send(encodeError(code, message), this.peer.port, this.peer.address, () => this.fail(message));
    }

    /** Ends the transfer without a word to the client. */
    fail(reason: string): void {
      if (this.finished) return;
      this.ending = true;
      counters.transfersFailed++;
      log?.warn({ event: 'tftp-failed', client: peerKey(this.peer), file: this.file, bytes: this.bytes, reason }, `TFTP transfer failed: ${reason}`);
      void this.release();
    }

    private async release(): Promise<void> {
      if (this.finished) return;
      this.finished = true;
      clearTimeout(this.timer);
      transfers.delete(peerKey(this.peer));
      await Promise.all([new Promise<void>((r) => this.socket.close(() => r())), this.fh.close().catch(() => undefined)]);
      this.resolveDone();
    }
  }

  async function openFile(filename: string): Promise<{ fh: FileHandle; relative: string }> {
    const checked = checkRequestPath(rootReal, filename);
    if (!checked.ok) throw new Refusal(checked.code, checked.message);
    let real: string;
    try {
      real = await realpath(join(rootReal, checked.relative));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new Refusal(ErrorCode.FILE_NOT_FOUND, `file not found: ${checked.relative}`);
      if (code === 'EACCES') throw new Refusal(ErrorCode.ACCESS_VIOLATION, `permission denied: ${checked.relative}`);
      if (code === 'ELOOP') throw new Refusal(ErrorCode.ACCESS_VIOLATION, `symlink loop: ${checked.relative}`);
      throw e;
    }
    if (!isWithinRoot(rootReal, real))
      throw new Refusal(ErrorCode.ACCESS_VIOLATION, `${checked.relative} resolves outside the TFTP root (symlink escape refused)`);
    let fh: FileHandle;
    try {
      fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new Refusal(ErrorCode.FILE_NOT_FOUND, `file not found: ${checked.relative}`);
      if (code === 'EACCES' || code === 'ELOOP') throw new Refusal(ErrorCode.ACCESS_VIOLATION, `permission denied: ${checked.relative}`);
      throw e;
    }
    return { fh, relative: checked.relative };
  }

  async function onRequest(peer: Peer, filename: string, rawMode: string, requested: Record<string, string>): Promise<void> {
    const key = peerKey(peer);
    if (transfers.has(key) || opening.has(key)) {
      log?.debug?.({ event: 'tftp-duplicate-rrq', client: key, file: filename }, 'repeated RRQ ignored');
      return;
    }
    if (rawMode !== 'octet' && rawMode !== 'netascii')
      return refuse(main, peer, ErrorCode.ILLEGAL_OPERATION, `transfer mode "${rawMode}" is not supported (octet or netascii)`, filename);
    if (transfers.size + opening.size >= maxTransfers) return refuse(main, peer, ErrorCode.NOT_DEFINED, 'server busy, try again later', filename);
    const mode = rawMode;
    opening.add(key);
    let fh: FileHandle | undefined;
    try {
      const opened = await openFile(filename);
      fh = opened.fh;
      const st = await fh.stat();
      const size = st.size;
      if (!st.isFile()) throw new Refusal(ErrorCode.FILE_NOT_FOUND, `not a regular file: ${opened.relative}`);
      if (closed) throw new Refusal(ErrorCode.NOT_DEFINED, 'server shutting down');
      const neg = negotiate({ requested, mode, fileSize: size, maxBlksize, defaultTimeoutMs: timeoutMs });
      const t = new Transfer(peer, opened.relative, fh, mode, neg);
      fh = undefined; // owned by the transfer now
      transfers.set(key, t);
      counters.transfersStarted++;
      log?.info(
        { event: 'tftp-rrq', client: key, file: opened.relative, mode, requested, accepted: neg.oack, ignored: neg.ignored, size },
        'TFTP read request',
      );
      await t.start().catch((e: Error) => t.fail(e.message));
    } catch (e) {
      await fh?.close().catch(() => undefined);
      if (e instanceof Refusal) refuse(main, peer, e.code, e.message, filename);
      else refuse(main, peer, ErrorCode.NOT_DEFINED, `server error: ${(e as Error).message}`, filename);
    } finally {
      opening.delete(key);
    }
  }

  main.on('message', (msg, rinfo) => {
    if (closed) return;
    const peer = { address: rinfo.address, port: rinfo.port };
    let p;
    try {
      p = decodePacket(msg);
    } catch (e) {
      if (e instanceof TftpDecodeError) return refuse(main, peer, ErrorCode.ILLEGAL_OPERATION, `malformed request: ${e.message}`);
      throw e;
    }
    switch (p.op) {
      case 'RRQ':
        void onRequest(peer, p.filename, p.mode, p.options);
        return;
      case 'WRQ':
        return refuse(main, peer, ErrorCode.ACCESS_VIOLATION, 'this TFTP server is read-only: uploads (WRQ) are refused', p.filename);
      case 'ERROR':
        return; // never answer an error
      default:
        return refuse(main, peer, ErrorCode.ILLEGAL_OPERATION, `expected a read request, got ${p.op}`);
    }
  });

  let closing: Promise<void> | undefined;
  const address = main.address();
  return {
    port: address.port,
    address: address.address,
    stats: () => ({ activeTransfers: transfers.size, ...counters }),
    close(): Promise<void> {
      closing ??= (async () => {
        closed = true;
        await new Promise<void>((r) => main.close(() => r()));
        // Requests still being opened finish on their own (they find the server closed or
        // become transfers), then every transfer is told and released.
        while (opening.size > 0) await new Promise((r) => setTimeout(r, 5));
        const running = [...transfers.values()];
        for (const t of running) t.abort(ErrorCode.NOT_DEFINED, 'server shutting down');
        await Promise.all(running.map((t) => t.done));
      })();
      return closing;
    },
  };
}
