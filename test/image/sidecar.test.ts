// sha256 sidecars beside an image (.sha256sum, .sha256, SHA256SUMS; local and over HTTP) and the
// engine's check of the image file's sha256 (sourceSha256).
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { copyImage } from '../../src/image/copy.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { findSha256Sidecar, parseSha256Sums } from '../../src/image/sources/find-sidecar.ts';
import { openTarget } from '../../src/image/target.ts';
import { tempDir } from '../helpers.ts';

const root = tempDir('bootline-sidecar-');
const NAME = 'product.wic.zst';
let image: Buffer;
let zst: Buffer;
let zstSum: string;
let imageSum: string;

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A fresh directory holding product.wic.zst. */
function release(name: string): string {
  const d = join(root, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, NAME), zst);
  return d;
}

before(() => {
  image = Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000)]);
  writeFileSync(join(root, 'product.wic'), image);
  zst = execFileSync('zstd', ['-q', '-c', join(root, 'product.wic')]);
  zstSum = sha256(zst);
  imageSum = sha256(image);
});

test('<image>.sha256sum as sha256sum writes it, also with the path it was made under', async () => {
  const d = release('sha256sum');
  execFileSync('sh', ['-c', `sha256sum ${NAME} > ${NAME}.sha256sum`], { cwd: d });
  assert.deepEqual(await findSha256Sidecar(join(d, NAME)), { sha256: zstSum, from: join(d, `${NAME}.sha256sum`) });
  // Made in the build tree: the listed name is a path; the file name matches.
  execFileSync('sh', ['-c', `sha256sum ${join(d, NAME)} > ${NAME}.sha256sum`], { cwd: d });
  assert.equal((await findSha256Sidecar(join(d, NAME)))?.sha256, zstSum);
  // Named after the image, one entry: the image's, even when it was renamed after hashing.
  writeFileSync(join(d, `${NAME}.sha256sum`), `${zstSum}  build-1234.wic.zst\n`);
  assert.equal((await findSha256Sidecar(join(d, NAME)))?.sha256, zstSum);
  // Several entries and none for the image: which one is meant cannot be told.
  writeFileSync(join(d, `${NAME}.sha256sum`), `${zstSum}  a.wic.zst\n${imageSum}  b.wic\n`);
  await assert.rejects(findSha256Sidecar(join(d, NAME)), /product\.wic\.zst\.sha256sum: lists 2 files but not product\.wic\.zst/);
});

test('<image>.sha256 with the bare digest (upper case, CRLF)', async () => {
  const d = release('sha256');
  writeFileSync(join(d, `${NAME}.sha256`), `${zstSum.toUpperCase()}\r\n`);
  assert.deepEqual(await findSha256Sidecar(`file://${join(d, NAME)}`), { sha256: zstSum, from: join(d, `${NAME}.sha256`) });
});

test('SHA256SUMS with several entries, binary-mode "*name" and the BSD form', async () => {
  const d = release('sums');
  writeFileSync(join(d, 'other.img'), 'other');
  writeFileSync(join(d, 'README'), 'read me');
  // sha256sum -b writes "<hex> *<name>".
  execFileSync('sh', ['-c', `sha256sum -b other.img ${NAME} > SHA256SUMS && sha256sum --tag README >> SHA256SUMS`], { cwd: d });
  assert.match(readFileSync(join(d, 'SHA256SUMS'), 'utf8'), new RegExp(`^${zstSum} \\*${NAME.replaceAll('.', '\\.')}$`, 'm'));
  assert.deepEqual(await findSha256Sidecar(join(d, NAME)), { sha256: zstSum, from: join(d, 'SHA256SUMS') });
  assert.equal((await findSha256Sidecar(join(d, 'README')))?.sha256, sha256(Buffer.from('read me')));
  // Listed nowhere: no checksum, not an error.
  writeFileSync(join(d, 'unlisted.img'), 'x');
  assert.equal(await findSha256Sidecar(join(d, 'unlisted.img')), undefined);
  // <image>.sha256sum comes first.
  writeFileSync(join(d, `${NAME}.sha256sum`), `${'b'.repeat(64)}  ${NAME}\n`);
  assert.equal((await findSha256Sidecar(join(d, NAME)))?.sha256, 'b'.repeat(64));
});

test('no sidecar, or standard input: undefined', async () => {
  const d = release('none');
  assert.equal(await findSha256Sidecar(join(d, NAME)), undefined);
  assert.equal(await findSha256Sidecar('-'), undefined);
});

