// deploy-image: target choice (pure), then real writes: onto loop devices (root),
// onto files, from a real HTTP server with a redirect.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, openSync, readSync, closeSync, ftruncateSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { TaskContext, TaskProgress } from '../../src/agent/tasks/builtin.ts';
import { TaskError } from '../../src/agent/tasks/builtin.ts';
import { deployImage, DeployImageOptions } from '../../src/agent/tasks/deploy-image/index.ts';
import {
  bootDisks,
  bootMounts,
  chooseTarget,
  deviceSize,
  isBlockDevice,
  isEmpty,
  overwriteDecision,
  parseMountInfo,
  parseProcMounts,
  splitCandidates,
} from '../../src/agent/tasks/deploy-image/target.ts';
import { formatBytes } from '../../src/format.ts';
import type { TargetFacts } from '../../src/agent/tasks/deploy-image/target.ts';
import { copyImage, detectCompression, progressAt } from '../../src/agent/tasks/deploy-image/copy.ts';
import { Readable } from 'node:stream';
import { localCandidates } from '../../src/agent/tasks/deploy-image/source.ts';

type Opts = Static<typeof DeployImageOptions>;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------- helpers

/** A disk-like image: random regions (partition data) separated by zero regions (gaps). */
function makeImage(seedByte = 0): Buffer {
  const img = Buffer.concat([randomBytes(MiB), Buffer.alloc(MiB), randomBytes(MiB / 2), Buffer.alloc(MiB / 2), randomBytes(4096 + 123)]);
  img[0] = 0xeb; // never starts like a compressed stream
  img[1] = seedByte;
  return img;
}

