// The image engine against real loop devices (needs root, as CI has):
// compressions, bmap holes, repair of corrupt ranges, refusals.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, mkdirSync, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { copyImage } from '../../src/image/copy.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import type { CopyProgress } from '../../src/image/copy.ts';
import { decompressor } from '../../src/image/decompress/index.ts';
import { detectCompression } from '../../src/image/decompress/detect.ts';
import { openTarget } from '../../src/image/target.ts';
import type { Target } from '../../src/image/target.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';
import { bootMedia } from '../../src/image/block-devices.ts';
import type { Bmap, Compression, Source } from '../../src/image/types.ts';
import { tempDir, BMAPTOOL_FIXTURES, readDevice, withLoop, assertNoLoopLeft, runningChildren } from '../helpers.ts';

const FIX = BMAPTOOL_FIXTURES;
const dir = tempDir('bootline-copy-');
const IMAGE = join(dir, 'test.image');
const BS = 4096;
let image: Buffer;
let bmap: Bmap;
/** [start, end) byte spans of the mapped blocks, clipped at the image size. */
let mapped: [number, number][];

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8' }).trim();

const COMPRESSORS: Record<Exclude<Compression, 'none'>, { ext: string; cmd: string[] }> = {
  gzip: { ext: 'gz', cmd: ['gzip', '-c'] },
  xz: { ext: 'xz', cmd: ['xz', '-c', '-T2'] },
  zstd: { ext: 'zst', cmd: ['zstd', '-q', '-c'] },
  bzip2: { ext: 'bz2', cmd: ['bzip2', '-c'] },
  lz4: { ext: 'lz4', cmd: ['lz4', '-q', '-c'] },
};

/** Compresses `file` with the CLI; returns the new path. */
function compress(file: string, kind: Exclude<Compression, 'none'>): string {
  const { ext, cmd } = COMPRESSORS[kind];
  const out = `${file}.${ext}`;
  writeFileSync(out, execFileSync(cmd[0] as string, [...cmd.slice(1), file], { maxBuffer: 64 << 20 }));
  return out;
}

before(() => {
  image = execFileSync('gzip', ['-dc', `${FIX}/test.image.gz`], { maxBuffer: 16 << 20 });
  writeFileSync(IMAGE, image);
  bmap = parseBmap(readFileSync(`${FIX}/test.image.bmap.v2.0`, 'utf8'), 'test.image.bmap');
  mapped = bmap.ranges.map((r) => [r.first * BS, Math.min((r.last + 1) * BS, bmap.imageSize)]);
  for (const kind of Object.keys(COMPRESSORS) as (keyof typeof COMPRESSORS)[]) compress(IMAGE, kind);
});

after(() => assertNoLoopLeft(dir));

interface TestSource extends Source {
  opens: number[];
}

/** A file as a Source; `firstOpen` (corrupt data) is what the first open() delivers. */
function fileSource(path: string, o: { seekable?: boolean; firstOpen?: string } = {}): TestSource {
  const opens: number[] = [];
  return {
    display: path,
    seekable: o.seekable ?? true,
    opens,
    async size() {
      return statSync(path).size;
    },
    async open(offset: number) {
      opens.push(offset);
      const p = opens.length === 1 && o.firstOpen ? o.firstOpen : path;
      return createReadStream(p, { start: offset, highWaterMark: 256 * 1024 });
    },
  };
}



function fillDevice(dev: string, size: number): void {
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, Buffer.alloc(size, 0xaa), 0, size, 0);
  } finally {
    closeSync(fd);
  }
}

/** Mapped bytes equal the image; unmapped bytes inside the image hold `hole` (0xAA: untouched); beyond it, 0xAA. */
function assertWritten(disk: Buffer, hole: number): void {
  let at = 0;
  const holeByte = (from: number, to: number) => {
    for (let i = from; i < to; i++) if (disk[i] !== hole) assert.fail(`byte ${i} in an unmapped block is ${disk[i]}, expected ${hole}`);
  };
  for (const [a, b] of mapped) {
    holeByte(at, a);
    assert.ok(disk.subarray(a, b).equals(image.subarray(a, b)), `mapped bytes ${a}-${b - 1} differ from the image`);
    at = b;
  }
  holeByte(at, bmap.imageSize);
  for (let i = bmap.imageSize; i < disk.length; i++) if (disk[i] !== 0xaa) assert.fail(`byte ${i} beyond the image was written`);
}

