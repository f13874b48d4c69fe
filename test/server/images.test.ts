// Image serving and registration against a real Fastify on 127.0.0.1, driven over HTTP:
// full and ranged downloads compared byte for byte, conditional requests, traversal and
// symlink escapes, S3-hosted images redirected to presigned URLs followed against s3rver,
// and registration checked with sha256sum and a real `bmaptool copy`.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import http from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import aws4 from 'aws4';
import fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import { tempDir } from '../helpers.ts';
import type { Image } from '../../src/api/admin.ts';
import { imageRoutes, parseRange, presignS3Url, s3ObjectOf } from '../../src/server/images/serve.ts';
import { checkName, ImagePathError, imageFilePath, parseImageUrl } from '../../src/server/images/paths.ts';
import { defaultImageName, registerImage, RegisterImageError } from '../../src/server/images/register.ts';
import { generateKeyPair, verify, verifySha256Signature } from '../../src/image/signature.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';
import { openSource } from '../../src/image/sources/open.ts';

const MiB = 1024 * 1024;
const SIZE = 3 * MiB + 12345;
const DATA = randomBytes(SIZE);
const SECRET = 'TOP-SECRET-OUTSIDE-THE-DATA-DIR';

/** For clients of the server in this process: a synchronous child would block its event loop. */
const run = promisify(execFile);
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sha256sum = (path: string): string => execFileSync('sha256sum', [path], { encoding: 'utf8' }).split(' ')[0] as string;

