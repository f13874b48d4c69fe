// Creating bmaps from sparse files, and checking them against bmaptool 3.6.
// The loop-device test needs root (CI runs as root); bmaptool tests need the
// Debian bmap-tools package. Both are skipped, saying why, when missing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { tempDir, BMAPTOOL_FIXTURES } from '../helpers.ts';
import { dataExtents } from '../../src/image/holes.ts';
import { createBmap, extentsToRanges } from '../../src/image/create.ts';
import { verifyRanges } from '../../src/image/verify.ts';
import { formatBmap } from '../../src/image/bmap/write.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';

const FIX = BMAPTOOL_FIXTURES;
const bmaptoolVersion = (() => {
  const r = spawnSync('bmaptool', ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? `${r.stdout}${r.stderr}`.trim() : undefined;
})();
const noBmaptool = bmaptoolVersion ? false : 'bmaptool is not installed (apt-get install bmap-tools)';
const notRoot = process.getuid?.() === 0 ? false : 'needs root for a loop device';

const MiB = 1024 * 1024;
const SIZE = 4 * MiB + 1000; // the last block is partial
// Explicit zeros written as data at 64 KiB: a FAT table or a zeroed
// partition area looks like this, and it must be copied.
const ZERO_DATA = { first: 16, last: 18 };
const EXPECTED = [
  [0, 1],
  [ZERO_DATA.first, ZERO_DATA.last],
  [256, 257],
  [512, 513],
  [1024, 1024],
];

/** A sparse image built with positional writes: data, zero data and holes. */
function makeImage(dir: string): string {
  const path = join(dir, 'disk.img');
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, SIZE);
    writeSync(fd, Buffer.alloc(8192, 0x07), 0, 8192, 0);
    writeSync(fd, Buffer.alloc(12288, 0), 0, 12288, 65536);
    writeSync(fd, Buffer.alloc(5000, 0x09), 0, 5000, MiB + 100); // unaligned both ends
    writeSync(fd, Buffer.alloc(4096, 0), 0, 4096, 2 * MiB); // zeros, then data right after:
    writeSync(fd, Buffer.alloc(4096, 0x05), 0, 4096, 2 * MiB + 4096); // one range
    writeSync(fd, Buffer.alloc(1000, 0x03), 0, 1000, 4 * MiB);
  } finally {
    closeSync(fd);
  }
  return path;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('data extents come from the file system: written zeros are data, holes are not', async () => {
  const img = makeImage(tempDir());
  const extents = await dataExtents(img);
  assert.ok(extents.every((e, k) => e.start < e.end && e.end <= SIZE && (k === 0 || extents[k - 1]!.end < e.start)));
  assert.deepEqual(
    extentsToRanges(extents, 4096).map((r) => [r.first, r.last]),
    EXPECTED,
  );
});

test('createBmap maps zero-filled data blocks and hashes exactly the bytes of each range', async () => {
  const img = makeImage(tempDir());
  const seen: Array<[number, number]> = [];
  const b = await createBmap(img, { onProgress: (d, t) => seen.push([d, t]) });
  assert.equal(b.imageSize, SIZE);
  assert.equal(b.blockSize, 4096);
  assert.equal(b.blocksCount, 1025);
  assert.equal(b.checksumType, 'sha256');
  assert.deepEqual(
    b.ranges.map((r) => [r.first, r.last]),
    EXPECTED,
  );
  assert.equal(b.mappedBlocksCount, 2 + 3 + 2 + 2 + 1);
  const bytes = readFileSync(img);
  for (const r of b.ranges) {
    // The partial last block is hashed short: only the bytes the file has.
    const want = sha256(bytes.subarray(r.first * 4096, Math.min((r.last + 1) * 4096, SIZE)));
    assert.equal(r.checksum, want, `range ${r.first}-${r.last}`);
  }
  assert.equal(b.ranges[1]!.checksum, sha256(Buffer.alloc(12288)), 'the zero-data range is mapped and hashed');
  const last = seen[seen.length - 1]!;
  assert.equal(last[0], last[1], 'progress ends at the total');
  assert.equal(last[1], 9 * 4096 + 1000);
  // Our bmap survives its own parser.
  assert.deepEqual(parseBmap(formatBmap(b), 'ours').ranges, b.ranges);
});

test('createBmap refuses an empty file and a bad block size', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'empty.img'), '');
  await assert.rejects(createBmap(join(dir, 'empty.img')), /the file is empty/);
  await assert.rejects(createBmap(makeImage(dir), { blockSize: 1000 }), /block size 1000 is not a power of two/);
});