async function withTarget<T>(path: string, fn: (t: Target) => Promise<T>, opts = {}): Promise<T> {
  const t = await openTarget(path, opts);
  try {
    return await fn(t);
  } finally {
    await t.close();
  }
}

const MIB = 1024 * 1024;

test('every compression is written to a loop device, mapped blocks only', async () => {
  await withLoop(dir, MIB, async (dev) => {
    for (const kind of ['none', ...Object.keys(COMPRESSORS)] as Compression[]) {
      fillDevice(dev, MIB);
      const file = kind === 'none' ? IMAGE : `${IMAGE}.${COMPRESSORS[kind].ext}`;
      const progress: CopyProgress[] = [];
      const r = await withTarget(dev, (target) => copyImage({ source: fileSource(file), bmap, target, onProgress: (p) => progress.push(p) }));
      assert.equal(r.compression, kind);
      assert.equal(r.mappedBytes, 117 * BS);
      assert.equal(r.bytesWritten, 117 * BS);
      assert.equal(r.repairedRanges, 0);
      assertWritten(readDevice(dev, MIB), 0xaa);
      const last = progress.at(-1);
      assert.equal(last?.bytesDone, 117 * BS, kind);
      assert.equal(last?.bytesTotal, 117 * BS);
    }
  });
});

test('holes "zero" zeroes the unmapped blocks inside the image, nothing beyond it', async () => {
  await withLoop(dir, MIB, async (dev) => {
    await withTarget(dev, (target) => copyImage({ source: fileSource(`${IMAGE}.zst`), bmap, target, holes: 'zero' }));
    assertWritten(readDevice(dev, MIB), 0);
  });
});

test('holes "discard" on a loop device leaves mapped data intact', async () => {
  await withLoop(dir, MIB, async (dev) => {
    const logs: string[] = [];
    await withTarget(dev, (target) => copyImage({ source: fileSource(IMAGE), bmap, target, holes: 'discard', onLog: (m) => logs.push(m) }));
    const disk = readDevice(dev, MIB);
    for (const [a, b] of mapped) assert.ok(disk.subarray(a, b).equals(image.subarray(a, b)));
    assert.ok(logs.some((m) => /discarded|discarding/.test(m)), logs.join('\n'));
  });
});

/** The image with one byte flipped in block 4 (range 3-5). */
function corruptImage(): string {
  const bad = Buffer.from(image);
  bad[4 * BS + 100] = (bad[4 * BS + 100] as number) ^ 0xff;
  const p = join(dir, 'corrupt.image');
  writeFileSync(p, bad);
  return p;
}

test('a corrupt range from a seekable raw source is read again and repaired', async () => {
  const bad = corruptImage();
  await withLoop(dir, MIB, async (dev) => {
    const source = fileSource(IMAGE, { firstOpen: bad });
    const logs: string[] = [];
    const r = await withTarget(dev, (target) => copyImage({ source, bmap, target, onLog: (m) => logs.push(m) }));
    assert.equal(r.repairedRanges, 1);
    assert.deepEqual(source.opens, [0, 3 * BS], 'only the bad range is read again');
    assert.ok(logs.some((m) => m.includes('blocks 3-5')), logs.join('\n'));
    assertWritten(readDevice(dev, MIB), 0xaa);
  });
});

test('a corrupt range from a seekable compressed source is repaired by decompressing again', async () => {
  const bad = compress(corruptImage(), 'zstd');
  await withLoop(dir, MIB, async (dev) => {
    const source = fileSource(`${IMAGE}.zst`, { firstOpen: bad });
    const r = await withTarget(dev, (target) => copyImage({ source, bmap, target }));
    assert.equal(r.repairedRanges, 1);
    assert.deepEqual(source.opens, [0, 0]);
    assertWritten(readDevice(dev, MIB), 0xaa);
  });
});

test('a corrupt range from a source that cannot be re-read fails, naming the range', async () => {
  const bad = corruptImage();
  const out = join(dir, 'nonseekable.out');
  await withTarget(
    out,
    async (target) => {
      await assert.rejects(copyImage({ source: fileSource(bad, { seekable: false }), bmap, target }), (e: Error) => {
        assert.match(e.message, /checksum mismatch in blocks 3-5 \(bytes 12288-24575\)/);
        assert.match(e.message, /incomplete/);
        return true;
      });
    },
    { allowFile: true, create: true },
  );
});