interface Res {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request with the path sent exactly as given (node's client does not normalize it). */
function request(port: number, path: string, headers: Record<string, string> = {}, method = 'GET', host = '127.0.0.1'): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path, method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Res> {
  const u = new URL(url);
  return request(Number(u.port), u.pathname + u.search, headers, method, u.hostname);
}

/**
 * Checks a SigV4 query-signed S3 URL from scratch (AWS's "Authenticating Requests: Using Query
 * Parameters", unsigned payload, only `host` signed): undefined when valid for `method`.
 */
function sigV4QueryProblem(url: string, method: string, secret: string): string | undefined {
  const u = new URL(url);
  const q = u.searchParams;
  const amzDate = q.get('X-Amz-Date') ?? '';
  const [akid, date, region, service, terminator] = (q.get('X-Amz-Credential') ?? '').split('/');
  if (q.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') return 'algorithm';
  if (!akid || service !== 's3' || terminator !== 'aws4_request' || date !== amzDate.slice(0, 8)) return 'credential scope';
  if (q.get('X-Amz-SignedHeaders') !== 'host') return 'signed headers';
  const age = (Date.now() - Date.parse(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`)) / 1000;
  if (!(age > -60 && age < Number(q.get('X-Amz-Expires')))) return 'expired';
  const enc = (x: string) => encodeURIComponent(x).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const query = [...q.entries()]
    .filter(([k]) => k !== 'X-Amz-Signature')
    .map(([k, v]) => [enc(k), enc(v)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonical = [method, u.pathname, query, `host:${u.host}`, '', 'host', 'UNSIGNED-PAYLOAD'].join('\n');
  const scope = `${date}/${region}/s3/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(Buffer.from(canonical))].join('\n');
  const hmac = (key: Buffer | string, data: string) => createHmac('sha256', key).update(data).digest();
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region ?? ''), 's3'), 'aws4_request');
  return createHmac('sha256', key).update(toSign).digest('hex') === q.get('X-Amz-Signature') ? undefined : 'signature does not match';
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function start(app: FastifyInstance): Promise<number> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return (app.server.address() as AddressInfo).port;
}

/** A sparse raw image: data at a few places, holes elsewhere, a partial last block. */
function makeSparse(path: string, size = 8 * MiB + 1000): Buffer {
  const fd = openSync(path, 'w');
  const content = Buffer.alloc(size);
  try {
    ftruncateSync(fd, size);
    for (const [at, len] of [
      [0, 8192],
      [MiB + 4096, 70000],
      [5 * MiB, 4096],
      [size - 500, 500],
    ] as const) {
      const chunk = randomBytes(len);
      writeSync(fd, chunk, 0, len, at);
      chunk.copy(content, at);
    }
  } finally {
    closeSync(fd);
  }
  return content;
}

describe('paths', () => {
  test('names: valid ones pass, traversal, slashes, NUL and encodings are refused', () => {
    for (const ok of ['disk.img', 'a', 'line-a_1.2', 'disk.wic.zst.bmap.ed25519.sig']) assert.equal(checkName(ok), ok);
    const bad: [string, RegExp][] = [
      ['', /empty/],
      ['..', /"\.\."/],
      ['a..b', /"\.\."/],
      ['a/b', /slash/],
      ['a\\b', /slash/],
      ['a\0b', /NUL/],
      ['%2e%2e', /percent-encoded/],
      ['.hidden', /not valid/],
      ['a b', /not valid/],
      ['x'.repeat(129), /not valid/],
    ];
    for (const [name, re] of bad) {
      assert.throws(() => checkName(name), (err: unknown) => err instanceof ImagePathError && err.statusCode === 400 && re.test(err.message), JSON.stringify(name));
    }
  });

  test('raw URLs are checked before decoding', () => {
    assert.deepEqual(parseImageUrl('/images/line-a/disk.wic.zst?x=1'), { name: 'line-a', file: 'disk.wic.zst' });
    for (const raw of ['/images/%2e%2e/x', '/images/a/..%2fsecret', '/images/a/%2Fetc%2Fpasswd', '/images/a/b%00', '/images/a/', '/other/a/b']) {
      assert.throws(() => parseImageUrl(raw), ImagePathError, raw);
    }
    assert.equal(imageFilePath('/data', 'line-a', 'disk.img'), '/data/images/line-a/disk.img');
    assert.throws(() => imageFilePath('/data', '..', 'x'), /traversal/);
  });

  test('Range parsing', () => {
    assert.deepEqual(parseRange('bytes=0-99', 1000), { kind: 'range', start: 0, end: 99 });
    assert.deepEqual(parseRange('bytes=900-', 1000), { kind: 'range', start: 900, end: 999 });
    assert.deepEqual(parseRange('bytes=-100', 1000), { kind: 'range', start: 900, end: 999 });
    assert.deepEqual(parseRange('bytes=-5000', 1000), { kind: 'range', start: 0, end: 999 });
    assert.deepEqual(parseRange('bytes=990-5000', 1000), { kind: 'range', start: 990, end: 999 });
    assert.deepEqual(parseRange('bytes=1000-', 1000), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=-0', 1000), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=0-0', 0), { kind: 'unsatisfiable' });
    // Not one valid range: the whole file.
    for (const h of ['bytes=0-1,5-6', 'bytes=5-1', 'items=0-1', 'bytes=-', 'bytes=abc']) assert.deepEqual(parseRange(h, 1000), { kind: 'none' }, h);
  });

  test('S3 locations and default image names', () => {
    assert.deepEqual(s3ObjectOf('s3://bucket/line-a/', 'disk.img'), { bucket: 'bucket', key: 'line-a/disk.img' });
    assert.deepEqual(s3ObjectOf('s3://bucket', 'disk.img'), { bucket: 'bucket', key: 'disk.img' });
    assert.equal(defaultImageName('/x/disk.wic.zst'), 'disk');
    assert.equal(defaultImageName('plain'), 'plain');
    assert.throws(() => presignS3Url('s3://b', 'f', 'GET', {}, {}), /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
  });
});

describe('serving from the data dir', () => {
  const dir = tempDir('bootline-images-');
  const dataDir = join(dir, 'data');
  const imgDir = join(dataDir, 'images', 'demo');
  const app = fastify({ logger: false });
  let port = 0;
  let served = 0;

  before(async () => {
    mkdirSync(imgDir, { recursive: true });
    writeFileSync(join(imgDir, 'disk.img'), DATA);
    writeFileSync(join(imgDir, 'empty.img'), '');
    writeFileSync(join(dir, 'secret.txt'), SECRET);
    mkdirSync(join(dir, 'outside'));
    writeFileSync(join(dir, 'outside', 'secret.txt'), SECRET);
    symlinkSync(join(dir, 'secret.txt'), join(imgDir, 'escape.img'));
    symlinkSync('../../../secret.txt', join(imgDir, 'relative-escape.img'));
    symlinkSync('disk.img', join(imgDir, 'alias.img'));
    symlinkSync(join(dir, 'outside'), join(dataDir, 'images', 'linked'));
    mkdirSync(join(imgDir, 'subdir'));
    await app.register(imageRoutes, { dataDir, onBytes: (n) => (served += n) });
    port = await start(app);
  });
  after(() => app.close());

  test('a full GET is the file, with the headers a resuming client needs', async () => {
    served = 0;
    const r = await request(port, '/images/demo/disk.img');
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(DATA), 'body differs from the file');
    assert.equal(r.headers['content-length'], String(SIZE));
    assert.equal(r.headers['accept-ranges'], 'bytes');
    assert.equal(r.headers['content-type'], 'application/octet-stream');
    assert.match(r.headers.etag ?? '', /^"[0-9a-z-]+"$/, 'a strong ETag');
    assert.equal(new Date(r.headers['last-modified'] ?? '').getTime(), Math.floor(statSync(join(imgDir, 'disk.img')).mtimeMs / 1000) * 1000);
    // Counted when the server's read stream closes, which may be just after the client has it all.
    for (let i = 0; i < 100 && served < SIZE; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(served, SIZE, 'bytes served are counted');
  });

  test('curl downloads the same bytes, and resumes with -C -', async () => {
    const out = join(dir, 'curl.out');
    writeFileSync(out, DATA.subarray(0, 1_000_000));
    await run('curl', ['-sSf', '-C', '-', '-o', out, `http://127.0.0.1:${port}/images/demo/disk.img`]);
    assert.equal(sha256(readFileSync(out)), sha256(DATA));
  });

  test('HEAD: the same headers, no body', async () => {
    const g = await request(port, '/images/demo/disk.img', { range: 'bytes=0-0' });
    const r = await request(port, '/images/demo/disk.img', {}, 'HEAD');
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers['content-length'], String(SIZE));
    assert.equal(r.headers.etag, g.headers.etag);
    assert.equal(r.headers['last-modified'], g.headers['last-modified']);
    const ranged = await request(port, '/images/demo/disk.img', { range: 'bytes=10-19' }, 'HEAD');
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers['content-length'], '10');
    assert.equal(ranged.headers['content-range'], `bytes 10-19/${SIZE}`);
    assert.equal(ranged.body.length, 0);
  });

