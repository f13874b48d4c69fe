// Multi-block .xz images decompressed side by side (src/image/decompress/xz-*.ts), checked
// against xz itself: its own listing of the blocks, its own decompression of each block.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, createReadStream, openSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { copyImage } from '../../src/image/copy.ts';
import { createBmap } from '../../src/image/create.ts';
import { spansMeet, spansOf } from '../../src/image/range-walker.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { openTarget } from '../../src/image/target.ts';
import { openImage } from '../../src/image/open-image.ts';
import { parseFooter, parseIndex, streamHeader, streamTail, XzIndexError, type XzLayout } from '../../src/image/decompress/xz-index.ts';
import { laneCount, laneProgram, LOOKAHEAD_BUDGET, xzLanes, type LaneProgram } from '../../src/image/decompress/xz-lanes.ts';
import { readXzTail } from '../../src/image/decompress/xz-source.ts';
import type { Source } from '../../src/image/types.ts';
import { readRanges, sourceRanges, type ByteRange } from '../../src/image/sources/pooled-read.ts';
import { httpSource } from '../../src/image/sources/http.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tempDir, runningChildren } from '../helpers.ts';
import { onPath } from '../../src/which.ts';

const dir = tempDir('bootline-xz-');
const IMAGE = join(dir, 'mixed.img');
const XZ = `${IMAGE}.xz`;
let image: Buffer;

before(() => {
  // Random (incompressible), zeros, text and a random tail: blocks that compress very differently.
  const text = Buffer.from(Array.from({ length: 40000 }, (_, i) => `line ${i} of a log file\n`).join(''));
  image = Buffer.concat([randomBytes(1_500_000), Buffer.alloc(2_000_000), text, randomBytes(700_001)]);
  // Written sparse: the zeros are a hole, so its bmap leaves whole blocks of the .xz unmapped.
  const fd = openSync(IMAGE, 'w');
  writeSync(fd, image, 0, 1_500_000, 0);
  writeSync(fd, image, 3_500_000, image.length - 3_500_000, 3_500_000);
  closeSync(fd);
  execFileSync('xz', ['-k', '-T2', '--block-size=256KiB', IMAGE]);
});

/** The blocks as `xz --robot -lvv` lists them: [compressed offset, uncompressed offset, uncompressed size]. */
function xzListing(path: string): number[][] {
  return execFileSync('xz', ['--robot', '-lvv', path], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith('block\t'))
    .map((l) => {
      const f = l.split('\t');
      return [Number(f[4]), Number(f[5]), Number(f[7])];
    });
}

function layoutOf(path: string): { layout: XzLayout; trailer: Buffer } {
  const file = readFileSync(path);
  const { flags, indexSize } = parseFooter(file.subarray(file.length - 12));
  const trailer = file.subarray(file.length - 12 - indexSize);
  return { layout: parseIndex(trailer.subarray(0, indexSize), flags, file.length), trailer };
}

/** A seekable source that streams a file (not local: its bytes come through `open`). */
function streamSource(path: string, chunk = 64 * 1024): Source & { opens: number[] } {
  const opens: number[] = [];
  return {
    display: path,
    seekable: true,
    opens,
    size: async () => statSync(path).size,
    open: async (offset: number) => {
      opens.push(offset);
      return createReadStream(path, { start: offset, highWaterMark: chunk });
    },
  };
}

/** Each lane reads its blocks of a local file itself. */
const fileRanges = (path: string) => (r: Parameters<typeof readRanges>[1]) => readRanges(path, r);

/** A real HTTP server for the files of `dir`, with Range support; it logs each request's Range. */
const served: string[] = [];
const server = http.createServer((req, res) => {
  const file = join(dir, decodeURIComponent((req.url ?? '/').slice(1)));
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch {
    res.writeHead(404).end();
    return;
  }
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  served.push(`${req.url} ${req.headers.range ?? 'whole'}`);
  if (!m) {
    res.writeHead(200, { 'content-length': data.length, 'accept-ranges': 'bytes' }).end(data);
    return;
  }
  const start = Number(m[1]);
  const end = Math.min(m[2] ? Number(m[2]) + 1 : data.length, data.length);
  res.writeHead(206, { 'content-length': end - start, 'content-range': `bytes ${start}-${end - 1}/${data.length}` }).end(data.subarray(start, end));
});
let base = '';
before(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});
const over = (path: string) => httpSource(`${base}/${path.slice(dir.length + 1)}`);

