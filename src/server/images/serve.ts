// GET and HEAD /images/<image-name>/<file-name>: image files streamed from the data dir, with
// the HTTP a resuming downloader needs (the agent's HttpSource, curl -C -, bmaptool): Range,
// If-Range, a strong ETag, Last-Modified, exact Content-Length; or, for an image registered
// with an s3:// location, a 307 redirect to a presigned S3 URL.
//
// Mounting (no prefix: the paths are the public ones):
//
//   await app.register(imageRoutes, { dataDir, store, onBytes: (n) => bytesServed.inc(n) });
//   (or, as src/server/app.ts does, `await app.register(async (scope) => imageRoutes(scope, opts))`)
//
// - `store` given: only registered images are served, and only their files (the image file,
//   its bmap and its signature); an image whose location is `s3://bucket[/prefix]` is
//   redirected to `<prefix>/<file>` in that bucket. Without a store, any regular file under
//   `<dataDir>/images/<name>/` is served.
// - `onBytes(n)`: the bytes of each response's body, when it ends or is aborted (for /metrics).
//
// Why not @fastify/send: it stats by path (a registration renaming a new file in between
// its stat and open would send new bytes under old headers) and its ETag is weak, which
// If-Range (and so a resuming client) cannot use. Here the fd is opened first, every header
// comes from fstat of that fd, and the body goes out through file-pump.ts.
import { close, fstat, open, constants as fsc } from 'node:fs';
import type { OutgoingHttpHeaders } from 'node:http';
import type { BigIntStats } from 'node:fs';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import aws4 from 'aws4';
import type { Image } from '../../api/admin.ts';
import type { Store } from '../db/store.ts';
import { s3HttpUrl } from '../../image/sources/s3.ts';
import { checkName, ImagePathError, parseImageUrl, resolveImageFile } from './paths.ts';
import { pumpFile } from './file-pump.ts';

export interface S3Config {
  /** S3-compatible endpoint (MinIO, Ceph...); default AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else AWS. */
  endpoint?: string;
  /** Default AWS_REGION / AWS_DEFAULT_REGION, else us-east-1. */
  region?: string;
  /** Default AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN. */
  accessKeyId?: string;
  secretAccessKey?: string;
  sessionToken?: string;
  /** Lifetime of a presigned URL in seconds (default 3600; S3 allows at most 604800). */
  expiresSeconds?: number;
}

export interface ImageRoutesOptions {
  /** The server's data dir; files are `<dataDir>/images/<name>/<file>`. */
  dataDir: string;
  /** With a store, only registered images (and only their files) are served. */
  store?: Pick<Store, 'getImage'>;
  /** Bytes of each response's body, reported once when its stream closes (for the `bytes served` metric). */
  onBytes?: (n: number) => void;
  /** Presigning for images with an s3:// location; unset fields come from the AWS_* environment. */
  s3?: S3Config;
  /** Environment for the S3 defaults (tests); default process.env. */
  env?: NodeJS.ProcessEnv;
}

const ErrorSchema = {
  type: 'object',
  properties: { error: { type: 'string' }, message: { type: 'string' } },
  required: ['error', 'message'],
} as const;

const routeSchema = {
  summary: 'Download an image file (Range, If-Range, ETag, HEAD); S3-hosted images redirect to a presigned URL',
  tags: ['images'],
  params: {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 128, description: 'image name: letters, digits, ".", "-", "_"' },
      file: { type: 'string', maxLength: 128, description: 'file name: the image file, its bmap or its signature' },
    },
    required: ['name', 'file'],
  },
  headers: {
    type: 'object',
    properties: {
      range: { type: 'string', description: 'one range, bytes=a-b, bytes=a- or bytes=-n (several ranges get the whole file)' },
      'if-range': { type: 'string' },
      'if-none-match': { type: 'string' },
      'if-modified-since': { type: 'string' },
    },
  },
  response: {
    200: { description: 'the whole file', type: 'string', format: 'binary' },
    206: { description: 'the requested range', type: 'string', format: 'binary' },
    304: { description: 'not modified (If-None-Match / If-Modified-Since)', type: 'null' },
    307: { description: 'the image lives on S3: Location is a presigned URL', type: 'null' },
    400: ErrorSchema,
    403: ErrorSchema,
    404: ErrorSchema,
    412: ErrorSchema,
    416: ErrorSchema,
  },
} as const;

