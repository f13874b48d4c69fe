// The image engine's shared vocabulary: a block map, a byte source, a write target.
import type { Readable } from 'node:stream';

/** A run of mapped blocks, inclusive, with the checksum of exactly those bytes. */
export interface BmapRange {
  first: number;
  last: number;
  checksum?: string;
}

export type ChecksumType = 'sha256' | 'sha1' | 'md5';

/** A parsed bmap (bmaptool formats 1.2 to 2.0); all numbers validated. */
export interface Bmap {
  version: string;
  imageSize: number;
  blockSize: number;
  blocksCount: number;
  mappedBlocksCount: number;
  /** 1.2 has sha1 per range without a type element; 1.3 sha1; 1.4+ names it. */
  checksumType?: ChecksumType;
  /** BmapFileChecksum (1.4+) or BmapFileSHA1 (1.3): checksum of the bmap file with this value zeroed. */
  fileChecksum?: string;
  ranges: BmapRange[];
}

/** Where image bytes come from. Network sources resume by themselves inside `open`. */
export interface Source {
  /** For messages; credentials removed. */
  readonly display: string;
  /** True when `open(offset > 0)` is possible (a file, HTTP with Range, FTP REST, S3). */
  readonly seekable: boolean;
  /** Total size in bytes of what the source delivers (compressed size for a .gz), if known. */
  size(): Promise<number | undefined>;
  /**
   * The bytes from `offset` to the end. A network source that loses its connection or
   * stalls resumes at the byte it had reached (validated with ETag/Last-Modified) and
   * fails only after its bounded retries; the stream then emits an error that says so.
   */
  open(offset: number, signal?: AbortSignal): Promise<Readable>;
  /**
   * Set for a local file or block device. The copy then reads it with positional reads into
   * reused buffers, and a decompressor is given the path to read it itself: a stream would
   * allocate a buffer per chunk, and at GiB/s that external memory makes V8 run a full GC every
   * few tens of MiB (measured: 45-89 mark-compacts per 2 GiB copy, a third of the main thread).
   */
  readonly localPath?: string;
  /**
   * Like `open`, but each chunk is a view of a reused buffer, valid only until the consumer asks
   * for the next one (or returns): a consumer that keeps bytes longer copies them, and one that
   * writes a chunk somewhere waits until the write has completed before asking again. Set by
   * http sources, whose plain-http bodies are then read without a buffer allocated per read.
   * With `until`, only the bytes before it are asked for (a bounded Range) and read.
   */
  openPooled?(offset: number, signal?: AbortSignal, until?: number): Promise<AsyncGenerator<Buffer>>;
  /** Whether the object exists (used to look for a bmap beside an image). */
  exists?(): Promise<boolean>;
  /** Frees kept-alive connections. */
  close?(): void | Promise<void>;
}

export interface SourceOptions {
  /** PEM CA bundle file for https. */
  ca?: string;
  headers?: Record<string, string>;
  /** Bearer token (Authorization: Bearer). Basic auth comes from user:pass@ in the URL. */
  token?: string;
  /** Retries per failure before giving up (default 8). */
  retries?: number;
  /** First backoff delay in ms, doubled per retry, capped (default 500). */
  retryDelayMs?: number;
  /** A connection that delivers nothing for this long is dropped and resumed (default 30000). */
  stallTimeoutMs?: number;
  /** Tells the user about resumes and retries. */
  onRetry?: (message: string) => void;
}

export type Compression = 'none' | 'gzip' | 'xz' | 'zstd' | 'bzip2' | 'lz4';
