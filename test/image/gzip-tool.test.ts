// .gz images through igzip (Debian package isal) where the image's trailer allows it, through
// node's zlib otherwise: the same bytes either way, and what igzip would let pass unnoticed
// (bytes after the last member) still refused.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { copyImage } from '../../src/image/copy.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { endsWithImageSize } from '../../src/image/decompress/gzip-trailer.ts';
import { openTarget } from '../../src/image/target.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';
import type { Bmap } from '../../src/image/types.ts';
import { tempDir, BMAPTOOL_FIXTURES, runningChildren } from '../helpers.ts';

const dir = tempDir('bootline-gzip-');
const BS = 4096;
let image: Buffer;
let gz: Buffer;
let bmap: Bmap;

before(() => {
  gz = readFileSync(join(BMAPTOOL_FIXTURES, 'test.image.gz'));
  image = execFileSync('gzip', ['-dc'], { input: gz, maxBuffer: 16 << 20 });
  bmap = parseBmap(readFileSync(join(BMAPTOOL_FIXTURES, 'test.image.bmap.v2.0'), 'utf8'), 'test.image.bmap');
});

let files = 0;
/** Copies the .gz bytes `data` into a new file target with the bmap; returns the log and the target's bytes. */
async function copyGz(data: Buffer, o: { bmap?: Bmap } = {}): Promise<{ log: string[]; out: Buffer }> {
  const n = files++;
  const src = join(dir, `image-${n}.gz`);
  const out = join(dir, `out-${n}.img`);
  writeFileSync(src, data);
  const log: string[] = [];
  const target = await openTarget(out, { allowFile: true, create: true });
  try {
    await copyImage({ source: new FileSource(src), bmap: 'bmap' in o ? o.bmap : bmap, target, onLog: (m) => log.push(m) });
  } finally {
    await target.close();
  }
  return { log, out: readFileSync(out) };
}

/** The mapped blocks of `out` are the image's. */
function assertMappedWritten(out: Buffer): void {
  for (const r of bmap.ranges) {
    const a = r.first * BS;
    const b = Math.min((r.last + 1) * BS, bmap.imageSize);
    assert.ok(out.subarray(a, b).equals(image.subarray(a, b)), `blocks ${r.first}-${r.last} differ from the image`);
  }
}

const decoderLine = (log: string[]) => log.find((l) => l.includes('gzip-compressed')) ?? '';

test('the trailer check: the last four bytes are the image size mod 2^32', () => {
  const isize = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(n, 4);
    return b;
  };
  assert.equal(endsWithImageSize(isize(1000), 1000), true);
  assert.equal(endsWithImageSize(isize(1000), 1001), false);
  // A 5 GiB image: ISIZE holds 1 GiB.
  assert.equal(endsWithImageSize(isize(2 ** 30), 5 * 2 ** 30), true);
  assert.equal(endsWithImageSize(isize(0), 4 * 2 ** 30), true);
  assert.equal(endsWithImageSize(Buffer.from([1, 2, 3]), 3), false);
});

test('a .gz image with a bmap is decompressed by igzip, and the mapped blocks are the image', async () => {
  const { log, out } = await copyGz(gz);
  assert.match(decoderLine(log), /gzip-compressed \(igzip\)/);
  assertMappedWritten(out);
  assert.deepEqual(runningChildren(/igzip/), []);
});

test('bytes after the last member fail the copy through zlib, as before; zero padding does not', async () => {
  await assert.rejects(copyGz(Buffer.concat([gz, Buffer.from('appended text\n')])), (e: Error) => {
    assert.match(e.message, /^gzip: incorrect header check .*the compressed image is corrupt/);
    assert.match(e.message, /do not boot it|nothing was written/);
    return true;
  });
  const padded = await copyGz(Buffer.concat([gz, Buffer.alloc(512)]));
  assert.match(decoderLine(padded.log), /node's zlib/);
  assertMappedWritten(padded.out);
});

test('an image of two gzip members is written whole, through zlib', async () => {
  const half = Math.floor(image.length / 2);
  const twoMembers = Buffer.concat([execFileSync('gzip', ['-c'], { input: image.subarray(0, half) }), execFileSync('gzip', ['-c'], { input: image.subarray(half) })]);
  const { log, out } = await copyGz(twoMembers);
  assert.match(decoderLine(log), /node's zlib: igzip takes a \.gz image only with a bmap/);
  assertMappedWritten(out);
});

test('without a bmap the size is unknown: zlib, and every byte is written', async () => {
  const { log, out } = await copyGz(gz, { bmap: undefined });
  assert.match(decoderLine(log), /node's zlib/);
  assert.ok(out.equals(image));
});

test('a corrupt member fails the copy naming igzip, and no igzip is left running', async () => {
  const bad = Buffer.from(gz);
  // Inside the deflate data; the trailer (and so the choice of igzip) is untouched.
  for (let i = 400; i < 432; i++) bad[i] = (bad[i] as number) ^ 0x5a;
  await assert.rejects(copyGz(bad), (e: Error) => {
    assert.match(e.message, /^igzip: .*image-\d+\.gz.*: the compressed image is corrupt or truncated/);
    assert.match(e.message, /do not boot it|nothing was written/);
    return true;
  });
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(runningChildren(/igzip/), []);
});

test('without igzip on PATH, zlib does the work and the log names the package', async () => {
  const path = process.env.PATH;
  // gzip(1) stays reachable for the test's own use; igzip does not.
  process.env.PATH = join(dir, 'no-such-dir');
  try {
    const { log, out } = await copyGz(gz);
    assert.match(decoderLine(log), /igzip, about 1\.4 times as fast, is in the Debian package isal/);
    assertMappedWritten(out);
  } finally {
    process.env.PATH = path;
  }
});