async function collect(chunks: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of chunks) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

const childXz = () => runningChildren(/^(xz|7zz)$/);

/** Both lane programs: 7zz (Debian package 7zip, installed by scripts/setup.sh) and xz. */
const PROGRAMS: LaneProgram[] = ['7zz', 'xz'];
/** What each says of a damaged block. */
const DAMAGED: Record<LaneProgram, RegExp> = {
  xz: /^Error: xz: \(stdin\): (Compressed data is corrupt|Integrity check failed)/,
  '7zz': /^Error: 7zz: ERROR: (CRC Failed|Data Error) \(exit status 2\): the compressed image is corrupt or truncated \((in|at the end of) xz block [^()]*\([^()]*\)( or in block [^()]*\([^()]*\))?\)$/,
};

after(() => assert.deepEqual(childXz(), [], 'an xz process was left running'));

test('the block index read from the end of the file is the one xz lists', () => {
  const { layout } = layoutOf(XZ);
  const listed = xzListing(XZ);
  assert.ok(layout.blocks.length >= 15, `only ${layout.blocks.length} blocks`);
  assert.deepEqual(
    layout.blocks.map((b) => [b.compOffset, b.uncompOffset, b.uncompSize]),
    listed,
  );
  const last = layout.blocks.at(-1);
  assert.equal((last?.uncompOffset ?? 0) + (last?.uncompSize ?? 0), image.length);
});

test('each block wrapped as a stream of its own decompresses, with xz, to its part of the image', () => {
  const file = readFileSync(XZ);
  const { layout } = layoutOf(XZ);
  for (const b of [layout.blocks[0], layout.blocks[7], layout.blocks.at(-1)]) {
    assert.ok(b);
    const one = Buffer.concat([streamHeader(layout.flags), file.subarray(b.compOffset, b.compOffset + b.totalSize), streamTail(layout.flags, b)]);
    const out = execFileSync('xz', ['-dc'], { input: one, maxBuffer: 16 << 20 });
    assert.ok(out.equals(image.subarray(b.uncompOffset, b.uncompOffset + b.uncompSize)), `block at ${b.compOffset} decompressed differently`);
  }
});

test('an index that is not one whole stream, or is damaged, is not used', () => {
  const file = readFileSync(XZ);
  const { indexSize, flags } = parseFooter(file.subarray(file.length - 12));
  const index = Buffer.from(file.subarray(file.length - 12 - indexSize, file.length - 12));
  // Two streams one after the other: the index only describes the second.
  assert.throws(() => parseIndex(index, flags, file.length * 2), XzIndexError);
  const bad = Buffer.from(index);
  bad[3] = (bad[3] as number) ^ 1;
  assert.throws(() => parseIndex(bad, flags, file.length), /index checksum is wrong/);
  const footer = Buffer.from(file.subarray(file.length - 12));
  footer[5] = (footer[5] as number) ^ 1;
  assert.throws(() => parseFooter(footer), /footer checksum is wrong/);
  assert.throws(() => parseFooter(Buffer.alloc(12)), /no xz stream footer/);
});