/** Error codes as the rest of the server's API answers them (src/server/errors.ts): `{ error, message }`. */
const CODE: Record<number, string> = {
  400: 'bad-request',
  403: 'forbidden',
  404: 'not-found',
  412: 'precondition-failed',
  416: 'range-not-satisfiable',
  500: 'internal',
};

const openAsync = promisify(open);
const closeQuietly = (fd: number): void => close(fd, () => undefined);
const fstatBig = (fd: number): Promise<BigIntStats> =>
  new Promise((resolve, reject) => fstat(fd, { bigint: true }, (err, st) => (err ? reject(err) : resolve(st))));

/** Strong: inode, size and mtime in nanoseconds change whenever the file does (also when replaced by rename). */
export function etagOf(st: Pick<BigIntStats, 'ino' | 'size' | 'mtimeNs'>): string {
  return `"${st.ino.toString(36)}-${st.size.toString(36)}-${st.mtimeNs.toString(36)}"`;
}

/** The entity tags of an If-None-Match / If-Match list (`*` kept as is). */
function tagList(header: string): string[] {
  return header.match(/\*|(?:W\/)?"[^"]*"/g) ?? [];
}

export type RangeResult = { kind: 'none' } | { kind: 'unsatisfiable' } | { kind: 'range'; start: number; end: number };

/**
 * One `Range` header against a file of `size` bytes (RFC 9110 14.2). Anything but one
 * syntactically valid byte range is answered with the whole file (`none`): that is allowed for
 * multi-range requests (we do not send multipart/byteranges; downloaders ask for one range)
 * and required for ranges we cannot parse. `end` is inclusive.
 */
export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'none' };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return { kind: 'none' };
  const [, a = '', b = ''] = m;
  if (a === '' && b === '') return { kind: 'none' };
  if (a === '') {
    // Suffix: the last n bytes.
    const n = Number(b);
    if (n === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'range', start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const last = b === '' ? Infinity : Number(b);
  if (last < start) return { kind: 'none' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'range', start, end: Math.min(last, size - 1) };
}

/** Whether If-Range lets the Range apply: a strong ETag equal to ours, or exactly our Last-Modified date. */
function ifRangeHolds(ifRange: string | undefined, etag: string, mtimeSeconds: number): boolean {
  if (ifRange === undefined) return true;
  const v = ifRange.trim();
  if (v.startsWith('"') || v.startsWith('W/')) return v === etag; // weak tags never match here
  const t = Date.parse(v);
  return Number.isFinite(t) && t / 1000 === mtimeSeconds;
}

function contentType(file: string): string {
  if (file.endsWith('.bmap')) return 'application/xml';
  if (file.endsWith('.sig') || file.endsWith('.asc')) return 'text/plain; charset=utf-8';
  return 'application/octet-stream';
}

/** `s3://bucket[/prefix]` + file -> bucket and key. */
export function s3ObjectOf(location: string, file: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/i.exec(location);
  if (!m) throw new Error(`image location "${location}" is not an S3 location (expected s3://bucket[/prefix])`);
  const prefix = (m[2] ?? '').replace(/\/+$/, '');
  return { bucket: m[1] as string, key: prefix ? `${prefix}/${file}` : file };
}

/**
 * A presigned (SigV4, query-signed) URL for `method` on the object `<location>/<file>`. A HEAD
 * needs its own signature: the method is part of what is signed.
 */
export function presignS3Url(location: string, file: string, method: 'GET' | 'HEAD', config: S3Config = {}, env: NodeJS.ProcessEnv = process.env): string {
  const accessKeyId = config.accessKeyId ?? env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = config.secretAccessKey ?? env.AWS_SECRET_ACCESS_KEY;
  const sessionToken = config.sessionToken ?? env.AWS_SESSION_TOKEN;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error(`cannot presign a URL for ${location}/${file}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials) or the server's s3 configuration`);
  }
  const expires = config.expiresSeconds ?? 3600;
  if (!Number.isInteger(expires) || expires < 1 || expires > 604800) {
    throw new Error(`s3 expiresSeconds ${expires} must be a whole number of seconds from 1 to 604800 (7 days)`);
  }
  const endpoint = config.endpoint ?? (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL);
  const region = config.region ?? (env.AWS_REGION || env.AWS_DEFAULT_REGION);
  const { url, region: r } = s3HttpUrl(s3ObjectOf(location, file), {
    ...(endpoint ? { AWS_ENDPOINT_URL: endpoint } : {}),
    ...(region ? { AWS_REGION: region } : {}),
  });
  const signed = aws4.sign(
    { service: 's3', region: r, method, host: url.host, path: `${url.pathname}?X-Amz-Expires=${expires}`, signQuery: true },
    { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) },
  );
  return `${url.protocol}//${url.host}${signed.path ?? ''}`;
}

