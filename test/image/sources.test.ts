// Image sources against real servers on 127.0.0.1: HTTP(S) with a proxy that drops and
// stalls connections, FTP (ftp-srv), S3 (s3rver), plus files, stdin and bmap discovery.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Readable, Transform, pipeline } from 'node:stream';
import type { PassThrough } from 'node:stream';
import aws4 from 'aws4';
import { FtpSrv, FileSystem } from 'ftp-srv';
import type { IncomingHttpHeaders } from 'node:http';
import { startProxy } from './step-proxy.ts';
import { runningChildren, tempDir } from '../helpers.ts';
import { openSource } from '../../src/image/sources/open.ts';
import type { HttpSource } from '../../src/image/sources/http.ts';
import { FtpSource } from '../../src/image/sources/ftp.ts';
import { s3Source } from '../../src/image/sources/s3.ts';
import { StdinSource } from '../../src/image/sources/stdin.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { openImage } from '../../src/image/open-image.ts';
import { bmapCandidates, findBmap } from '../../src/image/sources/find-bmap.ts';

const MiB = 1024 * 1024;
const DATA = randomBytes(4 * MiB);
const DATA_V2 = randomBytes(4 * MiB);
const LAST_MODIFIED = new Date(Date.now() - 3600_000).toUTCString();
/** Fast retries: the tests exercise the logic, not the patience. */
const FAST = { retryDelayMs: 5, stallTimeoutMs: 2000 };

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
  });
}

