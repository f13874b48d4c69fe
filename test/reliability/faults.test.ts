// The image engine through a seeded fault proxy in front of the server's own image route:
// connections cut at random offsets, flipped bytes, stalls and 503s. Each seed is printed, so
// a failure can be replayed with the same faults.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { imageRoutes } from '../../src/server/images/serve.ts';
import { copyImage } from '../../src/image/copy.ts';
import { createBmap } from '../../src/image/create.ts';
import { HttpSource } from '../../src/image/sources/http.ts';
import { openTarget } from '../../src/image/target.ts';
import type { Bmap } from '../../src/image/types.ts';
import { spreadOffsets, startFaultProxy, type FaultPlan } from '../../src/lab/fault-proxy.ts';
import { tempDir } from '../helpers.ts';

const dir = tempDir('bootline-faults-');
const data = join(dir, 'server');
const imgDir = join(data, 'images', 'line');
const MIB = 1024 * 1024;
const SIZE = 24 * MIB;
let image: Buffer;
let bmap: Bmap;
let zstSize: number;
let app: FastifyInstance;
let port: number;

before(async () => {
  mkdirSync(imgDir, { recursive: true });
  // Mapped data with holes between: 1 MiB of random bytes every other MiB, and a text tail.
  const path = join(imgDir, 'disk.img');
  writeFileSync(path, '');
  truncateSync(path, SIZE);
  const fd = openSync(path, 'r+');
  for (let at = 0; at < SIZE - 2 * MIB; at += 2 * MIB) writeSync(fd, randomBytes(MIB), 0, MIB, at);
  writeSync(fd, Buffer.from('bootline '.repeat(200_000)), 0, 1_800_000, SIZE - 2 * MIB);
  closeSync(fd);
  image = readFileSync(path);
  bmap = await createBmap(path);
  execFileSync('zstd', ['-q', '-3', path, '-o', `${path}.zst`]);
  zstSize = readFileSync(`${path}.zst`).length;
  app = Fastify();
  await app.register(imageRoutes, { dataDir: data });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as { port: number }).port;
});

after(async () => {
  await app?.close();
});

