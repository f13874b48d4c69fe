// `bootline image` as a bmaptool user runs it: the bundled CLI, real files, FIFOs, HTTP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, writeFileSync, openSync, writeSync, closeSync, createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { Socket } from 'node:net';
import { constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tempDir, BMAPTOOL_FIXTURES } from '../helpers.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
const FIXTURES = BMAPTOOL_FIXTURES;
const IMAGE = gunzipSync(readFileSync(join(FIXTURES, 'test.image.gz')));

function bootline(args: string[]) {
  return spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8', timeout: 60_000 });
}

/** The fixture image and its v2.0 bmap side by side, as a build would leave them. */
function fixtureDir(): string {
  const dir = tempDir();
  copyFileSync(join(FIXTURES, 'test.image.gz'), join(dir, 'test.image.gz'));
  copyFileSync(join(FIXTURES, 'test.image.bmap.v2.0'), join(dir, 'test.image.bmap'));
  return dir;
}

/** Byte ranges the bmap maps, from its <Range> elements. */
function mappedRanges(bmapText: string): Array<[number, number]> {
  const bs = Number(/<BlockSize>\s*(\d+)/.exec(bmapText)![1]);
  return [...bmapText.matchAll(/<Range[^>]*>\s*(\d+)(?:-(\d+))?\s*<\/Range>/g)].map((m) => [Number(m[1]) * bs, Math.min(IMAGE.length, (Number(m[2] ?? m[1]) + 1) * bs)]);
}

test('a bmaptool command line works with `bootline image copy` in its place', () => {
  const dir = fixtureDir();
  const target = join(dir, 'out.img');
  const r = bootline(['image', 'copy', '--bmap', join(dir, 'test.image.bmap'), join(dir, 'test.image.gz'), target]);
  assert.equal(r.status, 0, r.stderr);
  const out = readFileSync(target);
  assert.equal(out.length, IMAGE.length, 'a file target ends up with the image size, as with bmaptool');
  for (const [a, b] of mappedRanges(readFileSync(join(dir, 'test.image.bmap'), 'utf8'))) assert.ok(out.subarray(a, b).equals(IMAGE.subarray(a, b)), `range ${a}-${b}`);
});

test('the bmap beside the image is found, and -q prints nothing', () => {
  const dir = fixtureDir();
  const r = bootline(['image', '-q', 'copy', join(dir, 'test.image.gz'), join(dir, 'out.img')]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout + r.stderr, '');
  const viaBmaptool = join(dir, 'ref.img');
  execFileSync('bmaptool', ['-q', 'copy', join(dir, 'test.image.gz'), viaBmaptool]);
  assert.ok(readFileSync(join(dir, 'out.img')).equals(readFileSync(viaBmaptool)), 'same bytes as bmaptool copy writes');
});

test('--psplash-pipe receives PROGRESS commands up to 100', async () => {
  const dir = fixtureDir();
  const fifo = join(dir, 'psplash_fifo');
  execFileSync('mkfifo', [fifo]);
  const fd = openSync(fifo, constants.O_RDWR | constants.O_NONBLOCK);
  const reader = new Socket({ fd, readable: true, writable: false });
  let got = '';
  reader.on('data', (d) => (got += d.toString()));
  const status = await new Promise((resolve) => spawn(process.execPath, [BUNDLE, 'image', '-q', 'copy', '--psplash-pipe', fifo, join(dir, 'test.image.gz'), join(dir, 'out.img')], { stdio: 'ignore' }).on('exit', resolve));
  await new Promise((r) => setTimeout(r, 100));
  reader.destroy();
  assert.equal(status, 0);
  const commands = got.split('\0').filter(Boolean);
  assert.ok(commands.includes('PROGRESS 100'), commands.join('|'));
  assert.ok(commands.every((c) => /^(PROGRESS \d+|MSG .*)$/.test(c)), commands.join('|'));
});