function closeServer(server: http.Server | net.Server): Promise<void> {
  if (server instanceof http.Server) server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

// --- an HTTP server with Range, If-Range, ETag and Last-Modified ---

interface Meta {
  etag?: string;
  lastModified?: string;
  ranges: boolean;
}

function serveBody(req: http.IncomingMessage, res: http.ServerResponse, body: Buffer, meta: Meta): void {
  const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream' };
  if (meta.etag) headers.etag = meta.etag;
  if (meta.lastModified) headers['last-modified'] = meta.lastModified;
  if (meta.ranges) headers['accept-ranges'] = 'bytes';
  const range = meta.ranges ? /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '') : null;
  const ifRange = req.headers['if-range'];
  const sameImage = !ifRange || ifRange === meta.etag || ifRange === meta.lastModified;
  if (range && sameImage) {
    const start = Number(range[1]);
    const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1);
    if (start >= body.length) {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${end}/${body.length}`, 'content-length': end - start + 1 });
    res.end(body.subarray(start, end + 1));
    return;
  }
  res.writeHead(200, { ...headers, 'content-length': body.length });
  res.end(req.method === 'HEAD' ? undefined : body);
}

interface Seen {
  path: string;
  headers: IncomingHttpHeaders;
}

function makeHandler(seen: Seen[], changing: { version: number; bump: boolean }) {
  return (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = req.url ?? '/';
    seen.push({ path, headers: req.headers });
    const redirect = (status: number, to: string): void => void res.writeHead(status, { location: to }).end();
    switch (path) {
      case '/img.wic':
        return serveBody(req, res, DATA, { etag: '"v1"', lastModified: LAST_MODIFIED, ranges: true });
      case '/lm-only.wic':
        return serveBody(req, res, DATA, { lastModified: LAST_MODIFIED, ranges: true });
      case '/norange.wic':
        return serveBody(req, res, DATA, { etag: '"n1"', ranges: false });
      case '/changing.wic': {
        const v = changing.version;
        if (changing.bump) changing.version = 2;
        return serveBody(req, res, v === 1 ? DATA : DATA_V2, { etag: `"c${v}"`, ranges: true });
      }
      case '/r301':
        return redirect(301, '/r302');
      case '/r302':
        return redirect(302, '/r307');
      case '/r307':
        return redirect(307, '/img.wic');
      case '/loop':
        return redirect(302, '/loop');
      case '/basic.wic':
        if (req.headers.authorization !== `Basic ${Buffer.from('user:s3cr3t').toString('base64')}`) {
          return void res.writeHead(401, { 'www-authenticate': 'Basic' }).end('who are you?');
        }
        return serveBody(req, res, DATA, { etag: '"v1"', ranges: true });
      case '/bearer.wic':
        if (req.headers.authorization !== 'Bearer tok-123') return void res.writeHead(401).end();
        return serveBody(req, res, DATA, { etag: '"v1"', ranges: true });
      case '/dir/a.wic.bmap':
        return serveBody(req, res, Buffer.from('<bmap/>'), { etag: '"b"', ranges: true });
      default:
        res.writeHead(404).end('not here');
    }
  };
}

describe('http source', () => {
  const seen: Seen[] = [];
  const changing = { version: 1, bump: false };
  const server = http.createServer(makeHandler(seen, changing));
  let port = 0;
  let base = '';
  before(async () => {
    port = await listen(server);
    base = `http://127.0.0.1:${port}`;
  });
  after(() => closeServer(server));

  test('reads the whole image and knows its size', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, FAST);
    assert.equal(await src.size(), DATA.length);
    assert.equal(src.seekable, true);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
  });

  test('opens at an offset with a Range request', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, FAST);
    const got = await collect(await src.open(1_234_567));
    assert.equal(sha256(got), sha256(DATA.subarray(1_234_567)));
    assert.equal(seen.at(-1)?.headers.range, 'bytes=1234567-');
  });

  test('resumes after connections drop at 0.5, 1.3 and 3 MiB', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, [{ cutAfter: 0.5 * MiB }, { cutAfter: 0.8 * MiB }, { cutAfter: 1.7 * MiB }]);
    try {
      const messages: string[] = [];
      const src = await openSource(`${proxy.url}/img.wic`, { ...FAST, onRetry: (m) => messages.push(m) });
      const got = await collect(await src.open(0));
      assert.equal(sha256(got), sha256(DATA));
      assert.equal(messages.length, 3, messages.join('\n'));
      assert.match(messages[0]!, /connection lost.* at 0\.5 MiB; resuming \(attempt 1\/8\)/);
      const resumes = seen.slice(-3);
      for (const r of resumes) {
        assert.match(r.headers.range ?? '', /^bytes=\d+-$/);
        assert.equal(r.headers['if-range'], '"v1"');
      }
      // Each resume starts where the previous connection ended, never at 0.
      const starts = resumes.map((r) => Number(/\d+/.exec(r.headers.range!)![0]));
      assert.ok(starts[0]! > 0.4 * MiB && starts[1]! > 1.2 * MiB && starts[2]! > 2.9 * MiB, String(starts));
    } finally {
      await proxy.close();
    }
  });

  test('resumes a connection that stalls without closing', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, [{ stallAfter: 1 * MiB }]);
    try {
      const messages: string[] = [];
      const src = await openSource(`${proxy.url}/img.wic`, { ...FAST, stallTimeoutMs: 300, onRetry: (m) => messages.push(m) });
      const got = await collect(await src.open(0));
      assert.equal(sha256(got), sha256(DATA));
      assert.equal(messages.length, 1);
      assert.match(messages[0]!, /no data for 0\.3 s at 1\.0 MiB; resuming/);
    } finally {
      await proxy.close();
    }
  });

  test('resumes with If-Range: Last-Modified when the server sends no ETag', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, [{ cutAfter: 1 * MiB }]);
    try {
      const src = await openSource(`${proxy.url}/lm-only.wic`, FAST);
      assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
      assert.equal(seen.at(-1)?.headers['if-range'], LAST_MODIFIED);
    } finally {
      await proxy.close();
    }
  });

  test('an image that changes mid-download fails clearly instead of splicing', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, [{ cutAfter: 1 * MiB }]);
    changing.version = 1;
    changing.bump = true;
    try {
      const src = await openSource(`${proxy.url}/changing.wic`, FAST);
      const stream = await src.open(0);
      await assert.rejects(
        collect(stream),
        /the image changed on the server while downloading \(ETag was "c1", now "c2"\); start again/,
      );
    } finally {
      changing.bump = false;
      await proxy.close();
    }
  });

  test('a server without Range support: a dropped connection fails saying it cannot resume', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, [{ cutAfter: 1 * MiB }]);
    try {
      const src = await openSource(`${proxy.url}/norange.wic`, FAST);
      await assert.rejects(async () => collect(await src.open(0)), /server cannot resume/);
      await assert.rejects(src.open(1000), /server cannot resume/);
      assert.equal(src.seekable, false);
    } finally {
      await proxy.close();
    }
  });

  test('gives up after the retry budget when each connection brings less than 64 KiB, and says where', { timeout: 10_000 }, async () => {
    const proxy = await startProxy(port, Array.from({ length: 10 }, () => ({ cutAfter: 30_000 })));
    try {
      const messages: string[] = [];
      const src = await openSource(`${proxy.url}/img.wic`, { ...FAST, retries: 3, onRetry: (m) => messages.push(m) });
      await assert.rejects(async () => collect(await src.open(0)), /gave up after 3 retries/);
      assert.equal(messages.length, 3);
      assert.match(messages[2]!, /attempt 3\/3/);
    } finally {
      await proxy.close();
    }
  });

  test('follows 301, 302 and 307 and resumes at the final URL', { timeout: 10_000 }, async () => {
    // Redirects may each take a fresh connection; whichever carries the image is cut.
    const proxy = await startProxy(port, [0, 1, 2, 3].map(() => ({ cutAfter: 1 * MiB })));
    try {
      const from = seen.length;
      const src = await openSource(`${proxy.url}/r301`, FAST);
      assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
      const requests = seen.slice(from);
      assert.deepEqual(requests.slice(0, 4).map((s) => s.path), ['/r301', '/r302', '/r307', '/img.wic']);
      const resumes = requests.slice(4);
      assert.ok(resumes.length >= 1);
      for (const r of resumes) {
        assert.equal(r.path, '/img.wic');
        assert.match(r.headers.range ?? '', /^bytes=\d+-$/);
      }
    } finally {
      await proxy.close();
    }
  });

  test('stops after 5 redirects', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/loop`, FAST);
    await assert.rejects(src.open(0), /more than 5 redirects/);
  });

  test('basic auth from the URL arrives and the password never shows', { timeout: 10_000 }, async () => {
    const src = await openSource(`http://user:s3cr3t@127.0.0.1:${port}/basic.wic`, FAST);
    assert.doesNotMatch(src.display, /s3cr3t/);
    assert.match(src.display, /user:\*\*\*@/);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    const wrong = await openSource(`http://user:nope@127.0.0.1:${port}/basic.wic`, FAST);
    await assert.rejects(wrong.open(0), (e: Error) => {
      assert.match(e.message, new RegExp(`HTTP 401 Unauthorized \\(who are you\\?\\) from ${base}/basic.wic`));
      assert.doesNotMatch(e.message, /nope/);
      return true;
    });
  });

  test('a bearer token and extra headers arrive', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/bearer.wic`, { ...FAST, token: 'tok-123', headers: { 'X-Line': 'line-7' } });
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(seen.at(-1)?.headers['x-line'], 'line-7');
  });

  test('a missing image fails with the status and URL', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/nothing.wic`, FAST);
    await assert.rejects(src.open(0), new RegExp(`HTTP 404 Not Found \\(not here\\) from ${base}/nothing.wic`));
  });

  test('memory stays bounded while the consumer does not read', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, FAST);
    const stream = (await src.open(0)) as PassThrough;
    await new Promise((r) => setTimeout(r, 300));
    const buffered = stream.readableLength + stream.writableLength;
    assert.ok(buffered <= 2.5 * MiB, `buffered ${buffered} bytes`);
    assert.equal(sha256(await collect(stream)), sha256(DATA));
  });

  test('aborting the signal ends the download', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, FAST);
    const ac = new AbortController();
    const stream = await src.open(0, ac.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) ac.abort();
      })(),
      { name: 'AbortError' },
    );
    assert.ok(stream.destroyed);
  });

  test('findBmap tries <image>.bmap, then strips one extension at a time', { timeout: 10_000 }, async () => {
    const from = seen.length;
    assert.equal(await findBmap(`${base}/dir/a.wic.zst`, FAST), `${base}/dir/a.wic.bmap`);
    assert.deepEqual(
      seen.slice(from).map((s) => s.path),
      ['/dir/a.wic.zst.bmap', '/dir/a.wic.bmap'],
    );
    assert.equal(await findBmap(`${base}/dir/b.img`, FAST), undefined);
  });
});