/** The file names a registered image serves: each file, its bmap, its signature. */
export function servedFiles(image: Image): Set<string> {
  const out = new Set<string>();
  for (const f of image.files) {
    out.add(f.name);
    if (f.bmap) out.add(f.bmap);
    if (f.signature) out.add(f.signature);
  }
  return out;
}

function fail(reply: FastifyReply, status: number, message: string): FastifyReply {
  return reply.code(status).send({ error: CODE[status] ?? 'error', message });
}

/**
 * Answers GET or HEAD for the regular file at `path` (already checked by the caller: nothing
 * here validates names): conditional requests, one Range, then the bytes streamed from the
 * fd the headers were taken from. 404 when it does not exist or is not a regular file.
 * `onBytes` is called with the bytes sent when the response's stream closes.
 */
export async function serveFile(req: FastifyRequest, reply: FastifyReply, path: string, onBytes?: (n: number) => void): Promise<FastifyReply> {
  const display = basename(path);
  // O_NONBLOCK: a FIFO put there would otherwise block the open; no effect on regular files.
  // Symlinks are followed: the image route passes a real path it checked, and the installer's
  // kernel may well be a link to a versioned file.
  let fd: number;
  try {
    fd = await openAsync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return fail(reply, 404, `no file "${display}"`);
    throw e;
  }
  let handedOff = false;
  try {
    const st = await fstatBig(fd);
    if (!st.isFile()) return fail(reply, 404, `"${display}" is not a regular file`);
    const size = Number(st.size);
    const etag = etagOf(st);
    const mtimeSeconds = Math.floor(Number(st.mtimeMs) / 1000);
    reply.header('etag', etag).header('last-modified', new Date(mtimeSeconds * 1000).toUTCString()).header('accept-ranges', 'bytes');

    // Preconditions in the order of RFC 9110 13.2.2.
    const h = req.headers;
    const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v.join(', ') : v);
    const ifMatch = one(h['if-match']);
    const ifUnmodified = one(h['if-unmodified-since']);
    const ifNoneMatch = one(h['if-none-match']);
    const ifModified = one(h['if-modified-since']);
    if (ifMatch !== undefined) {
      const tags = tagList(ifMatch);
      if (!tags.includes('*') && !tags.includes(etag)) return fail(reply, 412, `If-Match does not match the file's ETag ${etag}`);
    } else if (ifUnmodified !== undefined) {
      const t = Date.parse(ifUnmodified);
      if (Number.isFinite(t) && mtimeSeconds > t / 1000) return fail(reply, 412, 'the file was modified after If-Unmodified-Since');
    }
    if (ifNoneMatch !== undefined) {
      // Weak comparison here: W/"x" matches "x".
      const tags = tagList(ifNoneMatch).map((t) => t.replace(/^W\//, ''));
      if (tags.includes('*') || tags.includes(etag)) return reply.code(304).send();
    } else if (ifModified !== undefined) {
      const t = Date.parse(ifModified);
      if (Number.isFinite(t) && mtimeSeconds <= t / 1000) return reply.code(304).send();
    }

    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = one(h.range);
    if (range !== undefined && ifRangeHolds(one(h['if-range']), etag, mtimeSeconds)) {
      const r = parseRange(range, size);
      if (r.kind === 'unsatisfiable') {
        reply.header('content-range', `bytes */${size}`);
        return fail(reply, 416, `range "${range}" is outside the file (${size} bytes)`);
      }
      if (r.kind === 'range') {
        ({ start, end } = r);
        status = 206;
        reply.header('content-range', `bytes ${start}-${end}/${size}`);
      }
    }
    const length = end - start + 1;
    reply.code(status).header('content-type', contentType(display)).header('content-length', String(length));
    if (req.method === 'HEAD' || length === 0) return reply.send();

    // The body bypasses Fastify's stream handling: reused buffers (file-pump.ts). The reply
    // is hijacked, so the headers set on it are written here; onResponse hooks still run
    // when the response finishes.
    reply.hijack();
    reply.raw.writeHead(status, reply.getHeaders() as OutgoingHttpHeaders);
    handedOff = true;
    // Counted once per response, not per chunk; an aborted download counts what was sent.
    void pumpFile(fd, reply.raw, start, end).then((r) => r.bytes > 0 && onBytes?.(r.bytes));
    return reply;
  } finally {
    if (!handedOff) closeQuietly(fd);
  }
}

/** The Fastify plugin: `app.register(imageRoutes, { dataDir, store?, onBytes?, s3? })`. */
export async function imageRoutes(app: FastifyInstance, opts: ImageRoutesOptions): Promise<void> {
  const { dataDir, store, onBytes } = opts;
  const env = opts.env ?? process.env;

  const handler = async (req: FastifyRequest<{ Params: { name: string; file: string } }>, reply: FastifyReply) => {
    let name: string;
    let file: string;
    try {
      // The raw URL first (nothing percent-encoded), then what the router decoded.
      const raw = parseImageUrl(req.url);
      name = checkName(req.params.name, 'image name');
      file = checkName(req.params.file, 'file name');
      if (raw.name !== name || raw.file !== file) throw new ImagePathError(400, 'the image path is ambiguous');
    } catch (e) {
      if (e instanceof ImagePathError) return fail(reply, e.statusCode, e.message);
      throw e;
    }
    const method = req.method === 'HEAD' ? 'HEAD' : 'GET';

    if (store) {
      const image = await store.getImage(name);
      if (!image) return fail(reply, 404, `no image "${name}" is registered`);
      if (!servedFiles(image).has(file)) return fail(reply, 404, `image "${name}" has no file "${file}"`);
      if (/^s3:\/\//i.test(image.location)) {
        let location: string;
        try {
          location = presignS3Url(image.location, file, method, opts.s3, env);
        } catch (e) {
          req.log.error({ err: e }, 'cannot presign an S3 URL');
          return fail(reply, 500, (e as Error).message);
        }
        return reply.code(307).header('cache-control', 'no-store').header('location', location).send();
      }
    }

    let path: string;
    try {
      path = await resolveImageFile(dataDir, name, file);
    } catch (e) {
      if (e instanceof ImagePathError) return fail(reply, e.statusCode, e.message);
      throw e;
    }
    return serveFile(req, reply, path, onBytes);
  };

  app.route({
    method: ['GET', 'HEAD'],
    url: '/images/:name/:file',
    schema: routeSchema,
    exposeHeadRoute: false,
    handler,
  });
}