test('the image and its bmap are fetched over HTTP, the bmap found beside the image', async () => {
  const dir = fixtureDir();
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const file = join(dir, req.url!.slice(1));
    if (!existsSync(file)) return void ((res.statusCode = 404), res.end());
    const size = statSync(file).size;
    res.setHeader('accept-ranges', 'bytes');
    res.setHeader('etag', '"v1"');
    const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    const end = m && m[2] ? Number(m[2]) : size - 1;
    if (m) {
      res.statusCode = 206;
      res.setHeader('content-range', `bytes ${start}-${end}/${size}`);
    }
    res.setHeader('content-length', end - start + 1);
    createReadStream(file, { start, end }).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const r = await new Promise<{ status: number | null; stderr: string }>((resolve) => {
      const c = spawn(process.execPath, [BUNDLE, 'image', 'copy', `${base}/test.image.gz`, join(dir, 'out.img')], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr.on('data', (d) => (stderr += d));
      c.on('exit', (status) => resolve({ status, stderr }));
    });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(seen.some((s) => s.endsWith('/test.image.gz.bmap')), 'looked for <image>.bmap first');
    assert.ok(seen.some((s) => s === 'GET /test.image.bmap'), 'then with the extension stripped');
    assert.match(r.stderr, /using bmap .*test\.image\.bmap/);
  } finally {
    server.close();
  }
});

/** The mapped bytes of `out` equal the image's. */
function assertMapped(out: Buffer, bmapPath: string, what: string) {
  for (const [a, b] of mappedRanges(readFileSync(bmapPath, 'utf8'))) assert.ok(out.subarray(a, b).equals(IMAGE.subarray(a, b)), `${what}: range ${a}-${b}`);
}