describe('https source', () => {
  const dir = tempDir('bootline-tls-');
  let server: https.Server;
  let base = '';
  before(async () => {
    const run = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=bootline test CA', '-keyout', 'ca.key', '-out', 'ca.pem',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
    writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n');
    run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-days', '1', '-extfile', 'ext.cnf', '-out', 'server.pem');
    server = https.createServer(
      { key: readFileSync(join(dir, 'server.key')), cert: readFileSync(join(dir, 'server.pem')) },
      makeHandler([], { version: 1, bump: false }),
    );
    base = `https://127.0.0.1:${await listen(server)}`;
  });
  after(() => closeServer(server));

  test('verifies the server with the given CA bundle', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, { ...FAST, ca: join(dir, 'ca.pem') });
    assert.equal(sha256(await collect(await src.open(2 * MiB))), sha256(DATA.subarray(2 * MiB)));
    (src as HttpSource).close();
  });

  test('without the CA it fails at once, pointing at the ca option', { timeout: 10_000 }, async () => {
    const messages: string[] = [];
    const src = await openSource(`${base}/img.wic`, { ...FAST, onRetry: (m) => messages.push(m) });
    await assert.rejects(src.open(0), /certificate not trusted.*`ca` option/);
    assert.equal(messages.length, 0);
  });
});

