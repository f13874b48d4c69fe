// Writes past the page cache (O_DIRECT) onto a block device: whole aligned pages from page-aligned
// buffers go direct, anything else through the cache, and the device holds the same bytes either way.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { alignedBuffer, isPageAligned } from '../../src/image/aligned-buffer.ts';
import type { FileHandle } from 'node:fs/promises';
import { copyImage } from '../../src/image/copy.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { openTarget, type Target } from '../../src/image/target.ts';
import { POOL_SLOW_SOURCE, Writer, WRITE_SIZE } from '../../src/image/write-pool.ts';
import { tempDir, readDevice, withLoop, assertNoLoopLeft } from '../helpers.ts';

const dir = tempDir('bootline-direct-');
const MIB = 1024 * 1024;
after(() => assertNoLoopLeft(dir));

test('an aligned buffer starts on a page boundary; its unaligned views and ordinary buffers do not count', () => {
  const b = alignedBuffer(3 * 4096 + 100);
  assert.equal(b.length, 3 * 4096 + 100);
  assert.equal(isPageAligned(b), true);
  assert.equal(isPageAligned(b.subarray(4096)), true);
  assert.equal(isPageAligned(b.subarray(512)), false);
  assert.equal(isPageAligned(Buffer.alloc(8192)), false);
});

test('page-aligned writes go past the page cache, the rest through it, and the device holds every byte', async () => {
  await withLoop(dir, 4 * MIB, async (dev) => {
    const want = Buffer.alloc(4 * MIB, 0xaa);
    const target = await openTarget(dev);
    try {
      // Direct: an aligned buffer at an aligned offset, whole pages.
      const a = alignedBuffer(MIB);
      randomBytes(MIB).copy(a);
      await target.write(a, MIB);
      a.copy(want, MIB);
      assert.equal(target.directBytes, MIB);
      // Cached: an unaligned end, an unaligned offset, an ordinary buffer.
      const tail = alignedBuffer(8192);
      randomBytes(5000).copy(tail);
      await target.write(tail.subarray(0, 5000), 2 * MIB);
      tail.copy(want, 2 * MIB, 0, 5000);
      const odd = randomBytes(4096);
      await target.write(odd, 3 * MIB + 512);
      odd.copy(want, 3 * MIB + 512);
      const plain = randomBytes(8192);
      await target.write(plain, 0);
      plain.copy(want, 0);
      assert.equal(target.directBytes, MIB, 'only the aligned write went direct');
      // A direct write next to the page the cached tail wrote: both stay.
      const next = alignedBuffer(4096);
      randomBytes(4096).copy(next);
      await target.write(next, 2 * MIB + 8192);
      next.copy(want, 2 * MIB + 8192);
      assert.equal(target.directBytes, MIB + 4096);
      await target.sync();
    } finally {
      await target.close();
    }
    // Read back from the device itself, past anything cached.
    assert.ok(readDevice(dev, 4 * MIB).equals(want), 'the device holds what was written, direct and cached alike');
  });
});

// No device here refuses an aligned direct write; one that wants another alignment than it says
// (some USB bridges, stacked devices) answers EINVAL. The direct handle's write is made to answer so.
test('a direct write the device refuses with EINVAL is written through the cache, and so is every later one', async () => {
  await withLoop(dir, 4 * MIB, async (dev) => {
    const target = await openTarget(dev);
    try {
      assert.equal(target.writesDirect, true);
      const direct = (target as unknown as { direct: FileHandle }).direct;
      let refused = 0;
      direct.write = (async () => {
        refused++;
        throw Object.assign(new Error('EINVAL: invalid argument, write'), { code: 'EINVAL', errno: -22, syscall: 'write' });
      }) as unknown as FileHandle['write'];
      const a = alignedBuffer(MIB);
      randomBytes(MIB).copy(a);
      await target.write(a, MIB);
      assert.equal(refused, 1);
      assert.equal(target.writesDirect, false, 'direct writes are given up');
      assert.equal(target.directBytes, 0);
      const b = alignedBuffer(MIB);
      randomBytes(MIB).copy(b);
      await target.write(b, 2 * MIB);
      assert.equal(refused, 1, 'the later write did not try the direct handle');
      await target.sync();
      const got = readDevice(dev, 3 * MIB);
      assert.ok(got.subarray(MIB, 2 * MIB).equals(a) && got.subarray(2 * MIB).equals(b), 'the device holds both writes');
    } finally {
      await target.close();
    }
  });
});