  test('single ranges at several offsets are the file slice, byte for byte', async () => {
    const cases: [string, number, number][] = [
      ['bytes=0-0', 0, 0],
      ['bytes=0-99', 0, 99],
      ['bytes=4095-4096', 4095, 4096],
      [`bytes=${MiB - 7}-${2 * MiB + 5}`, MiB - 7, 2 * MiB + 5],
      [`bytes=${SIZE - 1}-${SIZE - 1}`, SIZE - 1, SIZE - 1],
      [`bytes=${SIZE - 10}-${SIZE + 1000}`, SIZE - 10, SIZE - 1],
      ['bytes=1234567-', 1234567, SIZE - 1],
      ['bytes=-100', SIZE - 100, SIZE - 1],
      [`bytes=-${SIZE * 2}`, 0, SIZE - 1],
    ];
    for (const [range, first, last] of cases) {
      const r = await request(port, '/images/demo/disk.img', { range });
      assert.equal(r.status, 206, range);
      assert.equal(r.headers['content-range'], `bytes ${first}-${last}/${SIZE}`, range);
      assert.equal(r.headers['content-length'], String(last - first + 1), range);
      assert.ok(r.body.equals(DATA.subarray(first, last + 1)), `${range}: body differs from the slice`);
    }
  });

  test('unsatisfiable ranges: 416 with bytes */size', async () => {
    for (const range of [`bytes=${SIZE}-`, `bytes=${SIZE + 5}-${SIZE + 10}`, 'bytes=-0']) {
      const r = await request(port, '/images/demo/disk.img', { range });
      assert.equal(r.status, 416, range);
      assert.equal(r.headers['content-range'], `bytes */${SIZE}`, range);
    }
    const empty = await request(port, '/images/demo/empty.img', { range: 'bytes=0-' });
    assert.equal(empty.status, 416);
    assert.equal(empty.headers['content-range'], 'bytes */0');
    const whole = await request(port, '/images/demo/empty.img');
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['content-length'], '0');
  });

  test('several ranges, or a range that is not valid, get the whole file', async () => {
    for (const range of ['bytes=0-9,20-29', 'bytes=9-1', 'lines=1-2']) {
      const r = await request(port, '/images/demo/disk.img', { range });
      assert.equal(r.status, 200, range);
      assert.ok(r.body.equals(DATA), range);
    }
  });

  test('If-Range: a matching ETag or date gives the range, a stale one the whole file', async () => {
    const { headers } = await request(port, '/images/demo/disk.img', {}, 'HEAD');
    const etag = headers.etag as string;
    const lm = headers['last-modified'] as string;
    const range = 'bytes=100-199';
    const match = await request(port, '/images/demo/disk.img', { range, 'if-range': etag });
    assert.equal(match.status, 206);
    assert.ok(match.body.equals(DATA.subarray(100, 200)));
    const byDate = await request(port, '/images/demo/disk.img', { range, 'if-range': lm });
    assert.equal(byDate.status, 206);
    for (const stale of ['"0-0-0"', `W/${etag}`, new Date(Date.parse(lm) - 1000).toUTCString()]) {
      const r = await request(port, '/images/demo/disk.img', { range, 'if-range': stale });
      assert.equal(r.status, 200, stale);
      assert.ok(r.body.equals(DATA), stale);
    }
  });

  test('If-None-Match: 304 for the current ETag, 200 otherwise', async () => {
    const { headers } = await request(port, '/images/demo/disk.img', {}, 'HEAD');
    const etag = headers.etag as string;
    const r = await request(port, '/images/demo/disk.img', { 'if-none-match': `"other", ${etag}` });
    assert.equal(r.status, 304);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers.etag, etag);
    assert.equal((await request(port, '/images/demo/disk.img', { 'if-none-match': '"other"' })).status, 200);
    assert.equal((await request(port, '/images/demo/disk.img', { 'if-modified-since': headers['last-modified'] as string })).status, 304);
    assert.equal((await request(port, '/images/demo/disk.img', { 'if-match': '"other"' })).status, 412);
  });

  test('the ETag changes when the file is replaced', async () => {
    writeFileSync(join(imgDir, 'changing.img'), 'one');
    const a = await request(port, '/images/demo/changing.img', {}, 'HEAD');
    writeFileSync(join(imgDir, 'changing.img.new'), 'two');
    execFileSync('mv', [join(imgDir, 'changing.img.new'), join(imgDir, 'changing.img')]);
    const b = await request(port, '/images/demo/changing.img', { range: 'bytes=0-0', 'if-range': a.headers.etag as string });
    assert.notEqual(b.headers.etag, a.headers.etag);
    assert.equal(b.status, 200, 'a stale If-Range gets the new file whole');
    assert.equal(b.body.toString(), 'two');
  });

  test('a symlink to a file in the same image directory is served', async () => {
    const r = await request(port, '/images/demo/alias.img', { range: 'bytes=5-9' });
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(DATA.subarray(5, 10)));
  });

  test('traversal, encodings, NUL, absolute paths and symlink escapes are refused', async () => {
    const attempts: [string, number?][] = [
      ['/images/../secret.txt'],
      ['/images/demo/../../../secret.txt'],
      ['/images/demo/..', 400],
      ['/images/../../secret.txt'],
      ['/images/%2e%2e/secret.txt', 400],
      ['/images/demo/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt', 400],
      ['/images/demo/..%2f..%2f..%2fsecret.txt', 400],
      ['/images/demo/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt', 400],
      ['/images/demo/..%5c..%5csecret.txt', 400],
      ['/images/demo/%2fetc%2fpasswd', 400],
      ['/images/demo//etc/passwd'],
      ['/images//etc/passwd'],
      ['/images/demo/disk.img%00.txt', 400],
      ['/images/demo/%00', 400],
      ['/images/demo/escape.img', 403],
      ['/images/demo/relative-escape.img', 403],
      ['/images/linked/secret.txt', 403],
      ['/images/demo/subdir', 404],
      ['/images/demo/missing.img', 404],
      ['/images/nothing/disk.img', 404],
      [`/images/demo/${'a'.repeat(200)}`],
      [`/images/demo/${'a'.repeat(129)}`],
    ];
    for (const [path, want] of attempts) {
      for (const method of ['GET', 'HEAD']) {
        const r = await request(port, path, {}, method);
        assert.ok(r.status >= 400 && r.status < 500, `${method} ${path}: ${r.status}`);
        if (want !== undefined) assert.equal(r.status, want, `${method} ${path}`);
        assert.ok(!r.body.toString('latin1').includes(SECRET), `${method} ${path} leaked the file outside`);
      }
    }
    const body = JSON.parse((await request(port, '/images/demo/escape.img')).body.toString()) as { error: string; message: string };
    assert.equal(body.error, 'forbidden');
    assert.match(body.message, /outside the image's directory/);
    // curl, told not to normalize the path.
    const curl = await run('curl', ['-s', '--path-as-is', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/images/demo/../../../secret.txt`]);
    assert.match(curl.stdout, /^4\d\d$/);
  });

  test("the agent's HTTP source reads it, also from an offset", async () => {
    const src = await openSource(`http://127.0.0.1:${port}/images/demo/disk.img`, { retryDelayMs: 5 });
    assert.equal(await src.size(), SIZE);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(sha256(await collect(await src.open(777_777))), sha256(DATA.subarray(777_777)));
  });
});

describe('registration', () => {
  const dir = tempDir('bootline-register-');
  const dataDir = join(dir, 'data');
  const app = fastify({ logger: false });
  let port = 0;
  const keys = generateKeyPair();
  const keyFile = join(dir, 'sign.key');
  writeFileSync(keyFile, keys.privatePem);

  before(async () => {
    mkdirSync(dataDir);
    await app.register(imageRoutes, { dataDir });
    port = await start(app);
  });
  after(() => app.close());

  test('a raw sparse file: sha256 as sha256sum says, a bmap created that bmaptool copies with, holes kept', async () => {
    const src = join(dir, 'sparse.img');
    const content = makeSparse(src);
    const image = await registerImage({ dataDir, file: src, version: '1.0', now: new Date('2024-01-02T03:04:05Z') });
    assert.equal(image.name, 'sparse');
    assert.equal(image.version, '1.0');
    assert.equal(image.location, 'local');
    assert.equal(image.createdAt, '2024-01-02T03:04:05.000Z');
    assert.equal(image.files.length, 1);
    const f = image.files[0]!;
    assert.deepEqual({ name: f.name, size: f.size, bmap: f.bmap }, { name: 'sparse.img', size: content.length, bmap: 'sparse.img.bmap' });
    const stored = join(dataDir, 'images', 'sparse', 'sparse.img');
    assert.equal(f.sha256, sha256sum(src));
    assert.equal(f.sha256, sha256sum(stored));
    assert.equal(statSync(stored).ino, statSync(src).ino, 'hard-linked on the same file system');
    const bmapPath = join(dataDir, 'images', 'sparse', 'sparse.img.bmap');
    const bmap = parseBmap(readFileSync(bmapPath, 'utf8'), bmapPath);
    assert.equal(bmap.imageSize, content.length);
    assert.ok(bmap.mappedBlocksCount < bmap.blocksCount / 4, `mapped ${bmap.mappedBlocksCount} of ${bmap.blocksCount}`);
    assert.deepEqual(readdirSync(join(dataDir, 'images', 'sparse')).sort(), ['sparse.img', 'sparse.img.bmap']);

    // Downloaded from the server, then written by the real bmaptool with the served bmap.
    const img = await request(port, '/images/sparse/sparse.img');
    const map = await request(port, '/images/sparse/sparse.img.bmap');
    assert.equal(img.status, 200);
    assert.equal(map.headers['content-type'], 'application/xml');
    writeFileSync(join(dir, 'dl.img'), img.body);
    writeFileSync(join(dir, 'dl.img.bmap'), map.body);
    const dest = join(dir, 'bmaptool-dest.img');
    const r = spawnSync('bmaptool', ['copy', '--bmap', join(dir, 'dl.img.bmap'), join(dir, 'dl.img'), dest], { encoding: 'utf8' });
    assert.equal(r.status, 0, `bmaptool copy failed: ${r.stderr}`);
    assert.equal(sha256(readFileSync(dest)), f.sha256);
    assert.ok(readFileSync(dest).equals(content));
  });

  // /dev/shm is tmpfs: a different file system from the temp dir's, so no hard link.
  const shm = '/dev/shm';
  const sameFs = !existsSync(shm) || statSync(shm).dev === statSync(dir).dev;
  test('a copy (another file system) keeps the holes and the same sha256', { skip: sameFs ? 'needs /dev/shm on another file system' : false }, async () => {
    const src = join(shm, `bootline-test-${process.pid}.img`);
    try {
      const content = makeSparse(src, 16 * MiB);
      const image = await registerImage({ dataDir, file: src, name: 'copied' });
      const stored = join(dataDir, 'images', 'copied', `bootline-test-${process.pid}.img`);
      assert.notEqual(statSync(stored).ino, statSync(src).ino);
      assert.equal(image.files[0]!.sha256, sha256(content));
      assert.equal(image.files[0]!.sha256, sha256sum(stored));
      assert.ok(statSync(stored).blocks * 512 < 4 * MiB, `holes kept (${statSync(stored).blocks * 512} bytes allocated)`);
      assert.ok(image.files[0]!.bmap);
    } finally {
      execFileSync('rm', ['-f', src]);
    }
  });

  test('with a sign key: the signature is over the bmap, as `bootline image sign` makes it', async () => {
    const src = join(dir, 'signed.img');
    makeSparse(src);
    const image = await registerImage({ dataDir, file: src, signKey: keyFile, move: true });
    assert.ok(!existsSync(src), 'moved');
    const f = image.files[0]!;
    assert.equal(f.signature, 'signed.img.bmap.ed25519.sig');
    const d = join(dataDir, 'images', 'signed');
    const bmapBytes = readFileSync(join(d, f.bmap!));
    const sig = readFileSync(join(d, f.signature!), 'utf8');
    assert.equal(verify(bmapBytes, sig, [keys.publicPem], 'sig').signed, 'bmap');
    const served = await request(port, `/images/signed/${f.signature}`);
    assert.equal(served.body.toString(), sig);
  });

  test('a compressed file: no bmap created, sha256 of the file, signature over the decompressed sha256', async () => {
    const raw = randomBytes(300_000);
    const src = join(dir, 'disk.wic.gz');
    writeFileSync(src, gzipSync(raw));
    const image = await registerImage({ dataDir, file: src, name: 'line-a', signKey: keys.privatePem });
    const f = image.files[0]!;
    assert.equal(image.name, 'line-a');
    assert.equal(f.name, 'disk.wic.gz');
    assert.equal(f.bmap, undefined);
    assert.equal(f.sha256, sha256sum(src));
    assert.equal(f.signature, 'disk.wic.gz.ed25519.sig');
    const sig = readFileSync(join(dataDir, 'images', 'line-a', f.signature!), 'utf8');
    assert.equal(verifySha256Signature(sig, [keys.publicPem], 'sig').sha256, sha256(raw));
    assert.deepEqual(readdirSync(join(dataDir, 'images', 'line-a')).sort(), ['disk.wic.gz', 'disk.wic.gz.ed25519.sig']);
    const r = await request(port, '/images/line-a/disk.wic.gz', { range: 'bytes=-10' });
    assert.ok(r.body.equals(readFileSync(src).subarray(-10)));
  });

  test("a bmap beside the file is found as bmaptool finds it, keeps its name, and its signature comes along", async () => {
    const srcRaw = join(dir, 'beside.img');
    makeSparse(srcRaw);
    execFileSync('bmaptool', ['create', '-o', join(dir, 'beside.bmap'), srcRaw]);
    writeFileSync(join(dir, 'beside.bmap.ed25519.sig'), 'carried');
    const image = await registerImage({ dataDir, file: srcRaw });
    const f = image.files[0]!;
    assert.equal(f.bmap, 'beside.bmap');
    assert.equal(f.signature, 'beside.bmap.ed25519.sig');
    assert.ok(readFileSync(join(dataDir, 'images', 'beside', 'beside.bmap')).equals(readFileSync(join(dir, 'beside.bmap'))));
    // A given bmap with a name the finder would not try is stored as <file>.bmap.
    const other = await registerImage({ dataDir, file: srcRaw, name: 'beside2', bmap: join(dir, 'beside.bmap') });
    assert.equal(other.files[0]!.bmap, 'beside.bmap');
    execFileSync('cp', [join(dir, 'beside.bmap'), join(dir, 'odd-name.xml')]);
    const third = await registerImage({ dataDir, file: srcRaw, name: 'beside3', bmap: join(dir, 'odd-name.xml') });
    assert.equal(third.files[0]!.bmap, 'beside.img.bmap');
  });

  test('a bmap of another image is refused, leaving nothing', async () => {
    const src = join(dir, 'mismatch.img');
    writeFileSync(src, randomBytes(10_000));
    await assert.rejects(registerImage({ dataDir, file: src, bmap: join(dir, 'beside.bmap') }), /describes an image of \d+ bytes/);
    assert.ok(!existsSync(join(dataDir, 'images', 'mismatch')));
  });

  test('bad names, missing files and a failure midway leave no files behind', async () => {
    const src = join(dir, 'ok.img');
    writeFileSync(src, randomBytes(5000));
    const before = readdirSync(join(dataDir, 'images')).sort();
    for (const name of ['..', '../escape', 'a/b', '', '.hidden', 'a\0b', '%2e%2e']) {
      await assert.rejects(registerImage({ dataDir, file: src, name }), RegisterImageError, JSON.stringify(name));
    }
    await assert.rejects(registerImage({ dataDir, file: join(dir, 'nope.img') }), /image file not found/);
    writeFileSync(join(dir, 'bad name.img'), 'x');
    await assert.rejects(registerImage({ dataDir, file: join(dir, 'bad name.img'), name: 'fine' }), /rename the file/);
    // Fails after the image was linked in: the key is no key.
    writeFileSync(join(dir, 'garbage.key'), 'not a key');
    await assert.rejects(registerImage({ dataDir, file: src, name: 'midway', signKey: join(dir, 'garbage.key') }), /private key/);
    assert.deepEqual(readdirSync(join(dataDir, 'images')).sort(), before);
    assert.ok(!existsSync(join(dataDir, 'images', 'midway')));
  });

  test('an existing file with different content is refused unless replace; the same content registers again', async () => {
    const src = join(dir, 'v.img');
    writeFileSync(src, 'version one');
    const first = await registerImage({ dataDir, file: src, name: 'versions', bmap: false });
    const again = await registerImage({ dataDir, file: src, name: 'versions', existing: first });
    assert.equal(again.files[0]!.sha256, first.files[0]!.sha256);
    const other = join(dir, 'other', 'v.img');
    mkdirSync(join(dir, 'other'));
    writeFileSync(other, 'version two');
    await assert.rejects(registerImage({ dataDir, file: other, name: 'versions' }), /different content.*replace/);
    assert.equal(readFileSync(join(dataDir, 'images', 'versions', 'v.img'), 'utf8'), 'version one');
    assert.deepEqual(readdirSync(join(dataDir, 'images', 'versions')), ['v.img'], 'no temporary file left');
    const replaced = await registerImage({ dataDir, file: other, name: 'versions', replace: true, existing: first });
    assert.equal(replaced.files[0]!.sha256, sha256(Buffer.from('version two')));
    assert.equal(readFileSync(join(dataDir, 'images', 'versions', 'v.img'), 'utf8'), 'version two');
    // A second file of the image is added to the record given.
    const second = join(dir, 'w.img');
    writeFileSync(second, 'another file');
    const both = await registerImage({ dataDir, file: second, name: 'versions', existing: replaced });
    assert.deepEqual(both.files.map((f) => f.name), ['v.img', 'w.img']);
  });
});

describe('with a store: registered files only, S3 images redirected to presigned URLs', () => {
  const dir = tempDir('bootline-images-s3-');
  const dataDir = join(dir, 'data');
  const require = createRequire(import.meta.url);
  // s3rver ships no types; the little used here is declared locally.
  const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => { run(): Promise<{ port: number }>; close(): Promise<void> };
  const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 's3'), configureBuckets: [{ name: 'images' }] });
  const creds = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
  const images = new Map<string, Image>();
  const store = { getImage: async (name: string) => images.get(name) };
  const app = fastify({ logger: false });
  let port = 0;
  let s3host = '';

  before(async () => {
    s3host = `127.0.0.1:${(await s3.run()).port}`;
    for (const [key, body] of [
      ['/images/line-b/disk.img', DATA],
      ['/images/line-b/disk.img.bmap', Buffer.from('<bmap/>')],
    ] as const) {
      const put = aws4.sign({ service: 's3', region: 'us-east-1', method: 'PUT', host: s3host, path: key, body, headers: { 'content-type': 'application/octet-stream' } }, creds);
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: Number(s3host.split(':')[1]), method: 'PUT', path: put.path, headers: put.headers }, (res) => {
          res.resume();
          if (res.statusCode === 200) resolve();
          else reject(new Error(`upload: HTTP ${res.statusCode}`));
        });
        req.on('error', reject);
        req.end(body);
      });
    }
    mkdirSync(join(dataDir, 'images', 'local-a'), { recursive: true });
    writeFileSync(join(dataDir, 'images', 'local-a', 'disk.img'), DATA);
    writeFileSync(join(dataDir, 'images', 'local-a', 'unlisted.img'), 'not registered');
    const createdAt = new Date().toISOString();
    images.set('local-a', { name: 'local-a', files: [{ name: 'disk.img', size: SIZE, sha256: sha256(DATA) }], location: 'local', createdAt });
    images.set('line-b', { name: 'line-b', files: [{ name: 'disk.img', size: SIZE, sha256: sha256(DATA), bmap: 'disk.img.bmap' }], location: 's3://images/line-b', createdAt });
    // Credentials and endpoint from the configuration (the environment is the default).
    await app.register(imageRoutes, { dataDir, store, s3: { endpoint: `http://${s3host}`, region: 'us-east-1', ...creds, expiresSeconds: 600 }, env: {} });
    port = await start(app);
  });
  after(async () => {
    await app.close();
    await s3.close();
  });

  test('a registered local image is served; its unlisted files and unregistered images are not', async () => {
    const r = await request(port, '/images/local-a/disk.img', { range: 'bytes=100-200' });
    assert.equal(r.status, 206);
    assert.ok(r.body.equals(DATA.subarray(100, 201)));
    assert.equal((await request(port, '/images/local-a/unlisted.img')).status, 404);
    assert.equal((await request(port, '/images/nobody/disk.img')).status, 404);
  });

  test('GET redirects to a presigned URL that s3rver accepts: same bytes, ranges too', async () => {
    const r = await request(port, '/images/line-b/disk.img');
    assert.equal(r.status, 307);
    const location = r.headers.location as string;
    const u = new URL(location);
    assert.equal(u.host, s3host);
    assert.equal(u.pathname, '/images/line-b/disk.img');
    assert.equal(u.searchParams.get('X-Amz-Algorithm'), 'AWS4-HMAC-SHA256');
    assert.equal(u.searchParams.get('X-Amz-Expires'), '600');
    assert.match(u.searchParams.get('X-Amz-Signature') ?? '', /^[0-9a-f]{64}$/);
    const full = await get(location);
    assert.equal(full.status, 200);
    assert.ok(full.body.equals(DATA), `the object differs from the image (${full.body.length} bytes: ${full.body.subarray(0, 300).toString()})`);
    // (Not a suffix range: s3rver 3.7 answers `bytes=-100` with bytes 0-100.)
    const part = await get(location, { range: 'bytes=1000000-1999999' });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(DATA.subarray(1000000, 2000000)), `range: ${part.body.length} bytes, ${String(part.headers['content-range'])}`);
    // s3rver 3.7 checks the key id and the parameters of a V4 presigned URL but not the
    // signature itself ("V4 signature calculation is unimplemented"), so check that here.
    assert.equal(sigV4QueryProblem(location, 'GET', creds.secretAccessKey), undefined);
    assert.match(sigV4QueryProblem(location, 'HEAD', creds.secretAccessKey) ?? '', /does not match/, 'a GET URL is not valid for HEAD');
    assert.match(sigV4QueryProblem(location, 'GET', 'wrong-secret') ?? '', /does not match/);
    u.searchParams.set('X-Amz-Expires', '86400');
    assert.match(sigV4QueryProblem(u.toString(), 'GET', creds.secretAccessKey) ?? '', /does not match/, 'the lifetime is signed');
    // The bmap beside it redirects too.
    const bmap = await request(port, '/images/line-b/disk.img.bmap');
    assert.equal(bmap.status, 307);
    assert.equal((await get(bmap.headers.location as string)).body.toString(), '<bmap/>');
    // Files the record does not list are not presigned.
    assert.equal((await request(port, '/images/line-b/other.img')).status, 404);
  });

  test('HEAD gets a URL signed for HEAD', async () => {
    const r = await request(port, '/images/line-b/disk.img', {}, 'HEAD');
    assert.equal(r.status, 307);
    assert.equal(sigV4QueryProblem(r.headers.location as string, 'HEAD', 'S3RVER'), undefined);
    const head = await get(r.headers.location as string, {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String(SIZE));
  });

  test("the agent's HTTP source follows the redirect, also from an offset", async () => {
    const src = await openSource(`http://127.0.0.1:${port}/images/line-b/disk.img`, { retryDelayMs: 5 });
    assert.equal(await src.size(), SIZE);
    assert.equal(sha256(await collect(await src.open(0))), sha256(DATA));
    assert.equal(sha256(await collect(await src.open(2 * MiB))), sha256(DATA.subarray(2 * MiB)));
  });

  test('without credentials the redirect fails clearly', async () => {
    const bare = fastify({ logger: false });
    await bare.register(imageRoutes, { dataDir, store, env: {} });
    try {
      const r = await bare.inject({ method: 'GET', url: '/images/line-b/disk.img' });
      assert.equal(r.statusCode, 500);
      assert.match(r.json<{ message: string }>().message, /no S3 credentials/);
    } finally {
      await bare.close();
    }
  });
});