describe('ftp source', () => {
  const root = tempDir('bootline-ftp-');
  writeFileSync(join(root, 'img.wic'), DATA);
  writeFileSync(join(root, 'img.wic.zst'), execFileSync('zstd', ['-q', '-c', '-1'], { input: DATA, maxBuffer: 16 * MiB }));
  /** Transfers to cut, by bytes after which the server drops the data connection. */
  const cuts: number[] = [];
  const silent = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, fatal() {}, child: () => silent };

  // Drops the data connection mid-file, like a flaky network: the stream errors and
  // ftp-srv destroys the data socket.
  class CuttingFs extends FileSystem {
    override async read(fileName: string, opts?: { start?: number }): Promise<{ stream: Readable; clientPath: string }> {
      const { stream, clientPath } = (await super.read(fileName, opts)) as { stream: Readable; clientPath: string };
      const cutAt = cuts.shift();
      if (cutAt === undefined) return { stream, clientPath };
      let sent = 0;
      const cutter = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          if (sent + chunk.length < cutAt) {
            sent += chunk.length;
            cb(null, chunk);
            return;
          }
          this.push(chunk.subarray(0, cutAt - sent));
          setTimeout(() => cb(new Error('simulated network drop')), 50);
        },
      });
      pipeline(stream, cutter, () => undefined);
      return { stream: cutter, clientPath };
    }
  }

  let ftp: FtpSrv;
  let base = '';
  before(async () => {
    const probe = net.createServer();
    const port = await listen(probe);
    await closeServer(probe);
    const pasvMin = 40000 + Math.floor(Math.random() * 20000);
    ftp = new FtpSrv({ url: `ftp://127.0.0.1:${port}`, pasv_url: '127.0.0.1', pasv_min: pasvMin, pasv_max: pasvMin + 200, anonymous: true, log: silent });
    ftp.on('login', ({ connection, username, password }, resolve, reject) => {
      if (username === 'anonymous' || (username === 'bob' && password === 'p@ss')) {
        resolve({ fs: new CuttingFs(connection, { root, cwd: '/' }) });
      } else {
        reject(new Error('bad login'));
      }
    });
    await ftp.listen();
    base = `ftp://127.0.0.1:${port}`;
  });
  after(async () => {
    await ftp.close();
  });

  test('reads a file anonymously, with its size from SIZE', { timeout: 10_000 }, async () => {
    const src = await openSource(`${base}/img.wic`, FAST);
    assert.equal(await src.size(), DATA.length);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
  });

  test('opens at an offset with REST, logged in with a user whose password is hidden', { timeout: 10_000 }, async () => {
    const src = await openSource(`ftp://bob:p%40ss@${base.slice(6)}/img.wic`, FAST);
    assert.doesNotMatch(src.display, /p%40ss|p@ss/);
    assert.equal(sha256(await collect(await src.open(3_000_001))), sha256(DATA.subarray(3_000_001)));
  });

  test('resumes after the data connection drops, twice', { timeout: 10_000 }, async () => {
    cuts.push(0.5 * MiB, 0.8 * MiB);
    const messages: string[] = [];
    const src = new FtpSource(`${base}/img.wic`, { ...FAST, onRetry: (m) => messages.push(m) });
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(messages.length, 2, messages.join('\n'));
    assert.match(messages[0]!, /at 0\.5 MiB; resuming \(attempt 1\/8\)/);
    assert.match(messages[1]!, /at 1\.3 MiB; resuming/);
  });

  test('a .zst image goes through zstd as it arrives, across a dropped data connection', { timeout: 10_000 }, async () => {
    cuts.push(1.5 * MiB);
    const messages: string[] = [];
    const src = new FtpSource(`${base}/img.wic.zst`, { ...FAST, onRetry: (m) => messages.push(m) });
    const img = await openImage(src, 0, undefined, undefined);
    assert.equal(img.compression, 'zstd');
    // Each chunk is a view of a reused segment: hashed before the next is asked for.
    const h = createHash('sha256');
    for await (const c of img.chunks) h.update(c);
    assert.equal(h.digest('hex'), sha256(DATA));
    assert.equal(messages.length, 1, messages.join('\n'));
    assert.deepEqual(runningChildren(/zstd/), [], 'zstd has exited');
  });

  test('a missing file and a wrong password fail clearly', { timeout: 10_000 }, async () => {
    await assert.rejects((await openSource(`${base}/nope.wic`, FAST)).open(0), /not found on the server/);
    await assert.rejects((await openSource(`ftp://bob:wrong@${base.slice(6)}/img.wic`, FAST)).open(0), /login failed/);
  });
});