test('an image larger than the target is refused before anything is written', async () => {
  const small = 512 * 1024;
  await withLoop(dir, small, async (dev) => {
    await withTarget(dev, async (target) => {
      await assert.rejects(copyImage({ source: fileSource(`${IMAGE}.gz`), bmap, target }), /does not fit on .*nothing was written/);
      // Raw, no bmap: the source size is known.
      await assert.rejects(copyImage({ source: fileSource(IMAGE), target }), /does not fit on .*nothing was written/);
    });
    assert.ok(readDevice(dev, small).equals(Buffer.alloc(small, 0xaa)), 'the target is untouched');
    // Compressed without a bmap: the size is only known at the first byte past the end, which
    // here is still in the first write buffer, so nothing reaches the disk either.
    await withTarget(dev, async (target) => {
      await assert.rejects(copyImage({ source: fileSource(`${IMAGE}.zst`), target }), /larger than the target .*nothing was written/);
    });
    assert.ok(readDevice(dev, small).equals(Buffer.alloc(small, 0xaa)), 'the target is untouched');
  });
});

test('a mounted target is refused, naming the mount point', async () => {
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  await withLoop(dir, 8 * MIB, async (dev) => {
    sh('mkfs.ext4', ['-q', dev]);
    sh('mount', [dev, mnt]);
    try {
      await assert.rejects(openTarget(dev), (e: Error) => {
        assert.match(e.message, /in use/);
        assert.ok(e.message.includes(mnt), e.message);
        return true;
      });
    } finally {
      sh('umount', [mnt]);
    }
  });
});

test('the boot medium is refused', async (t) => {
  const boot = (await bootMedia())[0];
  if (!boot) return t.skip('no block device holds / here');
  await assert.rejects(openTarget(boot.disk), /boot medium/);
});

test('a regular file is refused as a target unless allowed', async () => {
  await assert.rejects(openTarget(IMAGE), /regular file, not a block device/);
  await assert.rejects(openTarget(join(dir, 'missing')), /does not exist/);
});

test('a corrupt .xz fails with what xz says', async () => {
  const xz = readFileSync(`${IMAGE}.xz`);
  const bad = Buffer.from(xz);
  for (let i = 200; i < 260; i++) bad[i] = (bad[i] as number) ^ 0x55;
  const p = join(dir, 'corrupt.image.xz');
  writeFileSync(p, bad);
  await withTarget(
    join(dir, 'xz.out'),
    async (target) => {
      await assert.rejects(copyImage({ source: fileSource(p), bmap, target }), /^Error: xz: \(stdin\): Compressed data is corrupt/);
    },
    { allowFile: true, create: true },
  );
});

test('without a bmap every byte is written and the sha256 is checked', async () => {
  const good = createHash('sha256').update(image).digest('hex');
  const out = join(dir, 'whole.out');
  await withTarget(
    out,
    async (target) => {
      const r = await copyImage({ source: fileSource(`${IMAGE}.gz`), target, sha256: good });
      assert.equal(r.bytesWritten, image.length);
      assert.ok(readFileSync(out).equals(image));
      const wrong = 'f'.repeat(64);
      await assert.rejects(copyImage({ source: fileSource(`${IMAGE}.lz4`), target, sha256: wrong }), /sha256 mismatch.*expected f{64}/);
    },
    { allowFile: true, create: true },
  );
});

const childDecompressors = () => runningChildren(/zstd|xz|igzip/);

test('an abort while the source stalls ends the copy at once and stops the decompressor', async () => {
  const zst = readFileSync(`${IMAGE}.zst`);
  // Stalled while the format is being detected, then while decompressing.
  for (const sent of [3, 300]) {
    const stalled = new PassThrough();
    stalled.write(zst.subarray(0, sent));
    const source: Source = { display: 'stalled', seekable: false, size: async () => undefined, open: async () => stalled };
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new Error('operator pressed stop')), 200);
    await withTarget(
      join(dir, 'abort.out'),
      async (target) => {
        const t = performance.now();
        await assert.rejects(copyImage({ source, bmap, target, signal: ac.signal }), /copying stopped \(operator pressed stop\)/);
        assert.ok(performance.now() - t < 2000);
      },
      { allowFile: true, create: true },
    );
    clearTimeout(timer);
    assert.ok(stalled.destroyed, 'the source stream is released');
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(childDecompressors(), []);
});

