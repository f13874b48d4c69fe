// Opening the image: a local path (Isar's lookup in the install data dir),
// a file:// URL, or http(s):// with redirects. Resolving is separate from
// opening so local inputs are validated before anyone is asked to confirm,
// while an HTTP transfer only starts once the disk may really be written.
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { TaskError } from '../builtin.ts';

export const MAX_REDIRECTS = 5;

export type ImageLocation = { kind: 'file'; path: string; size: number } | { kind: 'url'; url: URL };

export interface ImageSource {
  stream: Readable;
  /** Bytes the stream will yield (file size or Content-Length), when known. */
  totalBytes?: number;
  /** Where the bytes came from, after redirects: for logs and errors. */
  location: string;
}

/** The paths a local image name is looked up at, in order: as given, then under the install data dir. */
export function localCandidates(image: string, installData: string): string[] {
  if (isAbsolute(image)) return [image];
  return [resolvePath(image), resolvePath(installData, image)];
}

async function statFile(path: string): Promise<{ ok: true; size: number } | { ok: false; why: string }> {
  try {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      if (!st.isFile()) return { ok: false, why: 'not a regular file' };
      return { ok: true, size: st.size };
    } finally {
      await fh.close();
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, why: code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : String((e as Error).message) };
  }
}

/** Checks that the image exists (local) or is a URL this version can fetch; no network traffic yet. */
export async function resolveImage(image: string, installData: string): Promise<ImageLocation> {
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(image)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') {
    try {
      return { kind: 'url', url: new URL(image) };
    } catch {
      throw new TaskError(`image URL ${image} is not a valid URL`);
    }
  }
  let tried: string[];
  if (scheme === 'file') {
    let path: string;
    try {
      path = fileURLToPath(image);
    } catch (e) {
      throw new TaskError(`image URL ${image} is not a usable file:// URL: ${(e as Error).message}`);
    }
    tried = [path];
  } else if (scheme !== undefined) {
    throw new TaskError(
      `image ${image}: the ${scheme}:// scheme is not supported by this version of deploy-image; use a local path, file://, http:// or https://`,
    );
  } else {
    tried = localCandidates(image, installData);
  }
  const why: string[] = [];
  for (const path of tried) {
    const r = await statFile(path);
    if (r.ok) return { kind: 'file', path, size: r.size };
    why.push(`${path} (${r.why})`);
  }
  throw new TaskError(
    `image ${image} not found: tried ${why.join(' and ')}. ` +
      'Put the image there, or give an absolute path or an http(s):// URL in the task option `image`.',
  );
}

/** Starts reading the image. */
export async function openImage(loc: ImageLocation, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<ImageSource> {
  if (loc.kind === 'file') {
    // Opened again (not kept from resolveImage) so nothing is held open across a console prompt.
    const stream = createReadStream(loc.path, { highWaterMark: 1024 * 1024, signal: opts.signal });
    return { stream, totalBytes: loc.size, location: loc.path };
  }
  return httpGet(loc.url, opts.signal, opts.timeoutMs ?? 30_000);
}

/** GET with up to MAX_REDIRECTS redirects; resolves once a 2xx response has arrived. */
async function httpGet(start: URL, signal: AbortSignal | undefined, timeoutMs: number): Promise<ImageSource> {
  let url = start;
  for (let hop = 0; ; hop++) {
    const res = await request(url, signal, timeoutMs);
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (status >= 300 && status < 400 && location) {
      res.resume(); // drain so the socket can be reused or closed
      if (hop >= MAX_REDIRECTS) {
        throw new TaskError(`image ${start.href}: more than ${MAX_REDIRECTS} redirects (last to ${new URL(location, url).href}); check the server's configuration`);
      }
      url = new URL(location, url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new TaskError(`image ${start.href}: redirected to unsupported URL ${url.href}`);
      }
      continue;
    }
    if (status < 200 || status >= 300) {
      res.resume();
      const via = url.href === start.href ? '' : ` (redirected from ${start.href})`;
      const text = res.statusMessage ? ` ${res.statusMessage}` : '';
      throw new TaskError(`image download failed: HTTP ${status}${text} for ${url.href}${via}; check the URL and that the server serves it`);
    }
    const header = res.headers['content-length'];
    const len = header === undefined ? NaN : Number(header);
    const encoding = res.headers['content-encoding'];
    if (encoding && encoding !== 'identity') {
      res.resume();
      throw new TaskError(`image ${url.href}: server sent Content-Encoding ${encoding}; serve the file as-is (the image's own .gz compression is handled)`);
    }
    return { stream: res, totalBytes: Number.isFinite(len) && len >= 0 ? len : undefined, location: url.href };
  }
}

function request(url: URL, signal: AbortSignal | undefined, timeoutMs: number): Promise<http.IncomingMessage> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    let response: http.IncomingMessage | undefined;
    const req = mod.get(url, { signal, headers: { 'accept-encoding': 'identity', 'user-agent': 'bootline-deploy-image' } }, (res) => {
      response = res;
      resolve(res);
    });
    // An idle socket (no bytes for timeoutMs, also mid-transfer) fails the copy instead of hanging the line.
    req.setTimeout(timeoutMs, () => {
      const err = new TaskError(`image download from ${url.href} stalled: no data for ${timeoutMs / 1000} s`);
      response?.destroy(err);
      req.destroy(err);
    });
    req.on('error', (e) => {
      if (signal?.aborted || e instanceof TaskError) reject(e);
      else reject(new TaskError(`image download from ${url.href} failed: ${e.message}`));
    });
  });
}