describe('s3 source', () => {
  const dir = tempDir('bootline-s3-');
  const require = createRequire(import.meta.url);
  // s3rver ships no types; the little used here is declared locally.
  const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => {
    run(): Promise<{ port: number }>;
    close(): Promise<void>;
  };
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: 'images' }] });
  const creds = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  const saved = { ...process.env };
  let host = '';

  before(async () => {
    host = `127.0.0.1:${(await server.run()).port}`;
    Object.assign(process.env, { AWS_ENDPOINT_URL: `http://${host}`, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' });
    delete process.env.AWS_ENDPOINT_URL_S3;
    delete process.env.AWS_SESSION_TOKEN;
    // Upload with a signed PUT, as a build pipeline would.
    const put = aws4.sign(
      { service: 's3', region: 'us-east-1', method: 'PUT', host, path: '/images/line%201/a.wic', body: DATA, headers: { 'content-type': 'application/octet-stream' } },
      creds,
    );
    await new Promise<void>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: Number(host.split(':')[1]), method: 'PUT', path: put.path, headers: put.headers }, (res) => {
        res.resume();
        if (res.statusCode === 200) resolve();
        else reject(new Error(`upload: HTTP ${res.statusCode}`));
      });
      req.on('error', reject);
      req.end(DATA);
    });
  });
  after(async () => {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
    await server.close();
  });

  test('reads an object with SigV4, also from an offset', { timeout: 10_000 }, async () => {
    const src = await openSource('s3://images/line 1/a.wic', FAST);
    assert.equal(src.display, 's3://images/line 1/a.wic');
    assert.equal(await src.size(), DATA.length);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(sha256(await collect(await src.open(777_777))), sha256(DATA.subarray(777_777)));
  });

  test('an S3 object over plain http is read into reused buffers too, signed (one Host header)', { timeout: 10_000 }, async () => {
    const src = await openSource('s3://images/line 1/a.wic', FAST);
    const parts: Buffer[] = [];
    for await (const c of await (src as HttpSource).openPooled(777)) parts.push(Buffer.from(c));
    assert.equal(sha256(Buffer.concat(parts)), sha256(DATA.subarray(777)));
  });

  test('resumes a dropped S3 download with freshly signed range requests', { timeout: 10_000 }, async () => {
    const port = Number(host.split(':')[1]);
    const proxy = await startProxy(port, [{ cutAfter: 1.5 * MiB }]);
    try {
      const messages: string[] = [];
      const env = { ...process.env, AWS_ENDPOINT_URL: proxy.url };
      const src = s3Source('s3://images/line 1/a.wic', { ...FAST, onRetry: (m) => messages.push(m) }, env);
      assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
      assert.equal(messages.length, 1);
    } finally {
      await proxy.close();
    }
  });

  test('a presigned URL is a plain http source, Range included', { timeout: 10_000 }, async () => {
    const signed = aws4.sign({ service: 's3', region: 'us-east-1', method: 'GET', host, path: '/images/line%201/a.wic', signQuery: true }, creds);
    const src = await openSource(`http://${host}${signed.path}`, FAST);
    assert.doesNotMatch(src.display, /X-Amz-Signature=[0-9a-f]/);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(sha256(await collect(await src.open(MiB))), sha256(DATA.subarray(MiB)));
  });

  test('missing credentials name the variables to set', () => {
    assert.throws(() => s3Source('s3://images/a.wic', {}, {}), /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  });

  test('a missing key fails with the S3 error code', { timeout: 10_000 }, async () => {
    const src = await openSource('s3://images/none.wic', FAST);
    await assert.rejects(src.open(0), /HTTP 404 Not Found \(NoSuchKey/);
  });
});

