// deploy-image: target choice and auto selection (pure, and on a fake sysfs tree),
// then real writes through the image engine: onto loop devices (root), onto files,
// from a real HTTP server with a redirect.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, openSync, readSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { TaskContext, TaskProgress } from '../../src/agent/tasks/builtin.ts';
import { TaskError } from '../../src/agent/tasks/builtin.ts';
import { deployImage, DeployImageOptions, localCandidates, taskProgressOf } from '../../src/agent/tasks/deploy-image/index.ts';
import {
  autoSelect,
  byIdMatcher,
  chooseTarget,
  gatherDiskFacts,
  isEmpty,
  overwriteDecision,
  splitCandidates,
} from '../../src/agent/tasks/deploy-image/target.ts';
import { bootDisks, bootMounts, deviceSize, isBlockDevice, parseMountInfo, parseProcMounts } from '../../src/image/block-devices.ts';
import { formatBytes } from '../../src/format.ts';
import { thrown } from '../helpers.ts';
import type { DiskFacts, TargetFacts } from '../../src/agent/tasks/deploy-image/target.ts';
import { generateKeyPair } from '../../src/image/signature.ts';

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

function fakeCtx(
  options: Partial<Opts> & Pick<Opts, 'image' | 'target'>,
  o: { unattended?: boolean; answer?: boolean; onProgress?: (p: TaskProgress, ac: AbortController) => void } = {},
): Run {
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
      o.onProgress?.(p, ac);
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

  it('maps the engine progress to task progress, estimating from the ETA when the total is unknown', () => {
    const known = taskProgressOf({ bytesDone: 25, bytesTotal: 100, rate: 50, etaSeconds: 1.5, phase: 'writing' }, 1, '/dev/sdb');
    assert.equal(known.taskProgress, 25);
    assert.equal(known.bytesDone, 25);
    assert.equal(known.bytesTotal, 100);
    assert.equal(known.rate, 50);
    assert.equal(known.etaSeconds, 1.5);
    assert.equal(known.message, 'writing /dev/sdb');
    // A .zst without a bmap: 3 s in, 1 s to go by the compressed bytes -> 75 %.
    const est = taskProgressOf({ bytesDone: 3000, rate: 1000, etaSeconds: 1, phase: 'writing' }, 3, '/dev/sdb');
    assert.equal(est.taskProgress, 75);
    assert.equal(est.bytesTotal, undefined);
    assert.equal(taskProgressOf({ bytesDone: 10, rate: 1, phase: 'writing' }, 3, 'x').taskProgress, 0);
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
    assert.deepEqual(ok, {
      image: 'a.wic',
      target: ['/dev/sda'],
      overwrite: 'ABORT',
      installData: '/install',
      nobmap: false,
      verify: true,
      holes: 'skip',
      skipIdentical: false,
      allowFile: false,
    });
    assert.ok(Value.Check(DeployImageOptions, ok));
    const full = {
      image: 'https://srv/a.wic.zst',
      target: ['auto'],
      targetRules: { minSize: 8 * 1024 ** 3, removable: true, byId: 'nvme-*' },
      bmap: 'https://srv/a.wic.bmap',
      verify: false,
      holes: 'discard',
      ca: '/etc/ca.pem',
      token: 't',
      headers: { 'x-line': '3' },
    };
    assert.ok(Value.Check(DeployImageOptions, Value.Default(DeployImageOptions, full)));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: ['auto'], targetRules: { size: 1 } }));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: ['/dev/sda'], holes: 'punch' }));
    assert.ok(!Value.Check(DeployImageOptions, { image: 'a', target: ['/dev/sda'], headers: { a: 1 } }));
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


// ---------------------------------------------------------------- target: auto

const GiB = 1024 ** 3;