// stdin is read into reused segments when it is a pipe or socket (sources/stdin.ts), and a
// compressed image goes to its program's stdin from there: both as a user pipes it in.
test('an image piped in as `-` is written in every format; a truncated one fails naming its program', () => {
  const dir = fixtureDir();
  const bmap = join(dir, 'test.image.bmap');
  const raw = join(dir, 'test.image');
  writeFileSync(raw, IMAGE);
  const formats: [string, string[] | undefined][] = [
    ['raw', undefined],
    ['gz', ['gzip', '-c']],
    ['zst', ['zstd', '-q', '-c']],
    ['xz', ['xz', '-c']],
    ['bz2', ['bzip2', '-c']],
    ['lz4', ['lz4', '-q', '-c']],
  ];
  for (const [ext, compress] of formats) {
    const data = compress ? execFileSync(compress[0]!, compress.slice(1), { input: IMAGE, maxBuffer: 64 << 20 }) : IMAGE;
    const target = join(dir, `stdin-${ext}.img`);
    // spawnSync's input arrives on a socket pair.
    const r = spawnSync(process.execPath, [BUNDLE, 'image', 'copy', '--bmap', bmap, '-', target], { input: data, encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, `${ext}: ${r.stderr}`);
    assertMapped(readFileSync(target), bmap, `${ext} from a socket`);
  }
  // A shell pipe is a FIFO.
  const zst = join(dir, 'test.image.zst');
  execFileSync('zstd', ['-q', '-o', zst, raw]);
  const piped = join(dir, 'piped.img');
  const p = spawnSync('sh', ['-c', `cat '${zst}' | '${process.execPath}' '${BUNDLE}' image copy --bmap '${bmap}' - '${piped}'`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(p.status, 0, p.stderr);
  assertMapped(readFileSync(piped), bmap, 'zst through a shell pipe');

  // Several segments' worth, so that reading pauses while the writer holds them.
  const big = join(dir, 'big.img');
  const bigData = randomBytes(9 * 1024 * 1024 + 4096);
  writeFileSync(big, bigData);
  const bigOut = join(dir, 'big-out.img');
  const b = spawnSync('sh', ['-c', `cat '${big}' | '${process.execPath}' '${BUNDLE}' image copy --nobmap - '${bigOut}'`], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(b.status, 0, b.stderr);
  assert.ok(readFileSync(bigOut).equals(bigData), '9 MiB raw through a shell pipe');

  const cut = readFileSync(zst).subarray(0, Math.floor(statSync(zst).size / 2));
  const r = spawnSync(process.execPath, [BUNDLE, 'image', 'copy', '--bmap', bmap, '-', join(dir, 'cut.img')], { input: cut, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /zstd: .*(truncated|premature|incomplete|error)/i);
  assert.match(r.stderr, /incomplete|nothing was written/);
});

test('a malformed bmap is refused before the target is created', () => {
  const dir = fixtureDir();
  const bad = readFileSync(join(dir, 'test.image.bmap'), 'utf8').replace(/<BlockSize>\s*\d+/, '<BlockSize> 3000');
  writeFileSync(join(dir, 'bad.bmap'), bad);
  const r = bootline(['image', 'copy', '--bmap', join(dir, 'bad.bmap'), join(dir, 'test.image.gz'), join(dir, 'out.img')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.bmap/);
  assert.equal(existsSync(join(dir, 'out.img')), false);
});

test('image create writes a bmap bmaptool copy accepts, and image verify finds a flipped byte', () => {
  const dir = tempDir();
  const img = join(dir, 'sparse.img');
  const fd = openSync(img, 'w');
  writeSync(fd, Buffer.alloc(64 * 1024, 0x5a), 0, 64 * 1024, 0);
  writeSync(fd, Buffer.alloc(4096, 0), 0, 4096, 1024 * 1024); // zero-filled data: must stay mapped
  writeSync(fd, Buffer.alloc(8192, 0x33), 0, 8192, 3 * 1024 * 1024);
  closeSync(fd);
  execFileSync('truncate', ['-s', '4M', img]);
  const c = bootline(['image', 'create', img, '-o', join(dir, 'sparse.bmap')]);
  assert.equal(c.status, 0, c.stderr);
  const bmap = readFileSync(join(dir, 'sparse.bmap'), 'utf8');
  assert.match(bmap, /<MappedBlocksCount>\s*19\s*<\/MappedBlocksCount>/, '16 + 1 (the zero-filled block) + 2 blocks of 4 KiB');
  assert.match(bmap, /> 256 <\/Range>/, 'the zero-filled data block is mapped');
  const out = join(dir, 'out.img');
  execFileSync('bmaptool', ['-q', 'copy', '--bmap', join(dir, 'sparse.bmap'), img, out]);
  const v = bootline(['image', 'verify', out, '--bmap', join(dir, 'sparse.bmap')]);
  assert.equal(v.status, 0, v.stderr);
  const f = openSync(out, 'r+');
  writeSync(f, Buffer.from([0x00]), 0, 1, 3 * 1024 * 1024 + 5);
  closeSync(f);
  const bad = bootline(['image', 'verify', out, '--bmap', join(dir, 'sparse.bmap')]);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /blocks 768-769 \(bytes 3145728-3153919\) do not match/);
});

test('with trusted keys, a bmap signed by another key or not signed at all is refused before writing', () => {
  const dir = fixtureDir();
  const bmap = join(dir, 'test.image.bmap');
  assert.equal(bootline(['image', 'keygen', join(dir, 'line')]).status, 0);
  assert.equal(bootline(['image', 'keygen', join(dir, 'other')]).status, 0);
  const copy = (out: string) => bootline(['image', 'copy', '--trusted-keys', join(dir, 'line.pub'), join(dir, 'test.image.gz'), join(dir, out)]);

  const unsigned = copy('unsigned.img');
  assert.equal(unsigned.status, 1);
  assert.match(unsigned.stderr, /test\.image\.bmap is not signed .* trusted keys are configured .*refusing to write it/);
  assert.equal(existsSync(join(dir, 'unsigned.img')), false);

  assert.equal(bootline(['image', 'sign', bmap, '--key', join(dir, 'other.key')]).status, 0);
  const wrong = copy('wrong.img');
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /not among the trusted keys/);
  assert.equal(existsSync(join(dir, 'wrong.img')), false);

  assert.equal(bootline(['image', 'sign', bmap, '--key', join(dir, 'line.key')]).status, 0);
  const ok = copy('ok.img');
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stderr, /bmap signature .*test\.image\.bmap\.ed25519\.sig verified/);

  writeFileSync(bmap, readFileSync(bmap, 'utf8').replace('<ImageSize>', '<ImageSize> ')); // one byte changed after signing
  const tampered = copy('tampered.img');
  assert.equal(tampered.status, 1);
  assert.match(tampered.stderr, /does not match/);
  assert.equal(existsSync(join(dir, 'tampered.img')), false);
});

test('--skip-identical writes nothing when the target already holds the image', () => {
  const dir = fixtureDir();
  const out = join(dir, 'out.img');
  assert.equal(bootline(['image', '-q', 'copy', join(dir, 'test.image.gz'), out]).status, 0);
  const again = bootline(['image', 'copy', '--skip-identical', join(dir, 'test.image.gz'), out]);
  assert.equal(again.status, 0, again.stderr);
  assert.match(again.stderr, /wrote 0 bytes .* range\(s\) \(\d+ bytes\) already on the target/);
});