describe('local sources', () => {
  const dir = tempDir('bootline-src-');
  const image = join(dir, 'a.wic.zst');
  writeFileSync(image, DATA);

  test('a path and a file:// URL read from any offset', async () => {
    const src = await openSource(image);
    assert.equal(src.seekable, true);
    assert.equal(await src.size(), DATA.length);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    const viaUrl = await openSource(pathToFileURL(image).href);
    assert.ok(viaUrl instanceof FileSource);
    assert.equal(sha256(await collect(await viaUrl.open(4321))), sha256(DATA.subarray(4321)));
  });

  test('a missing path and an unknown scheme fail clearly', async () => {
    await assert.rejects(openSource(join(dir, 'nope.wic')), new RegExp(`image not found: ${dir}/nope.wic \\(no such file\\)`));
    await assert.rejects(openSource('gopher://host/a.wic'), /unsupported image source .*supported: - \(stdin\), a local path, file:\/\/, http:\/\/, https:\/\/, ftp:\/\/, s3:\/\//);
  });

  test('stdin is read once, from the start only', async () => {
    const src = new StdinSource(Readable.from([DATA.subarray(0, 1000), DATA.subarray(1000, 5000)]));
    assert.equal(src.seekable, false);
    await assert.rejects(src.open(10), /stdin cannot seek/);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA.subarray(0, 5000)));
    await assert.rejects(src.open(0), /only once/);
    assert.equal((await openSource('-')).display, 'stdin');
  });

  test('findBmap follows bmaptool: <image>.bmap, then one extension less at a time', async () => {
    assert.deepEqual(bmapCandidates('/x/a.wic.zst'), ['/x/a.wic.zst.bmap', '/x/a.wic.bmap', '/x/a.bmap']);
    assert.deepEqual(bmapCandidates('/x.d/.hidden'), ['/x.d/.hidden.bmap']);
    assert.equal(await findBmap(image), undefined);
    writeFileSync(join(dir, 'a.bmap'), '<bmap/>');
    assert.equal(await findBmap(image), join(dir, 'a.bmap'));
    writeFileSync(join(dir, 'a.wic.bmap'), '<bmap/>');
    assert.equal(await findBmap(image), join(dir, 'a.wic.bmap'));
    assert.equal(await findBmap('-'), undefined);
  });

  test('a file source streams from a real read stream', async () => {
    // Sanity check that the source is not holding the whole file: chunks are 1 MiB at most.
    const stream = await new FileSource(image).open(0);
    let largest = 0;
    for await (const chunk of stream) largest = Math.max(largest, (chunk as Buffer).length);
    assert.ok(largest <= MiB);
  });
});