describe('automatic target selection (target: [auto])', () => {
  const disk = (name: string, over: Partial<DiskFacts> = {}): DiskFacts => ({ name, size: 64 * GiB, removable: false, holders: [], mounted: [], byId: [], ...over });
  const machine = [
    disk('sda', { byId: ['ata-BOOT_SSD'] }),
    disk('nvme0n1', { size: 512 * GiB, byId: ['nvme-Samsung_990_S123', 'nvme-eui.0025'] }),
    disk('sdb', { size: 16 * GiB, removable: true, byId: ['usb-SanDisk_Ultra'] }),
    disk('loop0'),
    disk('loop1'),
    disk('ram0'),
    disk('zram0'),
    disk('sr0'),
    disk('md127'),
    disk('dm-0'),
  ];
  const boot = [{ disk: '/dev/sda', device: '/dev/sda2', mountPoint: '/' }];

  it('takes the one disk that is neither the boot medium nor removable nor a virtual device', () => {
    const c = autoSelect(machine, {}, boot);
    assert.equal(c.target, '/dev/nvme0n1');
    assert.deepEqual(c.rejected, [
      { name: 'sda', reason: 'boot medium (holds /)' },
      { name: 'sdb', reason: 'removable (allow with targetRules.removable: true)' },
    ]);
  });

  it('refuses to guess when several disks qualify, naming them and how to narrow', () => {
    const e = thrown(TaskError, () => autoSelect(machine, { removable: true }, boot));
    assert.match(e.message, /2 disks match target: auto \(removable allowed\): \/dev\/nvme0n1 \(512\.0 GiB, nvme-Samsung_990_S123\), \/dev\/sdb \(16\.0 GiB, removable, usb-SanDisk_Ultra\)/);
    assert.match(e.message, /set the task option target.*byId.*minSize/i);
  });

  it('narrows with minSize and with a by-id glob or /regex/', () => {
    assert.equal(autoSelect(machine, { removable: true, minSize: 100 * GiB }, boot).target, '/dev/nvme0n1');
    assert.equal(autoSelect(machine, { removable: true, byId: 'usb-SanDisk*' }, boot).target, '/dev/sdb');
    assert.equal(autoSelect(machine, { removable: true, byId: '/^nvme-Samsung_99\\d_/' }, boot).target, '/dev/nvme0n1');
  });

  it('lists every disk and why it was rejected when none qualifies', () => {
    const disks = [...machine, disk('sdc', { holders: ['dm-1 on /dev/sdc2'] }), disk('sdd', { mounted: ['/dev/sdd1 on /data'] }), disk('mmcblk0', { size: 0 })];
    const e = thrown(TaskError, () => autoSelect(disks, { minSize: 1024 * GiB }, boot));
    for (const part of [
      'no disk matches target: auto (removable excluded, minSize 1.0 TiB)',
      '/dev/sda: boot medium (holds /)',
      '/dev/nvme0n1: 512.0 GiB, smaller than minSize 1.0 TiB',
      '/dev/sdb: removable (allow with targetRules.removable: true)',
      '/dev/sdc: in use by dm-1 on /dev/sdc2',
      '/dev/sdd: mounted (/dev/sdd1 on /data)',
      '/dev/mmcblk0: no medium (size 0)',
      'loop0, loop1: loop devices, never a target',
      'ram0, zram0: RAM disks',
      'sr0: optical drive',
      'md127: software RAID',
      'dm-0: device-mapper device',
      'installer.target.dev',
    ]) {
      assert.ok(e.message.includes(part), `${part} in: ${e.message}`);
    }
    const id = thrown(TaskError, () => autoSelect(machine, { byId: 'ata-*' }, boot));
    assert.match(id.message, /\/dev\/nvme0n1: no \/dev\/disk\/by-id name matches ata-\* \(has nvme-Samsung_990_S123, nvme-eui\.0025\)/);
    assert.match(thrown(TaskError, () => autoSelect([], {}, [])).message, /no disks found in \/sys\/block/);
  });

  it('matches by-id globs on the whole name', () => {
    assert.ok(byIdMatcher('ata-*').test('ata-X'));
    assert.ok(!byIdMatcher('ata-*').test('wwn-ata-X'));
    assert.ok(byIdMatcher('nvme-?amsung[_-]9*').test('nvme-Samsung_990'));
    assert.ok(byIdMatcher('usb-a.b').test('usb-a.b'));
    assert.ok(!byIdMatcher('usb-a.b').test('usb-aXb'));
    assert.throws(() => byIdMatcher('/(/'), /not a valid regular expression/);
  });

  it('gathers the facts from a sysfs tree and /dev/disk/by-id', async () => {
    const root = join(tmp, 'fake-root');
    const sys = join(root, 'sys');
    const dev = join(root, 'dev');
    const put = (p: string, v = '') => {
      mkdirSync(join(p, '..'), { recursive: true });
      writeFileSync(p, `${v}\n`);
    };
    const blockDev = (name: string, o: { size: number; removable?: boolean; majMin: string; parts?: { name: string; majMin: string; holders?: string[] }[]; holders?: string[] }) => {
      const d = join(sys, 'block', name);
      put(join(d, 'size'), String(o.size / 512));
      put(join(d, 'removable'), o.removable ? '1' : '0');
      put(join(d, 'dev'), o.majMin);
      mkdirSync(join(d, 'holders'), { recursive: true });
      for (const h of o.holders ?? []) mkdirSync(join(d, 'holders', h));
      for (const p of o.parts ?? []) {
        put(join(d, p.name, 'partition'), '1');
        put(join(d, p.name, 'dev'), p.majMin);
        mkdirSync(join(d, p.name, 'holders'), { recursive: true });
        for (const h of p.holders ?? []) mkdirSync(join(d, p.name, 'holders', h));
      }
      mkdirSync(join(d, 'queue'), { recursive: true }); // not a partition: ignored
    };
    blockDev('sda', { size: 32 * GiB, majMin: '8:0', parts: [{ name: 'sda1', majMin: '8:1' }, { name: 'sda2', majMin: '8:2' }] });
    blockDev('sdb', { size: 16 * GiB, removable: true, majMin: '8:16' });
    blockDev('sdc', { size: 64 * GiB, majMin: '8:32', parts: [{ name: 'sdc1', majMin: '8:33', holders: ['dm-0'] }] });
    blockDev('nvme0n1', { size: 256 * GiB, majMin: '259:0' });
    blockDev('loop0', { size: 0, majMin: '7:0' });
    const byId = join(dev, 'disk', 'by-id');
    mkdirSync(byId, { recursive: true });
    symlinkSync('../../sda', join(byId, 'ata-DATA_DISK'));
    symlinkSync('../../sda1', join(byId, 'ata-DATA_DISK-part1'));
    symlinkSync('../../sdb', join(byId, 'usb-Stick'));
    symlinkSync('../../nvme0n1', join(byId, 'nvme-Fast_SSD'));
    symlinkSync('../../nvme0n1', join(byId, 'nvme-eui.01'));
    const mountinfo = '27 1 8:2 / /srv rw,relatime - ext4 /dev/sda2 rw\n22 27 0:21 / /proc rw - proc proc rw\n';

    const facts = await gatherDiskFacts({ sysfs: sys, dev, mountinfo });
    assert.deepEqual(facts, [
      { name: 'loop0', size: 0, removable: false, holders: [], mounted: [], byId: [] },
      { name: 'nvme0n1', size: 256 * GiB, removable: false, holders: [], mounted: [], byId: ['nvme-Fast_SSD', 'nvme-eui.01'] },
      { name: 'sda', size: 32 * GiB, removable: false, holders: [], mounted: ['/dev/sda2 on /srv'], byId: ['ata-DATA_DISK'] },
      { name: 'sdb', size: 16 * GiB, removable: true, holders: [], mounted: [], byId: ['usb-Stick'] },
      { name: 'sdc', size: 64 * GiB, removable: false, holders: ['dm-0 on /dev/sdc1'], mounted: [], byId: [] },
    ]);
    // With the boot medium elsewhere, the NVMe disk is the only candidate; allowing removable makes two.
    assert.equal(autoSelect(facts, {}, ['/dev/mmcblk0']).target, '/dev/nvme0n1');
    assert.match(thrown(TaskError, () => autoSelect(facts, { removable: true }, [])).message, /2 disks match/);
    assert.equal(autoSelect(facts, { removable: true, byId: 'usb-*' }, []).target, '/dev/sdb');
    assert.deepEqual(await gatherDiskFacts({ sysfs: join(root, 'nowhere'), dev, mountinfo: '' }), []);
  });

  it('refuses auto mixed with explicit candidates before touching anything', async () => {
    const r = fakeCtx({ image: join(tmp, 'any.img'), target: ['auto', '/dev/sdb'] });
    writeFileSync(join(tmp, 'any.img'), Buffer.alloc(10));
    await rejectsWith(deployImage.run(r.ctx), /target "auto" cannot be combined with other candidates \(\/dev\/sdb\)/);
    assert.equal(r.outputs.target, undefined);
  });
});