test('bmaptool create gives the same ranges and checksums as ours, in the same bytes', { skip: noBmaptool }, async () => {
  const dir = tempDir();
  const img = makeImage(dir);
  const theirsPath = join(dir, 'theirs.bmap');
  execFileSync('bmaptool', ['create', '-o', theirsPath, img], { stdio: 'pipe' });
  const theirsText = readFileSync(theirsPath, 'utf8');
  const theirs = parseBmap(theirsText, theirsPath);
  const ours = await createBmap(img);
  assert.deepEqual(theirs.ranges, ours.ranges);
  assert.equal(theirs.mappedBlocksCount, ours.mappedBlocksCount);
  assert.equal(theirs.imageSize, ours.imageSize);
  if (bmaptoolVersion?.includes('3.6')) assert.equal(formatBmap(ours), theirsText, 'byte-identical to bmaptool 3.6');
});

test('bmaptool copy accepts our bmap, checks its range checksums, and writes a matching target', { skip: noBmaptool }, async () => {
  const dir = tempDir();
  const img = makeImage(dir);
  const ours = await createBmap(img);
  const bmapPath = join(dir, 'ours.bmap');
  writeFileSync(bmapPath, formatBmap(ours));
  const target = join(dir, 'target.img');
  execFileSync('bmaptool', ['copy', '--bmap', bmapPath, img, target], { stdio: 'pipe' });
  assert.ok(readFileSync(target).equals(readFileSync(img)), 'target equals the image');

  // bmaptool really checks our checksums: a wrong one (in a bmap whose own file checksum is valid) fails the copy.
  const tampered = { ...ours, ranges: ours.ranges.map((r, k) => (k === 2 ? { ...r, checksum: '0'.repeat(64) } : r)) };
  writeFileSync(bmapPath, formatBmap(tampered));
  const r = spawnSync('bmaptool', ['copy', '--bmap', bmapPath, img, join(dir, 'target2.img')], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /checksum mismatch/);
});

test('verifyRanges passes on the bmaptool test image with its sha1 (1.2) and sha256 (2.0) bmaps', async () => {
  const dir = tempDir();
  const img = join(dir, 'test.image');
  writeFileSync(img, gunzipSync(readFileSync(`${FIX}/test.image.gz`)));
  for (const v of ['1.2', '2.0']) {
    const b = parseBmap(readFileSync(`${FIX}/test.image.bmap.v${v}`, 'utf8'), v);
    assert.deepEqual(await verifyRanges(img, b), { ok: true, bad: [] }, `v${v}`);
  }
});

test('verifyRanges reports a range the target is too short to hold', async () => {
  const dir = tempDir();
  const img = makeImage(dir);
  const b = await createBmap(img);
  const short = join(dir, 'short.img');
  writeFileSync(short, readFileSync(img).subarray(0, 2 * MiB + 6000));
  const r = await verifyRanges(short, b);
  assert.equal(r.ok, false);
  assert.deepEqual(
    r.bad.map((x) => [x.first, x.last]),
    [
      [512, 513],
      [1024, 1024],
    ],
  );
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(verifyRanges(img, b, { signal: ac.signal }), { name: 'AbortError' });
});

test('on a loop device: zero-data blocks are written over stale bytes, and verifyRanges catches a flipped byte', { skip: notRoot || noBmaptool }, async () => {
  const dir = tempDir();
  const img = makeImage(dir);
  const b = await createBmap(img);
  const bmapPath = join(dir, 'ours.bmap');
  writeFileSync(bmapPath, formatBmap(b));
  // A "used" disk: every byte 0xFF, so anything not written stays visible.
  const backing = join(dir, 'disk.raw');
  writeFileSync(backing, Buffer.alloc(5 * MiB, 0xff)); // loop devices want whole sectors
  const dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
  try {
    execFileSync('bmaptool', ['copy', '--bmap', bmapPath, img, dev], { stdio: 'pipe' });
    const fd = openSync(dev, 'r+');
    try {
      const read = (pos: number, len: number) => {
        const buf = Buffer.alloc(len);
        assert.equal(readSync(fd, buf, 0, len, pos), len);
        return buf;
      };
      assert.ok(read(ZERO_DATA.first * 4096, 12288).equals(Buffer.alloc(12288)), 'the zero-data blocks were written');
      assert.ok(read(8 * 4096, 4096).equals(Buffer.alloc(4096, 0xff)), 'a hole was skipped');

      assert.deepEqual(await verifyRanges(dev, b), { ok: true, bad: [] });

      const at = 257 * 4096 + 10;
      const byte = read(at, 1);
      byte[0] = byte[0]! ^ 0x01;
      writeSync(fd, byte, 0, 1, at);
      const r = await verifyRanges(dev, b);
      assert.equal(r.ok, false);
      assert.deepEqual(
        r.bad.map((x) => [x.first, x.last]),
        [[256, 257]],
      );
    } finally {
      closeSync(fd);
    }
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
});
