// The copy engine writing an image through the write-through router: the image's
// partitions land on the disk, the encrypted one's bytes in its volume (a file here,
// a dm-crypt device on a device), and the disk gets the new partition table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { copyImage } from '../../src/image/copy.ts';
import { FileSource } from '../../src/image/sources/file.ts';
import { openTarget } from '../../src/image/target.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';
import { parseGpt, writeGpt } from '../../src/crypt/gpt.ts';
import { planWriteThrough } from '../../src/crypt/write-through-layout.ts';
import { parseCryptPartition, resolvePartitions } from '../../src/crypt/partition-spec.ts';
import { RoutedTarget } from '../../src/crypt/routed-target.ts';
import { tempDir } from '../helpers.ts';

const MiB = 1024 * 1024;
const dir = tempDir('bootline-routed-');

function sized(name: string, bytes: number): string {
  const p = join(dir, name);
  const fd = openSync(p, 'w');
  ftruncateSync(fd, bytes);
  closeSync(fd);
  return p;
}

test('an image copied through the router: its encrypted partition goes into the volume, the rest onto the disk', async () => {
  const image = sized('image.img', 64 * MiB);
  execFileSync('sfdisk', ['-q', image], { input: 'label: gpt\nstart=2048, size=8MiB, name=esp\nsize=24MiB, name=root\nsize=28MiB, name=data\n' });
  const gpt = parseGpt(readFileSync(image).subarray(0, MiB));
  // Some data in each partition (and the rest a hole, so the bmap maps only these).
  const fill = new Map<number, Buffer>();
  const fd = openSync(image, 'r+');
  for (const p of gpt.partitions) {
    const b = randomBytes(MiB + 4096);
    writeSync(fd, b, 0, b.length, Number(p.firstLba) * 512 + 4096);
    fill.set(p.number, b);
  }
  closeSync(fd);
  execFileSync('bmaptool', ['create', '-o', `${image}.bmap`, image]);
  const bmap = parseBmap(readFileSync(`${image}.bmap`, 'utf8'), 'image.img.bmap');

  const diskBytes = 128 * MiB;
  const plan = planWriteThrough(gpt, diskBytes, resolvePartitions([parseCryptPartition('data:/data:reencrypt', 't')], gpt.partitions));
  const e = plan.encrypted[0]!;
  const diskPath = sized('disk.img', diskBytes);
  const volPath = sized('volume.img', e.diskEnd - e.start - 16 * MiB);
  // What openWriteThrough does on a device: our table first.
  const table = writeGpt(gpt, BigInt(diskBytes / 512), plan.newLast);
  const dfd = openSync(diskPath, 'r+');
  writeSync(dfd, table.primary, 0, table.primary.length, 0);
  writeSync(dfd, table.backup, 0, table.backup.length, table.backupOffset);
  closeSync(dfd);

  const disk = await openTarget(diskPath, { allowFile: true });
  const vol = await openTarget(volPath, { allowFile: true });
  const routed = new RoutedTarget(Object.assign(disk, { size: diskBytes }), plan.regions, new Map([[3, { target: vol, start: e.start }]]));
  const r = await copyImage({ source: new FileSource(image), target: routed, bmap });
  await routed.close();
  assert.equal(r.repairedRanges, 0);

  const onDisk = readFileSync(diskPath);
  const inVol = readFileSync(volPath);
  for (const p of gpt.partitions) {
    const at = Number(p.firstLba) * 512 + 4096;
    const want = fill.get(p.number)!;
    if (p.number === 3) {
      assert.ok(inVol.subarray(4096, 4096 + want.length).equals(want), 'the encrypted partition\'s data is in the volume, at its offset in the partition');
      assert.ok(onDisk.subarray(at, at + want.length).every((x) => x === 0), 'and not on the raw disk');
    } else {
      assert.ok(onDisk.subarray(at, at + want.length).equals(want), `partition ${p.number}'s data is on the disk`);
    }
  }
  // The disk carries our table (partition 3 grown), not the image's.
  const seen = JSON.parse(execFileSync('sfdisk', ['--json', diskPath], { encoding: 'utf8' })) as { partitiontable: { partitions: { size: number }[] } };
  assert.equal(seen.partitiontable.partitions[2]!.size * 512, e.diskEnd - e.start);
  assert.match(execFileSync('sfdisk', ['--verify', diskPath], { encoding: 'utf8' }), /No errors detected/);
});
