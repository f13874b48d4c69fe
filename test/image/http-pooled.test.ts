// Image downloads over plain http read into reused buffers (src/image/sources/http1-body.ts,
// pooled-download.ts): real loopback servers and a cutting/stalling TCP proxy. The fast path's
// counter proves which path carried a body; every body is checked byte for byte.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { HttpSource, PermanentError } from '../../src/image/sources/http.ts';
import { fastPathStats, MAX_HEAD } from '../../src/image/sources/http1-body.ts';
import { openImage } from '../../src/image/open-image.ts';
import type { Compression, SourceOptions } from '../../src/image/types.ts';
import { startProxy } from './step-proxy.ts';

const MiB = 1024 * 1024;
/** Half random, half zeros, in 64 KiB runs: compressible, but not trivially. */
const IMAGE = Buffer.concat(Array.from({ length: 96 }, (_, i) => (i % 2 ? Buffer.alloc(64 * 1024) : randomBytes(64 * 1024))));
const DATA = randomBytes(4 * MiB + 4321);
const DATA_V2 = randomBytes(DATA.length);
/** Fast retries: the tests exercise the logic, not the patience. */
const FAST: SourceOptions = { retryDelayMs: 5, stallTimeoutMs: 2000 };

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Reads pooled chunks the way the contract asks: each is used (copied here) before the next. */
async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function close(server: net.Server): Promise<void> {
  if (server instanceof http.Server) server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function source(url: string, options: SourceOptions = FAST): HttpSource {
  return new HttpSource({ url, options });
}

/** Serves `body` with Range, If-Range and an ETag, as a file server does. */
function serve(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, etag: string, ranges = true): void {
  const range = ranges ? /^bytes=(\d+)-$/.exec(req.headers.range ?? '') : null;
  const ifRange = req.headers['if-range'];
  if (range && (!ifRange || ifRange === etag)) {
    const start = Number(range[1]);
    res.writeHead(206, { etag, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}`, 'content-length': body.length - start });
    res.end(body.subarray(start));
    return;
  }
  res.writeHead(200, { etag, 'content-length': body.length });
  res.end(body);
}

/** A TCP server that answers every request with `answer` (for what node's own server will not send). */
async function rawServer(answer: (request: string, sock: net.Socket) => void): Promise<{ url: string; server: net.Server }> {
  const server = net.createServer((sock) => {
    let text = '';
    sock.on('error', () => undefined);
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\r\n\r\n')) answer(text, sock);
    });
  });
  return { url: `http://127.0.0.1:${await listen(server)}`, server };
}

describe('http downloads into reused buffers', () => {
  const seen: { path: string; headers: IncomingHttpHeaders; hosts: number }[] = [];
  const files = new Map<string, Buffer>();
  const changing = { bump: false, version: 1 };
  const hop = { to: '/data.img' };
  let base = '';
  const server = http.createServer((req, res) => {
    const path = req.url ?? '/';
    seen.push({ path, headers: req.headers, hosts: req.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === 'host').length });
    const file = files.get(path);
    if (file) return serve(req, res, file, `"${sha256(file).slice(0, 8)}"`);
    switch (path) {
      case '/norange.img':
        return serve(req, res, DATA, '"n1"', false);
      case '/changing.img': {
        const v = changing.version;
        if (changing.bump) changing.version = 2;
        return serve(req, res, v === 1 ? DATA : DATA_V2, `"c${v}"`);
      }
      case '/chunked.img':
        // No Content-Length: node's server sends it chunked.
        res.writeHead(200, { etag: '"k1"' });
        res.write(DATA.subarray(0, MiB));
        res.end(DATA.subarray(MiB));
        return;
      case '/hop.img':
        return void res.writeHead(302, { location: hop.to }).end();
      case '/moved.img':
        return void res.writeHead(302, { location: '/data.img' }).end();
      case '/away.img':
        return void res.writeHead(302, { location: `${other.base}/data.img` }).end();
      case '/basic.img':
        if (req.headers.authorization !== `Basic ${Buffer.from('user:s3cr3t').toString('base64')}`) return void res.writeHead(401).end('who are you?');
        return serve(req, res, DATA, '"d1"');
      case '/basic-away.img':
        if (!req.headers.authorization) return void res.writeHead(401).end();
        return void res.writeHead(302, { location: `${other.base}/data.img` }).end();
      default:
        res.writeHead(404).end('not here');
    }
  });
  // Another origin (another port) for redirects: credentials must not reach it.
  const other = {
    base: '',
    seen: [] as IncomingHttpHeaders[],
    server: http.createServer((req, res) => {
      other.seen.push(req.headers);
      serve(req, res, DATA, '"o1"');
    }),
  };
  const images: Record<Exclude<Compression, 'bzip2' | 'lz4'>, Buffer> = {
    none: IMAGE,
    gzip: execFileSync('gzip', ['-c'], { input: IMAGE, maxBuffer: 64 * MiB }),
    zstd: execFileSync('zstd', ['-q', '-c'], { input: IMAGE, maxBuffer: 64 * MiB }),
    // Blocks of 1 MiB: several xz lanes, fed from the download.
    xz: execFileSync('xz', ['-c', '-T2', '--block-size=1MiB'], { input: IMAGE, maxBuffer: 64 * MiB }),
  };
  before(async () => {
    base = `http://127.0.0.1:${await listen(server)}`;
    other.base = `http://127.0.0.1:${await listen(other.server)}`;
    files.set('/data.img', DATA);
    for (const [kind, bytes] of Object.entries(images)) files.set(`/image.${kind}`, bytes);
  });
  after(async () => {
    await close(server);
    await close(other.server);
  });

  for (const kind of Object.keys(images) as (keyof typeof images)[]) {
    test(`a ${kind === 'none' ? 'raw' : kind} image arrives byte for byte through the fast path, and onRaw sees what was stored`, { timeout: 10_000 }, async () => {
      const before = fastPathStats.bodies;
      const src = source(`${base}/image.${kind}`);
      const stored = createHash('sha256');
      // The size, as a bmap gives it, lets gzip go through igzip.
      const img = await openImage(src, 0, undefined, undefined, { onRaw: (b) => stored.update(b), imageSize: IMAGE.length });
      assert.equal(img.compression, kind);
      if (kind === 'xz') assert.match(img.decoder ?? '', /^2 7zz processes side by side, 6 blocks$/);
      if (kind === 'gzip') assert.equal(img.decoder, 'igzip');
      assert.equal(sha256(await collect(img.chunks)), sha256(IMAGE));
      assert.equal(stored.digest('hex'), sha256(images[kind]));
      // The xz block index at the end is read with a (small) request of its own.
      assert.ok(fastPathStats.bodies > before, 'the body came through the fast path');
      src.close();
    });
  }

  test('a gzip image of unknown size goes through zlib on the fast path', { timeout: 10_000 }, async () => {
    const src = source(`${base}/image.gzip`);
    const img = await openImage(src, 0, undefined, undefined);
    assert.match(img.decoder ?? '', /^node's zlib/);
    assert.equal(sha256(await collect(img.chunks)), sha256(IMAGE));
    src.close();
  });

  test('one body after another reads into the same segments; two at once never share one', { timeout: 10_000 }, async () => {
    const src = source(`${base}/data.img`);
    /** The body's bytes and the buffers its chunks were views of. */
    const read = async (chunks: AsyncIterable<Buffer>) => {
      const buffers = new Set<ArrayBufferLike>();
      const parts: Buffer[] = [];
      for await (const c of chunks) {
        buffers.add(c.buffer);
        parts.push(Buffer.from(c));
        // Let another download run while this chunk is held.
        await new Promise((r) => setImmediate(r));
      }
      return { buffers, data: Buffer.concat(parts) };
    };
    const first = await read(await src.openPooled(0));
    const second = await read(await src.openPooled(0));
    assert.equal(sha256(second.data), sha256(DATA));
    assert.ok([...second.buffers].every((b) => first.buffers.has(b)), 'the second body was read into the first one\'s segments');
    const [x, y] = await Promise.all([read(await src.openPooled(0)), read(await src.openPooled(MiB))]);
    assert.equal(sha256(x.data), sha256(DATA));
    assert.equal(sha256(y.data), sha256(DATA.subarray(MiB)));
    assert.equal([...x.buffers].filter((b) => y.buffers.has(b)).length, 0, 'two bodies at once have segments of their own');
    src.close();
  });

  test('body bytes go straight into the segments, also while a slow consumer keeps the ring blocked', { timeout: 10_000 }, async () => {
    const src = source(`${base}/data.img`);
    const before = fastPathStats.directBytes;
    const parts: Buffer[] = [];
    let held = 0;
    for await (const c of await src.openPooled(0)) {
      parts.push(Buffer.from(c));
      // Hold every other chunk long enough for the socket to fill both segments and pause.
      if (held++ % 2 === 0) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(sha256(Buffer.concat(parts)), sha256(DATA));
    const direct = fastPathStats.directBytes - before;
    // The head's read, and the first read after each pause, go through the read buffer.
    assert.ok(direct > DATA.length / 2 && direct < DATA.length, `${direct} of ${DATA.length} bytes read straight into segments`);
    src.close();
  });

  test('resumes after cuts inside the response headers, mid-segment and right after a segment', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(Number(new URL(base).port), [{ cutAfter: 40 }, { cutAfter: 1.5 * MiB }, { cutAfter: MiB + 300 }, { cutAfter: 700_000 }]);
    try {
      const retries: string[] = [];
      const before = fastPathStats.bodies;
      const src = source(`${proxy.url}/data.img`, { ...FAST, onRetry: (m) => retries.push(m) });
      assert.equal(sha256(await collect(await src.openPooled(0))), sha256(DATA));
      assert.equal(retries.length, 4, retries.join('\n'));
      assert.match(retries[0] ?? '', /cannot reach the server \(connection lost inside the response headers\); retrying/);
      // What arrived before a cut is handed on (here 1.5 MiB less the headers), and resumed after.
      assert.match(retries[1] ?? '', /connection (lost|closed early).* at 1\.5 MiB; resuming/);
      assert.equal(fastPathStats.bodies - before, 4, 'every body after the cut headers was read on the fast path');
      const resumes = seen.filter((s) => s.path === '/data.img').slice(-3);
      assert.deepEqual(resumes.map((s) => s.headers['if-range']), [`"${sha256(DATA).slice(0, 8)}"`, `"${sha256(DATA).slice(0, 8)}"`, `"${sha256(DATA).slice(0, 8)}"`]);
      assert.ok(resumes.every((s) => /^bytes=[1-9]\d*-$/.test(s.headers.range ?? '')), 'resumed with Range from the byte reached');
    } finally {
      await proxy.close();
    }
  });

  test('an image whose ETag changed when resuming is refused, not spliced', { timeout: 10_000 }, async () => {
    changing.version = 1;
    changing.bump = true;
    const proxy = await startProxy(Number(new URL(base).port), [{ cutAfter: 2 * MiB }]);
    try {
      const src = source(`${proxy.url}/changing.img`);
      await assert.rejects(collect(await src.openPooled(0)), (e: Error) => {
        assert.ok(e instanceof PermanentError);
        assert.match(e.message, /changed on the server while downloading \(ETag was "c1", now "c2"\); start again/);
        return true;
      });
    } finally {
      await proxy.close();
      changing.bump = false;
    }
  });

  test('a server that ignores Range is refused with the message that says so', { timeout: 10_000 }, async () => {
    const src = source(`${base}/norange.img`);
    await assert.rejects(src.openPooled(1000), /the server cannot resume \(it answered a Range request with the whole file\)/);
  });

  test('a silent connection is resumed after the stall timeout; a consumer that holds a chunk is not a stall', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(Number(new URL(base).port), [{ stallAfter: MiB + 5000 }]);
    try {
      const retries: string[] = [];
      const src = source(`${proxy.url}/data.img`, { ...FAST, stallTimeoutMs: 300, onRetry: (m) => retries.push(m) });
      assert.equal(sha256(await collect(await src.openPooled(0))), sha256(DATA));
      assert.equal(retries.length, 1);
      assert.match(retries[0] ?? '', /no data for 0\.3 s at 1\.0 MiB; resuming/);
      // A slow disk: every chunk held for longer than the stall timeout.
      const slow = source(`${base}/data.img`, { ...FAST, stallTimeoutMs: 150, onRetry: (m) => retries.push(m) });
      const parts: Buffer[] = [];
      for await (const c of await slow.openPooled(0)) {
        parts.push(Buffer.from(c));
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(sha256(Buffer.concat(parts)), sha256(DATA));
      assert.equal(retries.length, 1, retries.join('\n'));
    } finally {
      await proxy.close();
    }
  });

  test('aborting mid-body ends the download and leaves no connection open', { timeout: 10_000 }, async () => {
    const ac = new AbortController();
    const src = source(`${base}/data.img`);
    const chunks = await src.openPooled(0, ac.signal);
    await assert.rejects(
      (async () => {
        for await (const _c of chunks) ac.abort();
      })(),
      { name: 'AbortError' },
    );
    const open = () => new Promise<number>((r) => server.getConnections((_e, n) => r(n)));
    for (let i = 0; i < 50 && (await open()) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await open(), 0);
  });

  test('a chunked answer is read by node\'s client, unchanged', { timeout: 10_000 }, async () => {
    const before = fastPathStats.bodies;
    assert.equal(sha256(await collect(await source(`${base}/chunked.img`).openPooled(0))), sha256(DATA));
    assert.equal(fastPathStats.bodies, before);
  });

  test('redirects are followed (same server and another port); once known, the target is read on the fast path', { timeout: 10_000 }, async () => {
    for (const path of ['/moved.img', '/away.img']) {
      const src = source(`${base}${path}`);
      assert.equal(sha256(await collect(await src.openPooled(0))), sha256(DATA));
      const before = fastPathStats.bodies;
      assert.equal(sha256(await collect(await src.openPooled(123))), sha256(DATA.subarray(123)));
      assert.equal(fastPathStats.bodies - before, 1, `${path}: the resumed request went to the target on the fast path`);
      src.close();
    }
  });

  test('a redirect target that went away: the URL given is asked again, as the stream path does', { timeout: 10_000 }, async () => {
    const gone = http.createServer((req, res) => serve(req, res, DATA, `"${sha256(DATA).slice(0, 8)}"`));
    const goneBase = `http://127.0.0.1:${await listen(gone)}`;
    hop.to = `${goneBase}/data.img`;
    const src = source(`${base}/hop.img`, { ...FAST, retries: 1 });
    await src.size();
    await close(gone);
    hop.to = '/data.img';
    assert.equal(sha256(await collect(await src.openPooled(0))), sha256(DATA));
    src.close();
  });

  test('a missing image fails with the status and URL, as before', { timeout: 10_000 }, async () => {
    await assert.rejects(source(`${base}/nothing.img`).openPooled(0), new RegExp(`HTTP 404 Not Found \\(not here\\) from ${base}/nothing.img`));
  });

  test('basic auth and a bearer token are sent on the fast path, and not to another origin after a redirect', { timeout: 10_000 }, async () => {
    const before = fastPathStats.bodies;
    const basic = source(`${base.replace('//', '//user:s3cr3t@')}/basic.img`);
    assert.equal(sha256(await collect(await basic.openPooled(0))), sha256(DATA));
    assert.equal(fastPathStats.bodies - before, 1);
    const bearer = source(`${base}/data.img`, { ...FAST, token: 'tok-123' });
    await collect(await bearer.openPooled(0));
    assert.equal(seen.at(-1)?.headers.authorization, 'Bearer tok-123');
    other.seen.length = 0;
    const away = source(`${base}/basic-away.img`, { ...FAST, token: 'tok-123', headers: { Cookie: 'c=1', 'X-Line': 'line-7' } });
    const first = await collect(await away.openPooled(0));
    const resumed = await collect(await away.openPooled(5));
    assert.equal(sha256(first), sha256(DATA));
    assert.equal(sha256(resumed), sha256(DATA.subarray(5)));
    assert.equal(other.seen.length, 2);
    for (const h of other.seen) {
      assert.equal(h.authorization, undefined);
      assert.equal(h.cookie, undefined);
      assert.equal(h['x-line'], 'line-7');
    }
  });

  test('a signed request (S3) on the fast path carries the signer\'s headers and one Host header', { timeout: 10_000 }, async () => {
    const before = fastPathStats.bodies;
    const src = new HttpSource({ url: `${base}/data.img`, options: FAST, sign: (r) => ({ ...r.headers, Host: r.url.host, Connection: 'keep-alive', authorization: 'AWS4-HMAC-SHA256 test' }) });
    assert.equal(sha256(await collect(await src.openPooled(0))), sha256(DATA));
    assert.equal(fastPathStats.bodies - before, 1);
    assert.equal(seen.at(-1)?.headers.authorization, 'AWS4-HMAC-SHA256 test');
    assert.equal(seen.at(-1)?.hosts, 1);
  });

  test('a server that does not speak HTTP, or sends huge headers or a bad Content-Length, fails at once and says so', { timeout: 10_000 }, async () => {
    const answers = [
      { answer: 'SSH-2.0-OpenSSH_9.2\r\n\r\n', error: /the server's answer is not HTTP\/1\.x \(status line "SSH-2\.0-OpenSSH_9\.2"\); check the URL and port/ },
      { answer: `HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(MAX_HEAD)}\r\n\r\n`, error: /response headers are larger than 64 KiB/ },
      { answer: 'HTTP/1.1 200 OK\r\ncontent-length: 12abc\r\n\r\nhello', error: /invalid Content-Length "12abc"; it cannot be downloaded safely/ },
      { answer: 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello', error: /invalid Content-Length "5, 6"/ },
    ];
    for (const { answer, error } of answers) {
      const retries: string[] = [];
      const { url, server: raw } = await rawServer((_req, sock) => sock.end(answer));
      try {
        await assert.rejects(source(`${url}/x.img`, { ...FAST, onRetry: (m) => retries.push(m) }).openPooled(0), (e: Error) => {
          assert.ok(e instanceof PermanentError, e.message);
          assert.match(e.message, error);
          assert.match(e.message, new RegExp(`^${url}/x.img: `));
          return true;
        });
        assert.deepEqual(retries, [], 'not retried: it will not get better');
      } finally {
        await close(raw);
      }
    }
  });

  test('a header with a line break in it is refused before anything is sent', { timeout: 10_000 }, async () => {
    const requests = seen.length;
    const src = source(`${base}/data.img`, { ...FAST, headers: { 'X-Line': 'line-7\r\nx-injected: 1' } });
    await assert.rejects(src.openPooled(0), (e: Error) => e instanceof PermanentError && /the header "x-line" contains a line break/.test(e.message));
    assert.equal(seen.length, requests);
  });

  test('a body shorter than its Content-Length is resumed from where it ended', { timeout: 10_000 }, async () => {
    let n = 0;
    const { url, server: raw } = await rawServer((req, sock) => {
      const from = Number(/range: bytes=(\d+)-/i.exec(req)?.[1] ?? 0);
      if (n++ === 0) {
        // Announces all of it, sends 1.5 MiB, closes.
        sock.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\netag: "s1"\r\ncontent-length: ${DATA.length}\r\n\r\n`), DATA.subarray(0, 1.5 * MiB)]));
        return;
      }
      const head = `HTTP/1.1 206 Partial Content\r\netag: "s1"\r\ncontent-range: bytes ${from}-${DATA.length - 1}/${DATA.length}\r\ncontent-length: ${DATA.length - from}\r\n\r\n`;
      sock.end(Buffer.concat([Buffer.from(head), DATA.subarray(from)]));
    });
    try {
      const retries: string[] = [];
      const got = await collect(await source(`${url}/short.img`, { ...FAST, onRetry: (m) => retries.push(m) }).openPooled(0));
      assert.equal(sha256(got), sha256(DATA));
      assert.equal(retries.length, 1);
      assert.match(retries[0] ?? '', /connection closed early at 1\.5 MiB; resuming/);
    } finally {
      await close(raw);
    }
  });
});
