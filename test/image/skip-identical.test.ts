// copyImage's skipIdentical against real loop devices (needs root, as CI has): a second copy
// writes nothing, a raw seekable source is barely read, and a corrupted range is the only one
// written again.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, ftruncateSync, openSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, pipeline } from 'node:stream';
import { copyImage } from '../../src/image/copy.ts';
import type { CopyOptions, CopyProgress } from '../../src/image/copy.ts';
import { openTarget } from '../../src/image/target.ts';
import type { Target } from '../../src/image/target.ts';
import type { Bmap, Source } from '../../src/image/types.ts';
import { tempDir, readDevice, withLoop, assertNoLoopLeft } from '../helpers.ts';

const MIB = 1024 * 1024;
const BS = 4096;
const dir = tempDir('bootline-skip-');
const IMAGE = join(dir, 'product.img');
/** Not a multiple of the block size: the last range ends in a partial block. */
const IMAGE_SIZE = 40 * MIB - 1000;
const DEVICE_SIZE = 48 * MIB;
/** Mapped [first, last] blocks: gaps of 8-10 MiB between them, so a raw source is re-opened past them. */
const RANGES: [number, number][] = [
  [0, 255],
  [2304, 2687],
  [5120, 5375],
  [8192, 8703],
  [9984, Math.ceil(IMAGE_SIZE / BS) - 1],
];
let image: Buffer;
let bmap: Bmap;
let mappedBytes: number;
const spanOf = ([first, last]: [number, number]): [number, number] => [first * BS, Math.min((last + 1) * BS, IMAGE_SIZE)];


before(() => {
  image = Buffer.alloc(IMAGE_SIZE);
  for (const r of RANGES) {
    const [a, b] = spanOf(r);
    randomBytes(b - a).copy(image, a);
  }
  // Sparse on disk, like a real image file.
  const fd = openSync(IMAGE, 'w');
  try {
    ftruncateSync(fd, IMAGE_SIZE);
    for (const r of RANGES) {
      const [a, b] = spanOf(r);
      writeSync(fd, image, a, b - a, a);
    }
  } finally {
    closeSync(fd);
  }
  execFileSync('zstd', ['-q', '-f', IMAGE, '-o', `${IMAGE}.zst`]);
  execFileSync('sh', ['-c', `gzip -c '${IMAGE}' > '${IMAGE}.gz'`]);
  const ranges = RANGES.map((r) => {
    const [a, b] = spanOf(r);
    return { first: r[0], last: r[1], checksum: createHash('sha256').update(image.subarray(a, b)).digest('hex') };
  });
  mappedBytes = RANGES.reduce((n, r) => n + spanOf(r)[1] - spanOf(r)[0], 0);
  bmap = {
    version: '2.0',
    imageSize: IMAGE_SIZE,
    blockSize: BS,
    blocksCount: Math.ceil(IMAGE_SIZE / BS),
    mappedBlocksCount: RANGES.reduce((n, [f, l]) => n + l - f + 1, 0),
    checksumType: 'sha256',
    ranges,
  };
});

after(() => assertNoLoopLeft(dir));

interface CountingSource extends Source {
  opens: number[];
  /** Bytes the source has delivered, over all opens. */
  delivered: number;
}

/** A file as a seekable Source that counts what it delivers. */
function countingSource(path: string): CountingSource {
  const s: CountingSource = {
    display: path,
    seekable: true,
    opens: [],
    delivered: 0,
    async size() {
      return statSync(path).size;
    },
    async open(offset: number) {
      s.opens.push(offset);
      const counter = new PassThrough({
        transform(chunk: Buffer, _enc, cb) {
          s.delivered += chunk.length;
          cb(null, chunk);
        },
      });
      // Destroying what the engine holds closes the file too.
      pipeline(createReadStream(path, { start: offset, highWaterMark: MIB }), counter, () => undefined);
      return counter;
    },
  };
  return s;
}