/** Copies `file` of the image through a proxy with `plan` onto a fresh file; returns what happened. */
async function copyThrough(file: string, plan: FaultPlan, o: { stallTimeoutMs?: number } = {}) {
  const proxy = await startFaultProxy(port, { match: /^\/images\//, ...plan });
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}.img`);
  const retries: string[] = [];
  try {
    const source = new HttpSource({
      url: `${proxy.url}/images/line/${file}`,
      options: { retryDelayMs: 20, stallTimeoutMs: o.stallTimeoutMs ?? 30_000, onRetry: (m) => retries.push(m) },
    });
    const target = await openTarget(out, { allowFile: true, create: true });
    let result: Awaited<ReturnType<typeof copyImage>> | undefined;
    let error: Error | undefined;
    try {
      result = await copyImage({ source, bmap, target });
    } catch (e) {
      error = e as Error;
    } finally {
      await target.close();
      await source.close?.();
    }
    const disk = readFileSync(out);
    return { result, error, log: { ...proxy.log }, retries, disk };
  } finally {
    await proxy.close();
  }
}

/** The mapped bytes of the target equal the image's. */
function sameMapped(disk: Buffer): boolean {
  for (const r of bmap.ranges) {
    const a = r.first * bmap.blockSize;
    const b = Math.min((r.last + 1) * bmap.blockSize, bmap.imageSize);
    if (!disk.subarray(a, b).equals(image.subarray(a, b))) return false;
  }
  return true;
}

for (const [file, label] of [
  ['disk.img', 'a raw image'],
  ['disk.img.zst', 'a zstd image'],
] as const) {
  test(`20 connection cuts during one download of ${label}: the target is bit-identical and at most 5% extra bytes are downloaded`, async (t) => {
    const size = file === 'disk.img' ? SIZE : zstSize;
    const seed = 20261201 + size;
    // What a run without faults downloads (a raw image is read past short holes, not around them).
    const clean = await copyThrough(file, {});
    assert.equal(clean.error, undefined);
    const cutAt = spreadOffsets(seed, 20, 1, clean.log.bodyBytes - 1);
    const r = await copyThrough(file, { cutAt });
    assert.equal(r.error, undefined, `seed ${seed}: ${r.error?.message}`);
    assert.equal(r.log.cuts, 20, `seed ${seed}: every planned cut happened`);
    assert.ok(sameMapped(r.disk), `seed ${seed}: the target differs from the image`);
    const needed = clean.log.bodyBytes;
    assert.ok(needed >= (file === 'disk.img' ? bmap.mappedBlocksCount * bmap.blockSize : size));
    const extra = r.log.bodyBytes / needed - 1;
    assert.ok(extra <= 0.05, `seed ${seed}: ${r.log.bodyBytes} bytes downloaded for ${needed} (${(extra * 100).toFixed(1)}% extra)`);
    assert.ok(r.retries.length >= 20, `seed ${seed}: each cut was resumed (${r.retries.length} retries)`);
    t.diagnostic(`seed ${seed}: ${r.log.cuts} cuts, ${r.log.bodyBytes} bytes downloaded, ${needed} without faults (+${(extra * 100).toFixed(2)}%)`);
  });
}

test('every flipped byte is detected: the copy repairs the range or fails, and never reports a bad disk as good', async (t) => {
  for (const [file, seed] of [
    ['disk.img', 11],
    ['disk.img', 12],
    ['disk.img.zst', 13],
    ['disk.img.zst', 14],
  ] as const) {
    const size = file === 'disk.img' ? SIZE : zstSize;
    const flipAt = spreadOffsets(seed, 3, 1, size - 1);
    const r = await copyThrough(file, { flipAt });
    assert.ok(r.log.flips >= 1, `seed ${seed}: a byte was flipped`);
    t.diagnostic(`seed ${seed} ${file}: ${r.log.flips} flipped, ${r.error ? `refused: ${r.error.message.slice(0, 120)}` : `written, ${r.result?.repairedRanges} range(s) repaired`}`);
    if (r.error) {
      assert.match(r.error.message, /checksum mismatch|corrupt|incomplete/, `seed ${seed}`);
    } else {
      assert.ok(sameMapped(r.disk), `seed ${seed}: ${file} was reported written but the target differs`);
      assert.ok((r.result?.repairedRanges ?? 0) >= 1 || file.endsWith('.zst'), `seed ${seed}: the bad range was repaired`);
    }
  }
});

test('stalls and 503 answers: the download resumes after the stall timeout and retries the 503s', async () => {
  const seed = 31;
  const [a, b] = spreadOffsets(seed, 2, MIB, SIZE / 2);
  const r = await copyThrough('disk.img', { stallAt: [{ at: a as number, ms: 2000 }, { at: b as number, ms: 2000 }], errors503: 2 }, { stallTimeoutMs: 400 });
  assert.equal(r.error, undefined, `seed ${seed}: ${r.error?.message}`);
  assert.equal(r.log.errors503, 2);
  assert.equal(r.log.stalls, 2);
  assert.ok(sameMapped(r.disk));
  assert.ok(r.retries.some((m) => /503/.test(m)), r.retries.join('\n'));
  assert.ok(r.retries.some((m) => /stall|nothing|no data|timed out/i.test(m)), r.retries.join('\n'));
});

test('the fault plan is reproducible: the same seed gives the same offsets', () => {
  assert.deepEqual(spreadOffsets(7, 5, 0, 1000), spreadOffsets(7, 5, 0, 1000));
  assert.notDeepEqual(spreadOffsets(7, 5, 0, 1000), spreadOffsets(8, 5, 0, 1000));
  assert.throws(() => spreadOffsets(1, 11, 0, 10), /cannot place 11 offsets/);
});