test('compression is recognised by magic bytes', () => {
  const b = (...x: number[]) => Buffer.from([...x, 0, 0, 0, 0, 0, 0]);
  assert.equal(detectCompression(b(0x1f, 0x8b)), 'gzip');
  assert.equal(detectCompression(b(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)), 'xz');
  assert.equal(detectCompression(b(0x28, 0xb5, 0x2f, 0xfd)), 'zstd');
  assert.equal(detectCompression(Buffer.from('BZh9')), 'bzip2');
  assert.equal(detectCompression(Buffer.from('BZhx')), 'none');
  assert.equal(detectCompression(b(0x04, 0x22, 0x4d, 0x18)), 'lz4');
  // A skippable frame (4-byte payload) before an lz4 or a zstd frame.
  const skip = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
  assert.equal(detectCompression(b(...skip, 0x04, 0x22, 0x4d, 0x18)), 'lz4');
  assert.equal(detectCompression(b(...skip, 0x28, 0xb5, 0x2f, 0xfd)), 'zstd');
  assert.equal(detectCompression(image.subarray(0, 4096)), 'none');
});

test('a missing decompressor names the Debian package to install', () => {
  const path = process.env.PATH;
  process.env.PATH = join(dir, 'empty-path');
  try {
    assert.throws(() => decompressor('xz'), /install the Debian package xz-utils/);
    assert.throws(() => decompressor('bzip2'), /bzip2/);
  } finally {
    process.env.PATH = path;
  }
});

// Local image files: raw ones are read with positional reads into reused buffers, compressed ones
// are read by their decompressor itself (see Source.localPath). The same results are expected.

test('local image files in every format are written byte for byte, and no decompressor is left running', async () => {
  for (const kind of ['none', ...Object.keys(COMPRESSORS)] as Compression[]) {
    const path = kind === 'none' ? IMAGE : `${IMAGE}.${COMPRESSORS[kind as keyof typeof COMPRESSORS].ext}`;
    await withLoop(dir, MIB, async (dev) => {
      fillDevice(dev, MIB);
      const r = await withTarget(dev, (target) => copyImage({ source: new FileSource(path), bmap, target }));
      assert.equal(r.compression, kind);
      assertWritten(readDevice(dev, MIB), 0xaa);
    });
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(childDecompressors(), []);
});

test('a corrupt local .xz fails with what xz says about the file, and the target is reported incomplete', async () => {
  const bad = Buffer.from(readFileSync(`${IMAGE}.xz`));
  for (let i = 200; i < 260; i++) bad[i] = (bad[i] as number) ^ 0x55;
  const p = join(dir, 'corrupt-local.image.xz');
  writeFileSync(p, bad);
  await withTarget(
    join(dir, 'xz-local.out'),
    async (target) => {
      await assert.rejects(copyImage({ source: new FileSource(p), bmap, target }), (e: Error) => {
        assert.match(e.message, /^xz: .*corrupt-local\.image\.xz: Compressed data is corrupt/);
        assert.match(e.message, /incomplete|nothing was written/);
        return true;
      });
    },
    { allowFile: true, create: true },
  );
});

test('a truncated local .zst fails naming zstd, not as success', async () => {
  const zst = readFileSync(`${IMAGE}.zst`);
  const p = join(dir, 'truncated.image.zst');
  writeFileSync(p, zst.subarray(0, Math.floor(zst.length / 2)));
  await withTarget(
    join(dir, 'zst-trunc.out'),
    async (target) => {
      await assert.rejects(copyImage({ source: new FileSource(p), bmap, target }), /zstd|truncated|ended after/);
    },
    { allowFile: true, create: true },
  );
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(childDecompressors(), []);
});

test('a corrupt range in a local raw image is read again at its offset and repaired', async () => {
  const bad = corruptImage();
  await withLoop(dir, MIB, async (dev) => {
    // The first pass reads the corrupt file; the repair pass reads the good one at the same path.
    const source = new FileSource(bad);
    let repaired = false;
    const r = await withTarget(dev, (target) =>
      copyImage({
        source,
        bmap,
        target,
        onLog: (m) => {
          if (m.includes('checksum mismatch') && !repaired) {
            repaired = true;
            writeFileSync(bad, image);
          }
        },
      }),
    );
    assert.equal(r.repairedRanges, 1);
    assertWritten(readDevice(dev, MIB), 0xaa);
  });
});