/** The target with every write recorded as [position, length]. */
function recording(t: Target): Target & { writes: [number, number][] } {
  const writes: [number, number][] = [];
  const setSize = t.setSize?.bind(t);
  return {
    writes,
    path: t.path,
    size: t.size,
    isBlockDevice: t.isBlockDevice,
    async write(buf, pos) {
      writes.push([pos, buf.length]);
      await t.write(buf, pos);
    },
    read: (buf, pos) => t.read(buf, pos),
    sync: () => t.sync(),
    discard: (a, b) => t.discard(a, b),
    zero: (a, b) => t.zero(a, b),
    ...(setSize ? { setSize } : {}),
    rereadPartitions: () => t.rereadPartitions(),
    close: () => t.close(),
  };
}


/** Copies onto `dev` through a recording target. */
async function copyTo(dev: string, o: Omit<CopyOptions, 'target' | 'bmap'>) {
  const t = await openTarget(dev);
  const target = recording(t);
  const progress: CopyProgress[] = [];
  const logs: string[] = [];
  try {
    const r = await copyImage({ bmap, target, onProgress: (p) => progress.push(p), onLog: (m) => logs.push(m), ...o });
    return { r, writes: target.writes, progress, logs };
  } finally {
    await target.close();
  }
}


/** Overwrites `len` bytes at `pos` of the device behind the engine's back (a torn write). */
function corrupt(dev: string, pos: number, len: number): void {
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, Buffer.alloc(len, 0x5a), 0, len, pos);
  } finally {
    closeSync(fd);
  }
}

/** Mapped bytes hold the image; everything else is still 0xAA. */
function assertDevice(dev: string): void {
  const disk = readDevice(dev, DEVICE_SIZE);
  let at = 0;
  for (const r of RANGES) {
    const [a, b] = spanOf(r);
    assert.ok(disk.subarray(at, a).every((x) => x === 0xaa), `unmapped bytes ${at}-${a - 1} were written`);
    assert.ok(disk.subarray(a, b).equals(image.subarray(a, b)), `mapped bytes ${a}-${b - 1} differ from the image`);
    at = b;
  }
  assert.ok(disk.subarray(at).every((x) => x === 0xaa), 'bytes past the image were written');
}

const sum = (writes: [number, number][]) => writes.reduce((n, [, len]) => n + len, 0);

test('a raw seekable source: the second copy writes nothing and reads almost nothing; a corrupted range is the only one rewritten', async () => {
  await withLoop(dir, DEVICE_SIZE, async (dev) => {
    const first = await copyTo(dev, { source: countingSource(IMAGE) });
    assert.equal(first.r.bytesWritten, mappedBytes);
    assert.equal(sum(first.writes), mappedBytes);
    assert.equal(first.r.skippedRanges, 0);
    assertDevice(dev);

    const source = countingSource(IMAGE);
    const again = await copyTo(dev, { source, skipIdentical: true });
    assert.deepEqual(again.writes, [], 'nothing is written');
    assert.equal(again.r.bytesWritten, 0);
    assert.equal(again.r.skippedRanges, RANGES.length);
    assert.equal(again.r.skippedBytes, mappedBytes);
    assert.equal(again.r.mappedBytes, mappedBytes);
    // Opened once for the format: a read chunk or two (what was in flight), not the 40 MiB image.
    assert.deepEqual(source.opens, [0]);
    assert.ok(source.delivered <= 2 * MIB, `the source delivered ${source.delivered} bytes`);
    const last = again.progress.at(-1);
    assert.equal(last?.phase, 'writing');
    assert.equal(last?.bytesDone, mappedBytes, 'skipped ranges count as done');
    assert.equal(last?.bytesTotal, mappedBytes);
    assert.equal(last?.bytesSkipped, mappedBytes);
    assert.ok(again.logs.some((m) => m.includes(`${RANGES.length} of ${RANGES.length} mapped ranges`)), again.logs.join('\n'));
    assertDevice(dev);

    // A torn write in the middle of the fourth range.
    const [a, b] = spanOf(RANGES[3] as [number, number]);
    corrupt(dev, a + 300_000, 5000);
    const src3 = countingSource(IMAGE);
    const third = await copyTo(dev, { source: src3, skipIdentical: true });
    assert.equal(third.r.bytesWritten, b - a);
    assert.equal(sum(third.writes), b - a);
    for (const [pos, len] of third.writes) assert.ok(pos >= a && pos + len <= b, `write at ${pos} (${len} bytes) is outside the corrupted range`);
    assert.equal(third.r.skippedRanges, RANGES.length - 1);
    assert.equal(third.r.skippedBytes, mappedBytes - (b - a));
    assert.equal(third.r.repairedRanges, 0);
    // Opened for the format, then at the corrupted range: nothing between is read.
    assert.deepEqual(src3.opens, [0, a]);
    assert.ok(src3.delivered <= 2 * MIB + (b - a) + 2 * MIB, `the source delivered ${src3.delivered} bytes of ${IMAGE_SIZE}`);
    assert.equal(third.progress.at(-1)?.bytesDone, mappedBytes);
    assert.equal(third.progress.at(-1)?.bytesSkipped, mappedBytes - (b - a));
    assertDevice(dev);
  });
});