const chunks = (b: Buffer, n: number) => Array.from({ length: Math.ceil(b.length / n) }, (_, i) => b.subarray(i * n, (i + 1) * n));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function readBytes(path: string, len: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(len);
    let got = 0;
    while (got < len) {
      const n = readSync(fd, buf, got, len - got, got);
      if (n === 0) break;
      got += n;
    }
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

interface Run {
  ctx: TaskContext<Opts>;
  ac: AbortController;
  outputs: Record<string, string>;
  progress: TaskProgress[];
  logs: string[];
  questions: string[];
  /** setOutput/progress calls in order, to check the target is published before writing. */
  order: string[];
}

function fakeCtx(options: Partial<Opts> & Pick<Opts, 'image' | 'target'>, o: { unattended?: boolean; answer?: boolean } = {}): Run {
  const ac = new AbortController();
  const r: Run = { ac, outputs: {}, progress: [], logs: [], questions: [], order: [], ctx: undefined as unknown as TaskContext<Opts> };
  // The loader applies schema defaults; do the same so the task sees what it would in production.
  const opts = Value.Default(DeployImageOptions, structuredClone(options)) as Opts;
  // A string target is off-schema on purpose: run() must tolerate it.
  if (Array.isArray(opts.target)) assert.ok(Value.Check(DeployImageOptions, opts), `test options must satisfy the schema: ${JSON.stringify(opts)}`);
  r.ctx = {
    name: 'deploy',
    options: opts,
    env: {},
    stateDir: tmpdir(),
    unattended: o.unattended ?? true,
    signal: ac.signal,
    progress: (p) => {
      r.progress.push(p);
      r.order.push('progress');
    },
    log: (level, m) => r.logs.push(`${level}: ${m}`),
    confirm: async (q) => {
      r.questions.push(q);
      return o.answer ?? false;
    },
    setOutput: (k, v) => {
      r.outputs[k] = v;
      r.order.push(`output:${k}`);
    },
  };
  return r;
}

async function rejectsWith(p: Promise<unknown>, re: RegExp): Promise<TaskError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof TaskError, `expected a TaskError, got ${String(e)}`);
    assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected a failure matching ${re}`);
}

const tmp = mkdtempSync(join(tmpdir(), 'deploy-image-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---------------------------------------------------------------- pure decisions

describe('choosing the target (pure)', () => {
  const facts = (over: Partial<TargetFacts> & { blocks?: string[]; files?: string[] } = {}): TargetFacts => {
    const blocks = new Set(over.blocks ?? ['/dev/sda', '/dev/sdb', '/dev/nvme0n1']);
    const files = new Set(over.files ?? []);
    return {
      isBlockDevice: (p) => blocks.has(p),
      exists: (p) => blocks.has(p) || files.has(p),
      isFile: (p) => files.has(p),
      bootDisks: over.bootDisks ?? [],
      allowFile: over.allowFile ?? false,
      ...(over.resolve ? { resolve: over.resolve } : {}),
    };
  };

  it('takes the first candidate that is a block device', () => {
    const c = chooseTarget(['/dev/vdb', '/dev/sdb', '/dev/sda'], facts());
    assert.equal(c.target, '/dev/sdb');
    assert.equal(c.kind, 'block');
    assert.deepEqual(c.rejected, [{ path: '/dev/vdb', reason: 'does not exist' }]);
  });

  it('never picks the disk holding / or /boot', () => {
    const c = chooseTarget(['/dev/sda', '/dev/sdb'], facts({ bootDisks: [{ disk: '/dev/sda', device: '/dev/sda2', mountPoint: '/' }] }));
    assert.equal(c.target, '/dev/sdb');
    assert.deepEqual(c.rejected, [{ path: '/dev/sda', reason: 'holds / (boot medium)' }]);
  });

  it('sees through symlinks such as /dev/disk/by-id when comparing with the boot disk', () => {
    const f = facts({ blocks: ['/dev/disk/by-id/usb-stick', '/dev/sdb'], bootDisks: ['/dev/sdc'], resolve: (p) => (p.includes('usb-stick') ? '/dev/sdc' : p) });
    assert.equal(chooseTarget(['/dev/disk/by-id/usb-stick', '/dev/sdb'], f).target, '/dev/sdb');
  });

  it('names every candidate and why it was rejected, and says what to do', () => {
    assert.throws(
      () => chooseTarget(['/dev/vdb', '/dev/sda', '/tmp/x.img'], facts({ files: ['/tmp/x.img'], bootDisks: [{ disk: '/dev/sda', device: '/dev/sda1', mountPoint: '/' }] })),
      (e: Error) => {
        assert.ok(e instanceof TaskError);
        assert.match(e.message, /\/dev\/vdb: does not exist; \/dev\/sda: holds \/ \(boot medium\); \/tmp\/x\.img: not a block device/);
        assert.match(e.message, /installer\.target\.dev/);
        return true;
      },
    );
  });

  it('accepts a regular file, or a path to create, only with allowFile', () => {
    assert.equal(chooseTarget(['/tmp/x.img'], facts({ files: ['/tmp/x.img'], allowFile: true })).kind, 'file');
    assert.equal(chooseTarget(['/tmp/new.img'], facts({ allowFile: true })).kind, 'new-file');
    assert.throws(() => chooseTarget(['/tmp/new.img'], facts()), /\/tmp\/new\.img: does not exist/);
  });

  it('refuses a directory even with allowFile', () => {
    const f = { ...facts({ allowFile: true }), exists: () => true, isFile: () => false };
    assert.throws(() => chooseTarget(['/tmp'], f), /\/tmp: neither a block device nor a regular file/);
  });

  it('says so when no candidate was given', () => {
    assert.throws(() => chooseTarget([], facts()), /no target device given/);
  });

  it('splits Isar-style comma/colon lists and tolerates a single string', () => {
    assert.deepEqual(splitCandidates('/dev/sda,/dev/vda:/dev/nvme0n1'), ['/dev/sda', '/dev/vda', '/dev/nvme0n1']);
    assert.deepEqual(splitCandidates(['/dev/sda, /dev/sdb', '/dev/vdb']), ['/dev/sda', '/dev/sdb', '/dev/vdb']);
    assert.deepEqual(splitCandidates(' , '), []);
  });

  it('follows the overwrite policy like Isar', () => {
    assert.equal(overwriteDecision({ empty: true, policy: 'ABORT', unattended: true }), 'write');
    assert.equal(overwriteDecision({ empty: false, policy: 'ABORT', unattended: true }), 'abort');
    assert.equal(overwriteDecision({ empty: false, policy: 'OVERWRITE', unattended: true }), 'write');
    assert.equal(overwriteDecision({ empty: false, policy: 'ABORT', unattended: false }), 'ask');
    assert.equal(overwriteDecision({ empty: false, policy: 'OVERWRITE', unattended: false }), 'ask');
  });

  it('finds the boot mounts in mountinfo and /proc/mounts, last mount winning', () => {
    const mi = [
      '22 27 0:21 / /proc rw,relatime - proc proc rw',
      '27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw',
      '30 27 8:1 / /boot rw shared:5 - vfat /dev/sda1 rw',
      '31 27 0:40 / /mnt/my\\040disk rw - ext4 /dev/sdb1 rw',
      '40 27 0:50 / / rw - overlay overlay rw',
    ].join('\n');
    const e = parseMountInfo(mi);
    assert.equal(e.length, 5);
    assert.equal(e[3]?.mountPoint, '/mnt/my disk');
    assert.deepEqual(bootMounts(e), [
      { majMin: '0:50', mountPoint: '/', source: 'overlay' },
      { majMin: '8:1', mountPoint: '/boot', source: '/dev/sda1' },
    ]);
    assert.deepEqual(bootMounts(parseProcMounts('/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\n')), [{ mountPoint: '/', source: '/dev/vda' }]);
  });

  it('detects compression by magic bytes', () => {
    assert.equal(detectCompression(Buffer.from([0x1f, 0x8b, 8, 0])), 'gzip');
    assert.equal(detectCompression(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0])), 'zstd');
    assert.equal(detectCompression(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0])), 'xz');
    assert.equal(detectCompression(Buffer.from('BZh91AY')), 'bzip2');
    assert.equal(detectCompression(Buffer.from('BZhx')), 'none');
    assert.equal(detectCompression(Buffer.from([0xeb, 0x3c, 0x90])), 'none');
    assert.equal(detectCompression(Buffer.alloc(0)), 'none');
  });

  it('computes rate, ETA and percentage', () => {
    assert.deepEqual(progressAt(50, 100, 1000), { rate: 50, percent: 50, etaSeconds: 1 });
    assert.deepEqual(progressAt(0, 100, 0), { rate: 0, percent: 0 });
    assert.deepEqual(progressAt(10, undefined, 2000), { rate: 5 });
  });

  it('formats sizes like lsblk', () => {
    assert.equal(formatBytes(16 * 1024 ** 3), '16.0 GiB');
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.5 KiB');
  });

  it('looks a relative image up as given, then under the install data dir', () => {
    assert.deepEqual(localCandidates('img.wic', '/install'), [resolve('img.wic'), '/install/img.wic']);
    assert.deepEqual(localCandidates('/srv/img.wic', '/install'), ['/srv/img.wic']);
  });

  it('rejects unknown options and bad checksums in the schema, and fills in defaults', () => {
    const ok = Value.Default(DeployImageOptions, { image: 'a.wic', target: ['/dev/sda'] });
    assert.deepEqual(ok, { image: 'a.wic', target: ['/dev/sda'], overwrite: 'ABORT', installData: '/install', allowFile: false });
    assert.ok(Value.Check(DeployImageOptions, ok));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: [] }));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: ['/dev/sda'], sha256: 'abc' }));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: ['/dev/sda'], force: true }));
  });
});

describe('the machine we run on', () => {
  it('finds the boot disk(s) and the task would never choose them', async () => {
    const disks = await bootDisks();
    for (const d of disks) assert.match(d, /^\/dev\/\S+$/);
    if (disks.length === 0) return; // e.g. root on overlay/tmpfs: nothing to protect
    const all = new Set(disks);
    assert.throws(
      () => chooseTarget(disks, { isBlockDevice: (p) => all.has(p), exists: () => true, bootDisks: disks, allowFile: false }),
      /boot medium/,
    );
  });

  it('reads sizes and emptiness of files', async () => {
    const f = join(tmp, 'probe.img');
    writeFileSync(f, Buffer.alloc(3 * MiB));
    assert.equal(await deviceSize(f), 3 * MiB);
    assert.equal(await isEmpty(f), true);
    writeFileSync(f, Buffer.concat([Buffer.alloc(MiB - 1), Buffer.from([1])]));
    assert.equal(await isEmpty(f), false, 'the last byte of the first MiB counts');
    writeFileSync(f, Buffer.concat([Buffer.alloc(MiB), Buffer.from([1])]));
    assert.equal(await isEmpty(f), true, 'data after the first MiB does not');
    writeFileSync(f, Buffer.alloc(10));
    assert.equal(await isEmpty(f), true, 'a short target is checked whole');
    assert.equal(await isEmpty(join(tmp, 'missing')), true);
    assert.equal(await isBlockDevice(f), false);
  });
});

// ---------------------------------------------------------------- loop devices

function loopSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to attach loop devices';
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'losetup is not installed';
  }
  return false;
}

describe('writing onto a real loop device', { skip: loopSkipReason() }, () => {
  let dev = '';
  const backing = join(tmp, 'loop-backing.img');
  const raw = makeImage(1);
  const rawPath = join(tmp, 'disk.img');
  const gzPath = join(tmp, 'disk2.img.gz');
  const raw2 = makeImage(2);

  before(() => {
    const fd = openSync(backing, 'w');
    ftruncateSync(fd, 8 * MiB); // sparse
    closeSync(fd);
    dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
    writeFileSync(rawPath, raw);
    writeFileSync(gzPath, gzipSync(raw2));
  });
  after(() => {
    // Only the device this test attached, by name.
    if (dev) execFileSync('losetup', ['-d', dev]);
  });

  it('sees the loop device as an empty 8 MiB block device', async () => {
    assert.equal(await isBlockDevice(dev), true);
    assert.equal(await deviceSize(dev), 8 * MiB);
    assert.equal(await isEmpty(dev), true);
  });

  it('writes a raw image, skipping candidates that are not disks, and publishes the target first', async () => {
    const r = fakeCtx({ image: rawPath, target: [join(tmp, 'no-such-disk'), dev] });
    await deployImage.run(r.ctx);
    assert.deepEqual(readBytes(dev, raw.length), raw);
    assert.equal(r.outputs.target, dev);
    assert.equal(r.order[0], 'output:target', 'the target is published before any byte is written');
    const last = r.progress.at(-1);
    assert.equal(last?.taskProgress, 100);
    assert.equal(last?.bytesDone, raw.length);
    assert.ok(r.logs.some((l) => l.includes('no-such-disk: does not exist')), r.logs.join('\n'));
  });

  it('refuses a non-empty device under ABORT and leaves its bytes alone', async () => {
    const before = sha(readBytes(dev, 8 * MiB));
    const r = fakeCtx({ image: gzPath, target: [dev], overwrite: 'ABORT' });
    await rejectsWith(deployImage.run(r.ctx), /is not empty.*installer\.target\.overwrite=OVERWRITE.*auto\.install/);
    assert.equal(sha(readBytes(dev, 8 * MiB)), before);
    assert.equal(r.outputs.target, undefined);
  });

  it('overwrites it under OVERWRITE with a gzip image, decompressed on the fly', async () => {
    const r = fakeCtx({ image: gzPath, target: dev, overwrite: 'OVERWRITE' } as unknown as Opts);
    await deployImage.run(r.ctx);
    assert.deepEqual(readBytes(dev, raw2.length), raw2);
    const last = r.progress.at(-1);
    assert.equal(last?.taskProgress, 100);
    // .gz progress counts compressed bytes against the compressed size.
    assert.equal(last?.bytesTotal, readFileSync(gzPath).length);
    assert.ok(r.logs.some((l) => /sha256 [0-9a-f]{64}/.test(l)));
  });

  it('refuses a raw image larger than the device before writing anything', async () => {
    const before = sha(readBytes(dev, 8 * MiB));
    const big = join(tmp, 'big.img');
    writeFileSync(big, Buffer.concat([Buffer.from([0xeb]), Buffer.alloc(9 * MiB - 1, 7)]));
    const r = fakeCtx({ image: big, target: [dev], overwrite: 'OVERWRITE' });
    await rejectsWith(deployImage.run(r.ctx), /does not fit on .*loop.*nothing was written/);
    assert.equal(sha(readBytes(dev, 8 * MiB)), before);
  });
});

// ---------------------------------------------------------------- files and HTTP

describe('writing images from files and HTTP', () => {
  const raw = makeImage(3);
  const gz = gzipSync(raw);
  const zst = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(1000)]);
  let server: http.Server;
  let base = '';
  let hang: http.ServerResponse | undefined;

  before(async () => {
    server = http.createServer((req, res) => {
      const send = (body: Buffer) => {
        res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
        res.end(body);
      };
      if (req.url === '/images/disk.img.gz') send(gz);
      else if (req.url === '/images/disk.zst') send(zst);
      else if (req.url === '/latest') res.writeHead(302, { location: '/images/disk.img.gz' }).end();
      else if (req.url === '/loop') res.writeHead(301, { location: '/loop' }).end();
      else if (req.url === '/slow') {
        res.writeHead(200, { 'content-length': raw.length });
        res.write(raw.subarray(0, 64 * 1024));
        hang = res; // never finishes: the test aborts
      } else res.writeHead(404).end();
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    hang?.destroy();
    server.closeAllConnections();
    server.close();
  });

  it('downloads a .gz image through a redirect and writes it', async () => {
    const out = join(tmp, 'http-out.img');
    const r = fakeCtx({ image: `${base}/latest`, target: [out], allowFile: true, sha256: sha(raw) });
    await deployImage.run(r.ctx);
    assert.deepEqual(readFileSync(out), raw);
    assert.equal(r.progress.at(-1)?.bytesTotal, gz.length);
    assert.ok(r.logs.some((l) => l.includes(`${base}/images/disk.img.gz`)), 'logs where the bytes really came from');
  });

  it('names the status code and URL when the server says no', async () => {
    const r = fakeCtx({ image: `${base}/images/missing.img`, target: [join(tmp, 'x.img')], allowFile: true });
    await rejectsWith(deployImage.run(r.ctx), new RegExp(`HTTP 404 Not Found for ${base}/images/missing\\.img`));
  });

  it('gives up after 5 redirects', async () => {
    const r = fakeCtx({ image: `${base}/loop`, target: [join(tmp, 'x.img')], allowFile: true });
    await rejectsWith(deployImage.run(r.ctx), /more than 5 redirects/);
  });

  it('fails on a sha256 mismatch, naming both digests', async () => {
    const img = join(tmp, 'sum.img');
    writeFileSync(img, raw);
    const wrong = 'ab'.repeat(32);
    const r = fakeCtx({ image: img, target: [join(tmp, 'sum-out.img')], allowFile: true, sha256: wrong.toUpperCase() });
    await rejectsWith(deployImage.run(r.ctx), new RegExp(`sha256 mismatch: expected ${wrong}, got ${sha(raw)}`));
  });

  it('refuses a zstd image with a clear message, before creating the target (file and HTTP)', async () => {
    const img = join(tmp, 'disk.img'); // misnamed on purpose: magic bytes decide
    writeFileSync(img, zst);
    const msg = /compressed with zstd: not supported by this version of deploy-image; decompress it first or use a \.gz\/raw image/;
    const out = join(tmp, 'zst-out.img');
    await rejectsWith(deployImage.run(fakeCtx({ image: img, target: [out], allowFile: true }).ctx), msg);
    await rejectsWith(deployImage.run(fakeCtx({ image: `${base}/images/disk.zst`, target: [out], allowFile: true }).ctx), msg);
    assert.equal(existsSync(out), false);
  });

  it('names both paths it tried for a missing relative image', async () => {
    const installData = join(tmp, 'install');
    const r = fakeCtx({ image: 'nope.wic', installData, target: [join(tmp, 'x.img')], allowFile: true });
    const e = await rejectsWith(deployImage.run(r.ctx), /image nope\.wic not found/);
    assert.ok(e.message.includes(resolve('nope.wic')), e.message);
    assert.ok(e.message.includes(join(installData, 'nope.wic')), e.message);
  });

  it('finds a relative image under the install data dir', async () => {
    const installData = join(tmp, 'install2');
    execFileSync('mkdir', ['-p', installData]);
    writeFileSync(join(installData, 'rel.img.gz'), gz);
    const out = join(tmp, 'rel-out.img');
    await deployImage.run(fakeCtx({ image: 'rel.img.gz', installData, target: [out], allowFile: true }).ctx);
    assert.deepEqual(readFileSync(out), raw);
  });

  it('asks at the console before overwriting a non-empty target, and stops on no', async () => {
    const img = join(tmp, 'attended.img');
    writeFileSync(img, raw);
    const out = join(tmp, 'attended-out.img');
    const old = Buffer.alloc(2 * MiB, 0x55);
    writeFileSync(out, old);
    const no = fakeCtx({ image: img, target: [out], allowFile: true, overwrite: 'OVERWRITE' }, { unattended: false, answer: false });
    await rejectsWith(deployImage.run(no.ctx), /cancelled at the console/);
    assert.deepEqual(no.questions, [`Target ${out} (2.0 MiB) is not empty. Overwrite?`]);
    assert.deepEqual(readFileSync(out), old);
    const yes = fakeCtx({ image: img, target: [out], allowFile: true }, { unattended: false, answer: true });
    await deployImage.run(yes.ctx);
    assert.deepEqual(readFileSync(out).subarray(0, raw.length), raw);
  });

  it('stops promptly when the task is aborted mid-transfer', async () => {
    const r = fakeCtx({ image: `${base}/slow`, target: [join(tmp, 'slow-out.img')], allowFile: true });
    setTimeout(() => r.ac.abort(new Error('task timed out')), 200);
    const t0 = Date.now();
    await rejectsWith(deployImage.run(r.ctx), /stopped \(task timed out\).*incomplete/);
    assert.ok(Date.now() - t0 < 5000);
  });

  it('accepts concatenated gzip members and zero padding after them, like gzip(1)', async () => {
    const data = Buffer.concat([gzipSync(raw), gzipSync(raw.subarray(0, 1000)), Buffer.alloc(3 * 65536 + 17)]);
    const out = join(tmp, 'members.img');
    const res = await copyImage({ source: Readable.from(chunks(data, 65536)), totalBytes: data.length, target: out, create: true, signal: new AbortController().signal });
    assert.equal(res.compression, 'gzip');
    assert.equal(res.bytesRead, data.length);
    assert.deepEqual(readFileSync(out), Buffer.concat([raw, raw.subarray(0, 1000)]));
  });

  it('refuses a truncated or garbage-tailed gzip image', async () => {
    const out = join(tmp, 'badgz.img');
    const ac = new AbortController();
    const cut = gz.subarray(0, gz.length - 100);
    await rejectsWith(copyImage({ source: Readable.from(chunks(cut, 65536)), target: out, create: true, signal: ac.signal }), /not a valid gzip stream \(unexpected end of file\).*incomplete/);
    const tailed = Buffer.concat([gz, Buffer.from('trailing junk')]);
    await rejectsWith(copyImage({ source: Readable.from(chunks(tailed, 65536)), target: out, create: true, signal: ac.signal }), /not a valid gzip stream \(incorrect header check\)/);
  });

  it('reports a truncated download', async () => {
    const srv = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': raw.length });
      res.end(raw.subarray(0, 1000)); // lies about the length, then closes
      res.socket?.destroy();
    });
    await new Promise<void>((ok) => srv.listen(0, '127.0.0.1', ok));
    try {
      const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}/x.img`;
      const r = fakeCtx({ image: url, target: [join(tmp, 'trunc-out.img')], allowFile: true });
      await rejectsWith(deployImage.run(r.ctx), /truncated|connection closed before the end of the image/);
    } finally {
      srv.closeAllConnections();
      srv.close();
    }
  });
});