// ---------------------------------------------------------------- loop devices

function loopSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to attach loop devices';
  for (const tool of ['losetup', 'zstd', 'xz', 'bmaptool']) {
    try {
      execFileSync(tool, ['--version'], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed`;
    }
  }
  return false;
}

/** A sparse image file: `size` bytes, random data only at the given [offset, length] regions. */
function sparseImage(path: string, size: number, regions: [number, number][]): Buffer {
  const fd = openSync(path, 'w');
  const whole = Buffer.alloc(size);
  try {
    ftruncateSync(fd, size);
    for (const [at, len] of regions) {
      const data = randomBytes(len);
      data.copy(whole, at);
      writeSync(fd, data, 0, len, at);
    }
  } finally {
    closeSync(fd);
  }
  return whole;
}

function fill(dev: string, byte: number, len: number): void {
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, Buffer.alloc(len, byte), 0, len, 0);
  } finally {
    closeSync(fd);
  }
}

const allBytes = (b: Buffer, v: number) => b.every((x) => x === v);

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

  it('writes a raw image, skipping candidates that are not disks, publishes the target first and reports bytes, rate and ETA', async () => {
    const r = fakeCtx({ image: rawPath, target: [join(tmp, 'no-such-disk'), dev] });
    await deployImage.run(r.ctx);
    assert.deepEqual(readBytes(dev, raw.length), raw);
    assert.equal(r.outputs.target, dev);
    assert.equal(r.order[0], 'output:target', 'the target is published before any byte is written');
    const last = r.progress.at(-1);
    assert.equal(last?.taskProgress, 100);
    assert.equal(last?.bytesDone, raw.length);
    assert.equal(last?.bytesTotal, raw.length);
    assert.equal(typeof last?.rate, 'number');
    assert.equal(last?.etaSeconds, 0);
    assert.ok(r.logs.some((l) => l.includes('no-such-disk: does not exist')), r.logs.join('\n'));
    assert.ok(r.logs.some((l) => l.includes('no bmap beside')), r.logs.join('\n'));
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
    assert.equal(last?.bytesDone, raw2.length);
    assert.ok(r.logs.some((l) => /gzip image/.test(l)), r.logs.join('\n'));
  });

  for (const [tool, ext] of [
    ['zstd', 'zst'],
    ['xz', 'xz'],
  ] as const) {
    it(`writes a ${tool} image made with the ${tool} CLI`, async () => {
      const img = makeImage(tool === 'zstd' ? 4 : 5);
      const plain = join(tmp, `c-${tool}.img`);
      writeFileSync(plain, img);
      execFileSync(tool, ['-q', '-f', '-k', plain]);
      const r = fakeCtx({ image: `${plain}.${ext}`, target: [dev], overwrite: 'OVERWRITE', sha256: sha(img) });
      await deployImage.run(r.ctx);
      assert.deepEqual(readBytes(dev, img.length), img);
      assert.equal(r.progress.at(-1)?.bytesDone, img.length);
      assert.ok(r.logs.some((l) => l.includes(`${tool}-compressed`)), r.logs.join('\n'));
    });
  }

  it('writes only the blocks the bmap beside the image maps: the rest of a 0xAA disk stays 0xAA', async () => {
    fill(dev, 0xaa, 8 * MiB);
    const img = join(tmp, 'mapped.img');
    const regions: [number, number][] = [
      [0, MiB],
      [3 * MiB, MiB / 2],
      [6 * MiB - 8192, 8192],
    ];
    const whole = sparseImage(img, 6 * MiB, regions);
    execFileSync('bmaptool', ['create', '-o', `${img}.bmap`, img], { stdio: 'ignore' });
    execFileSync('zstd', ['-q', '-f', '-k', img]);
    // The bmap is found beside the .zst like bmaptool does (mapped.img.zst -> mapped.img.bmap).
    const r = fakeCtx({ image: `${img}.zst`, target: [dev], overwrite: 'OVERWRITE' });
    await deployImage.run(r.ctx);
    const disk = readBytes(dev, 8 * MiB);
    for (const [at, len] of regions) assert.deepEqual(disk.subarray(at, at + len), whole.subarray(at, at + len), `mapped region at ${at}`);
    assert.ok(allBytes(disk.subarray(MiB, 3 * MiB), 0xaa), 'the unmapped gap stays as it was');
    assert.ok(allBytes(disk.subarray(3.5 * MiB, 6 * MiB - 8192), 0xaa));
    assert.ok(allBytes(disk.subarray(6 * MiB), 0xaa), 'bytes past the image are untouched');
    assert.ok(r.logs.some((l) => l.includes(`using bmap ${img}.bmap`)), r.logs.join('\n'));
    const last = r.progress.at(-1);
    assert.equal(last?.bytesTotal, MiB + MiB / 2 + 8192, 'progress counts the mapped bytes');
    assert.equal(last?.bytesDone, last?.bytesTotal);

    // holes: zero makes the gaps read back as zeros.
    fill(dev, 0xaa, 8 * MiB);
    await deployImage.run(fakeCtx({ image: img, target: [dev], overwrite: 'OVERWRITE', holes: 'zero' }).ctx);
    const zeroed = readBytes(dev, 8 * MiB);
    assert.deepEqual(zeroed.subarray(0, 6 * MiB), whole);
    assert.ok(allBytes(zeroed.subarray(6 * MiB), 0xaa));
  });

  it('refuses a broken bmap, and a raw image larger than the device, before asking or writing', async () => {
    const before = sha(readBytes(dev, 8 * MiB));
    const img = join(tmp, 'badmap.img');
    writeFileSync(img, Buffer.alloc(4096, 1));
    writeFileSync(`${img}.bmap`, '<?xml version="1.0"?><bmap version="2.0"><ImageSize>x</ImageSize></bmap>');
    const bad = fakeCtx({ image: img, target: [dev] }, { unattended: false, answer: true });
    await rejectsWith(deployImage.run(bad.ctx), /bmap .*badmap\.img\.bmap cannot be used: .*nobmap: true/);
    assert.deepEqual(bad.questions, []);

    // With trusted keys, an unsigned bmap is refused before the question too.
    const signed = join(tmp, 'unsigned.img');
    writeFileSync(signed, Buffer.alloc(4096, 2));
    execFileSync('bmaptool', ['create', '-o', `${signed}.bmap`, signed]);
    writeFileSync(join(tmp, 'trusted.pub'), generateKeyPair().publicPem);
    const unsigned = fakeCtx({ image: signed, target: [dev], trustedKeys: join(tmp, 'trusted.pub') }, { unattended: false, answer: true });
    await rejectsWith(deployImage.run(unsigned.ctx), /unsigned\.img\.bmap is not signed .*refusing to write it/);
    assert.deepEqual(unsigned.questions, []);

    const big = join(tmp, 'big.img');
    writeFileSync(big, Buffer.concat([Buffer.from([0xeb]), Buffer.alloc(9 * MiB - 1, 7)]));
    const r = fakeCtx({ image: big, target: [dev] }, { unattended: false, answer: true });
    await rejectsWith(deployImage.run(r.ctx), /does not fit on .*loop.*nothing was written/);
    assert.deepEqual(r.questions, []);
    assert.equal(sha(readBytes(dev, 8 * MiB)), before);
  });
});

// ---------------------------------------------------------------- files and HTTP

describe('writing images from files and HTTP', () => {
  const raw = makeImage(3);
  const gz = gzipSync(raw);
  const slow = Buffer.alloc(6 * MiB, 0x33);
  let server: http.Server;
  let base = '';
  const hanging: http.ServerResponse[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      const send = (body: Buffer) => {
        res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
        res.end(req.method === 'HEAD' ? undefined : body);
      };
      if (req.url === '/images/disk.img.gz') send(gz);
      else if (req.url === '/latest') res.writeHead(302, { location: '/images/disk.img.gz' }).end();
      else if (req.url === '/loop') res.writeHead(301, { location: '/loop' }).end();
      else if (req.url === '/slow' && req.method === 'GET') {
        res.writeHead(200, { 'content-length': slow.length + MiB });
        res.write(slow);
        hanging.push(res); // never finishes: the test aborts
      } else res.writeHead(404).end();
    });
    await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    for (const h of hanging) h.destroy();
    server.closeAllConnections();
    server.close();
  });

  it('downloads a .gz image through a redirect and writes it', async () => {
    const out = join(tmp, 'http-out.img');
    const r = fakeCtx({ image: `${base}/latest`, target: [out], allowFile: true, sha256: sha(raw) });
    await deployImage.run(r.ctx);
    assert.deepEqual(readFileSync(out), raw);
    assert.equal(r.progress.at(-1)?.bytesDone, raw.length);
    assert.equal(r.progress.at(-1)?.taskProgress, 100);
  });

  it('names the status code and URL when the server says no', async () => {
    const r = fakeCtx({ image: `${base}/images/missing.img`, target: [join(tmp, 'x.img')], allowFile: true });
    await rejectsWith(deployImage.run(r.ctx), new RegExp(`HTTP 404 Not Found from ${base}/images/missing\\.img`));
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
    await rejectsWith(deployImage.run(r.ctx), new RegExp(`sha256 mismatch .*expected ${wrong}, got ${sha(raw)}`));
  });

  it('refuses an unsupported scheme and standard input before touching the target', async () => {
    await rejectsWith(deployImage.run(fakeCtx({ image: 'tftp://srv/a.img', target: [join(tmp, 'x.img')], allowFile: true }).ctx), /tftp:\/\/ scheme is not supported/);
    await rejectsWith(deployImage.run(fakeCtx({ image: '-', target: [join(tmp, 'x.img')], allowFile: true }).ctx), /standard input/);
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
    mkdirSync(installData, { recursive: true });
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
    assert.equal(no.outputs.target, undefined);
    const yes = fakeCtx({ image: img, target: [out], allowFile: true }, { unattended: false, answer: true });
    await deployImage.run(yes.ctx);
    assert.deepEqual(readFileSync(out).subarray(0, raw.length), raw);
  });

  it('stops promptly when the task is aborted mid-transfer', async () => {
    let abortedAt = 0;
    const r = fakeCtx(
      { image: `${base}/slow`, target: [join(tmp, 'slow-out.img')], allowFile: true },
      {
        onProgress: (p, ac) => {
          if ((p.bytesDone ?? 0) > 0 && !ac.signal.aborted) {
            abortedAt = Date.now();
            ac.abort(new Error('task timed out'));
          }
        },
      },
    );
    const guard = setTimeout(() => r.ac.abort(new Error('task timed out')), 5000);
    try {
      await rejectsWith(deployImage.run(r.ctx), /stopped \(task timed out\).*incomplete/);
    } finally {
      clearTimeout(guard);
    }
    assert.ok(abortedAt > 0, 'progress reported bytes before the abort');
    assert.ok(Date.now() - abortedAt < 3000);
  });
});