test('any other error of a direct write fails the write, naming the target and the byte', async () => {
  await withLoop(dir, 4 * MIB, async (dev) => {
    const target = await openTarget(dev);
    try {
      const direct = (target as unknown as { direct: FileHandle }).direct;
      direct.write = (async () => {
        throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', errno: -5, syscall: 'write' });
      }) as unknown as FileHandle['write'];
      await assert.rejects(target.write(alignedBuffer(MIB), MIB), new RegExp(`^Error: writing ${dev} at byte ${MIB} failed: .*the disk reports an I/O error`));
      assert.equal(target.writesDirect, true);
    } finally {
      await target.close();
    }
  });
});

test('a regular file target writes through the cache only', async () => {
  const target = await openTarget(`${dir}/plain.img`, { allowFile: true, create: true });
  try {
    await target.write(alignedBuffer(MIB), 0);
    assert.equal(target.directBytes, undefined);
  } finally {
    await target.close();
  }
});

test('a copy onto a block device writes its mapped data past the page cache', async () => {
  const image = `${dir}/img.raw`;
  const data = randomBytes(2 * MIB);
  writeFileSync(image, data);
  await withLoop(dir, 4 * MIB, async (dev) => {
    const target = await openTarget(dev);
    try {
      const r = await copyImage({ source: new FileSource(image), target, sha256: createHash('sha256').update(data).digest('hex') });
      assert.equal(r.bytesWritten, 2 * MIB);
      assert.equal(target.directBytes, 2 * MIB);
    } finally {
      await target.close();
    }
    assert.ok(readDevice(dev, 2 * MIB).equals(data));
  });
});

// Each direct write waits for the device, so the pool keeps more of them in flight than through the cache.
// With the producer held up, every buffer of the pool is being written: 5 direct, 3 cached, and 3
// direct for a source that holds the image ahead itself (xz lanes: copy.ts caps the pool).
const POOLS = [
  ['block device (direct)', 5, undefined],
  ['block device (direct), from a source that holds the image ahead', 3, POOL_SLOW_SOURCE],
  ['regular file (cached)', 3, undefined],
] as const;
for (const [kind, inFlight, cap] of POOLS) {
  test(`the write pool keeps ${inFlight} writes in flight onto a ${kind}`, async () => {
    const chunk = randomBytes(WRITE_SIZE);
    const run = async (target: Target) => {
      // Every write waits at a gate until the producer can go no further.
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      let now = 0;
      let most = 0;
      const gated: Target = Object.create(target, {
        write: {
          value: async (buf: Uint8Array, pos: number) => {
            most = Math.max(most, ++now);
            await gate;
            await target.write(buf, pos);
            now--;
          },
        },
      });
      const w = new Writer(gated, () => undefined);
      if (cap) w.capPool(cap);
      const feeding = (async () => {
        for (let i = 0; i < 8; i++) await w.put(chunk, i * WRITE_SIZE);
        await w.drain();
      })();
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal(most, inFlight, 'writes in flight while the device holds them');
      open();
      await feeding;
    };
    const size = 8 * WRITE_SIZE;
    const check = (bytes: Buffer) => {
      for (let i = 0; i < 8; i++) assert.ok(bytes.subarray(i * WRITE_SIZE, (i + 1) * WRITE_SIZE).equals(chunk), `buffer ${i} written`);
    };
    if (kind.startsWith('block device')) {
      await withLoop(dir, size, async (dev) => {
        const target = await openTarget(dev);
        try {
          assert.equal(target.writesDirect, true);
          await run(target);
        } finally {
          await target.close();
        }
        check(readDevice(dev, size));
      });
    } else {
      const path = `${dir}/pool.img`;
      const target = await openTarget(path, { allowFile: true, create: true });
      try {
        assert.ok(!target.writesDirect);
        await run(target);
      } finally {
        await target.close();
      }
      check(readFileSync(path));
    }
  });
}