test('a compressed source is decompressed, but nothing identical is written', async () => {
  await withLoop(dir, DEVICE_SIZE, async (dev) => {
    for (const ext of ['zst', 'gz']) {
      const first = await copyTo(dev, { source: countingSource(`${IMAGE}.${ext}`) });
      assert.equal(first.r.bytesWritten, mappedBytes, ext);
      assertDevice(dev);

      const again = await copyTo(dev, { source: countingSource(`${IMAGE}.${ext}`), skipIdentical: true });
      assert.deepEqual(again.writes, [], `${ext}: nothing is written`);
      assert.equal(again.r.skippedRanges, RANGES.length);
      assert.equal(again.r.skippedBytes, mappedBytes);
      assert.equal(again.progress.at(-1)?.bytesDone, mappedBytes);
      assertDevice(dev);

      const [a, b] = spanOf(RANGES[1] as [number, number]);
      corrupt(dev, a, 1);
      const third = await copyTo(dev, { source: countingSource(`${IMAGE}.${ext}`), skipIdentical: true });
      assert.equal(sum(third.writes), b - a, ext);
      for (const [pos, len] of third.writes) assert.ok(pos >= a && pos + len <= b, `${ext}: write at ${pos} is outside the corrupted range`);
      assert.equal(third.r.skippedRanges, RANGES.length - 1);
      assertDevice(dev);
    }
  });
});

test('with the sha256 of the image file every source byte is read, and still nothing identical is written', async () => {
  const fileSum = (p: string) => createHash('sha256').update(execFileSync('cat', [p], { maxBuffer: 64 * MIB })).digest('hex');
  await withLoop(dir, DEVICE_SIZE, async (dev) => {
    await copyTo(dev, { source: countingSource(IMAGE) });
    const source = countingSource(IMAGE);
    const r = await copyTo(dev, { source, skipIdentical: true, sourceSha256: fileSum(IMAGE) });
    assert.deepEqual(r.writes, []);
    assert.equal(source.delivered, IMAGE_SIZE, 'read past the last range, through every gap');
    assert.deepEqual(source.opens, [0]);

    const [a] = spanOf(RANGES[0] as [number, number]);
    corrupt(dev, a + 10, 10);
    await assert.rejects(copyTo(dev, { source: countingSource(`${IMAGE}.zst`), skipIdentical: true, sourceSha256: 'a'.repeat(64) }), (e: Error) => {
      assert.match(e.message, new RegExp(`expected a{64}, got ${fileSum(`${IMAGE}.zst`)}`));
      assert.match(e.message, /must not be booted/);
      return true;
    });
  });
});

test('without range checksums everything is written, and the log says why', async () => {
  const out = join(dir, 'nosums.out');
  const plain: Bmap = { ...bmap, ranges: bmap.ranges.map(({ first, last }) => ({ first, last })) };
  delete plain.checksumType;
  const t = await openTarget(out, { allowFile: true, create: true });
  const target = recording(t);
  const logs: string[] = [];
  try {
    const r = await copyImage({ source: countingSource(IMAGE), bmap: plain, target, skipIdentical: true, onLog: (m) => logs.push(m) });
    assert.equal(r.bytesWritten, mappedBytes);
    assert.equal(r.skippedRanges, 0);
    assert.ok(logs.some((m) => /cannot skip identical ranges: the bmap has no range checksums/.test(m)), logs.join('\n'));
  } finally {
    await target.close();
  }
});