test('as many lanes as cores, as long as the lanes ahead (half a block each) fit the memory budget', () => {
  const blocks = (n: number, size: number) => ({ flags: Buffer.from([0, 4]), blocks: Array.from({ length: n }, (_, i) => ({ compOffset: 12 + i, totalSize: 8, unpaddedSize: 8, uncompOffset: i * size, uncompSize: size })) });
  assert.equal(laneCount(blocks(86, 24 << 20), 2), 2);
  assert.equal(laneCount(blocks(86, 24 << 20), 16), 2);
  assert.equal(laneCount(blocks(86, 4 << 20), 16), 4);
  assert.equal(laneCount(blocks(86, LOOKAHEAD_BUDGET), 8), 3);
  assert.equal(laneCount(blocks(86, LOOKAHEAD_BUDGET * 2), 8), 2);
  assert.equal(laneCount(blocks(86, LOOKAHEAD_BUDGET * 2 + 1), 8), 1);
  assert.equal(laneCount(blocks(1, 1 << 20), 8), 1);
  assert.equal(laneCount(blocks(86, 1 << 20), 1), 1);
});

for (const program of PROGRAMS) {
  for (const lanes of [2, 3]) {
    test(`${lanes} ${program} lanes give the image byte for byte, from a local file and from a stream`, async () => {
      const { layout, trailer } = layoutOf(XZ);
      assert.ok((await collect(xzLanes(layout, trailer, fileRanges(XZ), lanes, { program }).chunks)).equals(image));
      const src = streamSource(XZ, 7777);
      const raw = await src.open(0);
      assert.ok((await collect(xzLanes(layout, trailer, raw as AsyncIterable<Buffer>, lanes, { program }).chunks)).equals(image));
    });
  }
}

test('7zz is the lanes\' program where it is installed', () => {
  assert.ok(onPath('7zz'), '7zz is not installed: scripts/setup.sh installs the Debian package 7zip');
  assert.equal(laneProgram(), '7zz');
});

test('a lane that is held up does not hold up the blocks after its own: the next block goes to the lane that asks first', async () => {
  const { layout, trailer } = layoutOf(XZ);
  const first = layout.blocks[0] as XzLayout['blocks'][number];
  let release: () => void = () => undefined;
  const held = new Promise<void>((r) => (release = r));
  /** Block starts asked for while the first block is held up. */
  const askedMeanwhile: number[] = [];
  let holding = true;
  // Each range is read on its own, when the lane's reader reaches it; the first block is held up.
  const read = async function* (ranges: Iterable<ByteRange>) {
    let k = 0;
    for (const r of ranges) {
      if (r.start === first.compOffset) {
        // Held until every other block has been asked for, or 2 s.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([held, new Promise((t) => (timer = setTimeout(t, 2000)))]);
        clearTimeout(timer);
        holding = false;
      } else if (holding && r.start !== 0) {
        // (The stream header, bytes 0-11, is read once besides the blocks.)
        askedMeanwhile.push(r.start);
        if (askedMeanwhile.length === layout.blocks.length - 1) release();
      }
      for await (const { chunk } of readRanges(XZ, [r])) yield { range: k, chunk };
      k++;
    }
  };
  assert.ok((await collect(xzLanes(layout, trailer, read, 2).chunks)).equals(image));
  // With the blocks dealt out in turn, the held-up lane's next block (the third) would wait for it.
  assert.deepEqual(askedMeanwhile, layout.blocks.slice(1).map((b) => b.compOffset));
});

test('a copy of a multi-block .xz uses the lanes, from a file, over a stream and over HTTP, and writes the image', { skip: availableParallelism() < 2 && 'one core: no lanes' }, async () => {
  served.length = 0;
  for (const source of [new FileSource(XZ), streamSource(XZ), over(XZ)]) {
    const out = join(dir, 'copy.out');
    writeFileSync(out, '');
    const lines: string[] = [];
    const t = await openTarget(out, { allowFile: true });
    try {
      await copyImage({ source, target: t, onLog: (l: string) => lines.push(l) });
    } finally {
      await t.close();
    }
    assert.ok(readFileSync(out).equals(image), `${source.display}: the copy differs`);
    assert.ok(lines.some((l) => /xz-compressed \(2 7zz processes side by side, \d+ blocks\)/.test(l)), lines.join('\n'));
  }
  // Without a bmap the stored bytes are counted for the ETA: over HTTP they come in one stream.
  assert.ok(served.includes('/mixed.img.xz whole'), served.join('\n'));
});