test('a malformed sidecar is an error naming the file and the line', async () => {
  const d = release('malformed');
  writeFileSync(join(d, 'SHA256SUMS'), `# release 1.2\n${zstSum}  ${NAME}\n${zstSum.slice(0, 60)}  other.img\n`);
  await assert.rejects(findSha256Sidecar(join(d, NAME)), (e: Error) => {
    assert.ok(e.message.startsWith(`${join(d, 'SHA256SUMS')}: line 3 is not a sha256sum line`), e.message);
    return true;
  });
  // A bare digest is for the single-file forms only.
  assert.throws(() => parseSha256Sums(`${zstSum}\n`, 'SHA256SUMS'), /SHA256SUMS: line 1 is not a sha256sum line/);
  // Two different digests for the image.
  writeFileSync(join(d, 'SHA256SUMS'), `${zstSum}  ${NAME}\n${imageSum}  sub/${NAME}\n`);
  assert.equal((await findSha256Sidecar(join(d, NAME)))?.sha256, zstSum, 'the exact name wins');
  writeFileSync(join(d, 'SHA256SUMS'), `${zstSum}  a/${NAME}\n${imageSum}  b/${NAME}\n`);
  await assert.rejects(findSha256Sidecar(join(d, NAME)), /lines 1, 2 give different sha256 digests/);
});

test('a GNU-escaped name (backslash line) is unescaped', () => {
  const entries = parseSha256Sums(`\\${zstSum}  odd\\\\name\\nx.img\n`, 'SUMS');
  assert.deepEqual(entries, [{ sha256: zstSum, name: 'odd\\name\nx.img', line: 1 }]);
});

test('over HTTP: the candidates keep the query, missing ones are 404s, SHA256SUMS is found', async () => {
  const d = release('http');
  execFileSync('sh', ['-c', `sha256sum ${NAME} > SHA256SUMS`], { cwd: d });
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(req.url ?? '');
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.searchParams.get('sig') !== 's3cr3t') {
      res.writeHead(403).end('bad signature');
      return;
    }
    const file = u.pathname.replace(/^\/rel\//, '');
    let body: Buffer;
    try {
      body = readFileSync(join(d, file));
    } catch {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as AddressInfo).port;
    const found = await findSha256Sidecar(`http://127.0.0.1:${port}/rel/${NAME}?sig=s3cr3t`, { retries: 0 });
    assert.equal(found?.sha256, zstSum);
    assert.match(found?.from ?? '', /\/rel\/SHA256SUMS\?sig=/);
    for (const p of [`/rel/${NAME}.sha256sum?sig=s3cr3t`, `/rel/${NAME}.sha256?sig=s3cr3t`, '/rel/SHA256SUMS?sig=s3cr3t']) {
      assert.ok(requests.includes(p), `${p} was asked for: ${requests.join(', ')}`);
    }
    // The single-file form, served.
    writeFileSync(join(d, `${NAME}.sha256sum`), `${'c'.repeat(64)}  ${NAME}\n`);
    assert.equal((await findSha256Sidecar(`http://127.0.0.1:${port}/rel/${NAME}?sig=s3cr3t`, { retries: 0 }))?.sha256, 'c'.repeat(64));
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('the engine checks the image file sha256 (sourceSha256): the stored bytes, not the decompressed ones', async () => {
  const d = release('engine');
  execFileSync('sh', ['-c', `sha256sum ${NAME} > ${NAME}.sha256sum`], { cwd: d });
  const sidecar = await findSha256Sidecar(join(d, NAME));
  assert.ok(sidecar);
  const out = join(d, 'out.img');
  const target = await openTarget(out, { allowFile: true, create: true });
  try {
    const logs: string[] = [];
    const r = await copyImage({ source: new FileSource(join(d, NAME)), target, sourceSha256: sidecar.sha256, sha256: imageSum, onLog: (m) => logs.push(m) });
    assert.equal(r.compression, 'zstd');
    assert.equal(r.bytesWritten, image.length);
    assert.ok(readFileSync(out).equals(image));
    assert.ok(logs.some((m) => m.includes(`matches (${zstSum})`)), logs.join('\n'));

    // The digest of the decompressed image is not the file's.
    await assert.rejects(copyImage({ source: new FileSource(join(d, NAME)), target, sourceSha256: imageSum.toUpperCase() }), (e: Error) => {
      assert.match(e.message, new RegExp(`sha256 mismatch for the image file .*${NAME.replaceAll('.', '\\.')} as stored`));
      assert.ok(e.message.includes(`expected ${imageSum}, got ${zstSum}`), e.message);
      assert.match(e.message, /must not be booted/);
      return true;
    });
    await assert.rejects(copyImage({ source: new FileSource(join(d, NAME)), target, sourceSha256: 'xyz' }), /the expected sha256 of the image file "xyz" is not 64 hex digits/);
  } finally {
    await target.close();
  }
});