test('lanes over HTTP read each block with a bounded Range; a block the server cuts short fails, naming the source', async () => {
  const { layout, trailer } = layoutOf(XZ);
  assert.ok((await collect(xzLanes(layout, trailer, (r) => sourceRanges(over(XZ), r), 2).chunks)).equals(image));
  // A server that answers a Range with the whole file: the lane takes only its block's bytes.
  const whole = httpSource(`${base}/mixed.img.xz`);
  const got: Buffer[] = [];
  for await (const c of await whole.openPooled(0, undefined, 1000)) got.push(Buffer.from(c));
  assert.ok(Buffer.concat(got).equals(readFileSync(XZ).subarray(0, 1000)));
  await assert.rejects(async () => {
    for await (const _ of sourceRanges(whole, [{ start: 0, end: statSync(XZ).size + 10 }])) void _;
  }, /mixed\.img\.xz ended at byte \d+, inside bytes 0-\d+: it changed while it was read/);
});

test('a damaged block fails with what the lane\'s program says and which block it is, and none is left running', async () => {
  const bad = Buffer.from(readFileSync(XZ));
  const { layout } = layoutOf(XZ);
  const b = layout.blocks[5];
  assert.ok(b);
  for (let i = b.compOffset + 100; i < b.compOffset + 140; i++) bad[i] = (bad[i] as number) ^ 0x55;
  const p = join(dir, 'damaged.img.xz');
  writeFileSync(p, bad);
  const { trailer } = layoutOf(p);
  for (const program of PROGRAMS) {
    for (const input of [fileRanges(p), (await streamSource(p).open(0)) as AsyncIterable<Buffer>]) {
      await assert.rejects(collect(xzLanes(layout, trailer, input, 2, { program }).chunks), (e: Error) => {
        assert.match(String(e), DAMAGED[program]);
        // Block 6 (1-based) is the damaged one, whichever lane it went to and however far its output came.
        assert.match(e.message, new RegExp(`block 6 of ${layout.blocks.length} \\(bytes ${b.compOffset}-${b.compOffset + b.totalSize - 1} of the \\.xz file\\)`));
        return true;
      });
    }
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(childXz(), []);
});

test('a streamed image whose index differs from the one read first, or that ends early, fails', async () => {
  const { layout, trailer } = layoutOf(XZ);
  const changed = Buffer.from(readFileSync(XZ));
  changed[changed.length - 20] = (changed[changed.length - 20] as number) ^ 1;
  const p = join(dir, 'changed.img.xz');
  writeFileSync(p, changed);
  await assert.rejects(collect(xzLanes(layout, trailer, (await streamSource(p).open(0)) as AsyncIterable<Buffer>, 2).chunks), /the image changed while it was read/);
  const cut = join(dir, 'cut.img.xz');
  writeFileSync(cut, readFileSync(XZ).subarray(0, statSync(XZ).size - 30));
  await assert.rejects(collect(xzLanes(layout, trailer, (await streamSource(cut).open(0)) as AsyncIterable<Buffer>, 2).chunks), /ended after \d+ bytes, before its end: it is truncated/);
});

test('stopping early ends every lane', async () => {
  const { layout, trailer } = layoutOf(XZ);
  const dec = xzLanes(layout, trailer, fileRanges(XZ), 2);
  let got = 0;
  for await (const c of dec.chunks) {
    got += c.length;
    if (got > 1_000_000) break;
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(childXz(), []);
});

test('an image of several streams is decompressed whole by one xz, as before', async () => {
  const p = join(dir, 'two-streams.img.xz');
  writeFileSync(p, Buffer.concat([readFileSync(XZ), readFileSync(XZ)]));
  assert.equal(await readXzTail(streamSource(p)), undefined);
  const img = await openImage(new FileSource(p), 0, undefined, undefined);
  assert.equal(img.decoder, undefined);
  assert.ok((await collect(img.chunks)).equals(Buffer.concat([image, image])));
});

test('the index is read with one request from the end', async () => {
  const src = streamSource(XZ);
  const tail = await readXzTail(src);
  assert.ok(tail);
  assert.equal(src.opens.length, 1);
  assert.ok((src.opens[0] ?? 0) > 0);
  // An empty or tiny file has no index to read.
  const tiny = join(dir, 'tiny.xz');
  closeSync(openSync(tiny, 'w'));
  assert.equal(await readXzTail(streamSource(tiny)), undefined);
});

test('spansMeet tells whether any span has a byte in a range', () => {
  const spans = [
    { first: 0, last: 0, start: 0, end: 10 },
    { first: 0, last: 0, start: 20, end: 30 },
    { first: 0, last: 0, start: 100, end: 101 },
  ];
  const meet = spansMeet(spans);
  assert.equal(meet(0, 1), true);
  assert.equal(meet(10, 20), false);
  assert.equal(meet(9, 11), true);
  assert.equal(meet(19, 20), false);
  assert.equal(meet(29, 40), true);
  assert.equal(meet(30, 100), false);
  assert.equal(meet(100, 200), true);
  assert.equal(meet(101, 1e9), false);
  assert.equal(spansMeet([])(0, 1), false);
});

test('blocks that hold only holes are not decompressed: a damaged one goes unnoticed, the mapped bytes are written', async () => {
  const bmap = await createBmap(IMAGE);
  const meet = spansMeet(spansOf(bmap));
  const { layout } = layoutOf(XZ);
  const holesOnly = layout.blocks.filter((b) => !meet(b.uncompOffset, b.uncompOffset + b.uncompSize));
  assert.ok(holesOnly.length >= 3, `${holesOnly.length} blocks hold only holes`);
  // Damage every such block: were any decompressed, xz would fail on it.
  const bad = Buffer.from(readFileSync(XZ));
  for (const b of holesOnly) for (let i = b.compOffset + 20; i < b.compOffset + b.totalSize - 8; i++) bad[i] = (bad[i] as number) ^ 0x5a;
  const p = join(dir, 'holes-damaged.img.xz');
  writeFileSync(p, bad);
  served.length = 0;
  for (const source of [new FileSource(p), streamSource(p), over(p)]) {
    const out = join(dir, 'holes.out');
    writeFileSync(out, Buffer.alloc(image.length, 0xaa));
    const lines: string[] = [];
    const t = await openTarget(out, { allowFile: true });
    try {
      await copyImage({ source, bmap, target: t, onLog: (l: string) => lines.push(l) });
    } finally {
      await t.close();
    }
    const disk = readFileSync(out);
    for (const s of spansOf(bmap)) assert.ok(disk.subarray(s.start, s.end).equals(image.subarray(s.start, s.end)), `${source.display}: bytes ${s.start}-${s.end} differ`);
    assert.ok(lines.some((l) => l.includes(`${holesOnly.length} of them only holes: not decompressed`)), lines.join('\n'));
  }
  // Over HTTP each lane asked for exactly its blocks, one bounded Range each (and the stream
  // header): blocks of holes are not even downloaded.
  for (const b of layout.blocks) {
    const asked = served.includes(`/holes-damaged.img.xz bytes=${b.compOffset}-${b.compOffset + b.totalSize - 1}`);
    assert.equal(asked, !holesOnly.includes(b), `block at ${b.compOffset}${holesOnly.includes(b) ? ' (holes only)' : ''}:\n${served.join('\n')}`);
  }
  assert.ok(served.includes('/holes-damaged.img.xz bytes=0-11'), 'the stream header');
  // With a whole-image sha256 every byte is needed: the damage is found.
  const out = join(dir, 'holes-sha.out');
  writeFileSync(out, '');
  const t = await openTarget(out, { allowFile: true });
  try {
    await assert.rejects(copyImage({ source: new FileSource(p), target: t, sha256: 'a'.repeat(64) }), /7zz: ERROR: (CRC Failed|Data Error)/);
  } finally {
    await t.close();
  }
});
