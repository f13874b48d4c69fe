// Write-through encryption's pure half, checked against the real tools: partition
// tables read and rewritten (sfdisk reads ours), the plan that grows a partition for
// its LUKS2 header, the names of CRYPT_PARTITIONS, and target crypttab/fstab.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { GptError, parseGpt, writeGpt, PRIMARY_BYTES } from '../../src/crypt/gpt.ts';
import { LayoutError, LUKS2_HEADER_BYTES, planWriteThrough, split } from '../../src/crypt/write-through-layout.ts';
import { parseCryptPartition, PartitionSpecError, resolvePartitions } from '../../src/crypt/partition-spec.ts';
import { crypttabWith, fstabWith } from '../../src/crypt/target-config.ts';
import { newRecoveryKey, recoveryKeyOf } from '../../src/crypt/recovery-key.ts';
import { RECOVERY_KEY_PATTERN } from '../../src/api/recovery-key.ts';
import { partitionDevice, volumeName } from '../../src/crypt/volumes.ts';
import { tempDir } from '../helpers.ts';

const MiB = 1024 * 1024;
const dir = tempDir('bootline-crypt-layout-');

/** An image file with a GPT made by sfdisk: esp 8 MiB, root 24 MiB, data to 4 MiB before the end. */
function sfdiskImage(name: string, sizeMiB: number, script: string): string {
  const p = join(dir, name);
  const fd = openSync(p, 'w');
  ftruncateSync(fd, sizeMiB * MiB);
  closeSync(fd);
  execFileSync('sfdisk', ['-q', p], { input: script });
  return p;
}

const STANDARD = 'label: gpt\n' + 'start=2048, size=8MiB, type=uefi, name=esp\n' + 'size=24MiB, type=linux, name=root\n' + 'size=28MiB, type=linux, name=data\n';
type SfdiskJson = { partitiontable: { partitions: { node: string; start: number; size: number; name?: string; uuid: string }[]; lastlba: number } };
const sfdiskJson = (p: string) => JSON.parse(execFileSync('sfdisk', ['--json', p], { encoding: 'utf8' })) as SfdiskJson;

test('the partition table of an image made by sfdisk is read as sfdisk reads it', () => {
  const img = sfdiskImage('std.img', 64, STANDARD);
  const gpt = parseGpt(readFileSync(img).subarray(0, MiB));
  const ref = sfdiskJson(img).partitiontable.partitions;
  assert.equal(gpt.partitions.length, 3);
  for (const [i, p] of gpt.partitions.entries()) {
    assert.equal(Number(p.firstLba), ref[i]!.start);
    assert.equal(Number(p.lastLba - p.firstLba + 1n), ref[i]!.size);
    assert.equal(p.name, ref[i]!.name);
    assert.equal(p.uuid.toUpperCase(), ref[i]!.uuid);
  }
  assert.equal(gpt.sectors, 64n * 2048n);
});

test('a table rewritten for a bigger disk, with a partition grown, is valid for sfdisk and keeps the rest', () => {
  const img = sfdiskImage('grow.img', 64, STANDARD);
  const gpt = parseGpt(readFileSync(img).subarray(0, MiB));
  const disk = join(dir, 'disk.img');
  const fd = openSync(disk, 'w');
  ftruncateSync(fd, 128 * MiB);
  const data = gpt.partitions[2]!;
  const t = writeGpt(gpt, 128n * 2048n, new Map([[3, data.lastLba + 32768n]]));
  writeSync(fd, t.primary, 0, t.primary.length, 0);
  writeSync(fd, t.backup, 0, t.backup.length, t.backupOffset);
  closeSync(fd);
  // sfdisk --verify checks both headers, their CRCs and the entries.
  const verify = execFileSync('sfdisk', ['--verify', disk], { encoding: 'utf8' });
  assert.match(verify, /No errors detected/);
  const ref = sfdiskJson(disk).partitiontable;
  assert.equal(ref.partitions[2]!.size, Number(data.lastLba - data.firstLba + 1n) + 32768);
  assert.equal(ref.partitions[2]!.name, 'data');
  assert.equal(ref.partitions[0]!.uuid, gpt.partitions[0]!.uuid.toUpperCase());
  assert.equal(ref.lastlba, 128 * 2048 - 34);
  // Re-parsed by us too, from what we wrote.
  const again = parseGpt(readFileSync(disk).subarray(0, PRIMARY_BYTES));
  assert.equal(again.sectors, 128n * 2048n);
});

test('a damaged partition table is refused, naming the damage', () => {
  const img = readFileSync(sfdiskImage('bad.img', 64, STANDARD)).subarray(0, MiB);
  const hdr = Buffer.from(img);
  hdr.writeUInt8(hdr.readUInt8(552) ^ 1, 552);
  assert.throws(() => parseGpt(hdr), (e: Error) => e instanceof GptError && /header checksum/.test(e.message));
  const ents = Buffer.from(img);
  ents.writeUInt8(ents.readUInt8(1084) ^ 1, 1084);
  assert.throws(() => parseGpt(ents), (e: Error) => e instanceof GptError && /entry array checksum/.test(e.message));
  const mbr = sfdiskImage('mbr.img', 8, 'label: dos\nsize=4MiB, type=83\n');
  assert.throws(() => parseGpt(readFileSync(mbr).subarray(0, MiB)), /no GPT/);
});

test('write-through grows the encrypted partition by the LUKS2 header and routes only its data into the volume', () => {
  const gpt = parseGpt(readFileSync(sfdiskImage('plan.img', 64, STANDARD)).subarray(0, MiB));
  const chosen = resolvePartitions([parseCryptPartition('data:/data:reencrypt', 'test')], gpt.partitions);
  const plan = planWriteThrough(gpt, 128 * MiB, chosen);
  const [e] = plan.encrypted;
  assert.equal(e!.number, 3);
  assert.equal(e!.diskEnd - e!.imageEnd, LUKS2_HEADER_BYTES);
  // Every byte has exactly one place: regions are contiguous from 0.
  let at = 0;
  for (const r of plan.regions) {
    assert.equal(r.start, at);
    at = r.end;
  }
  assert.equal(at, Infinity);
  const pieces = [...split(plan.regions, e!.start - 4096, 8192)];
  assert.deepEqual(pieces.map((p) => [p.region.to, p.to - p.from]), [['disk', 4096], ['volume', 4096]]);
  const head = [...split(plan.regions, 0, MiB)];
  assert.equal(head[0]!.region.to, 'drop');
  assert.equal(head[0]!.to, 34 * 512);
  // expand: to the disk's end, aligned.
  const big = planWriteThrough(gpt, 1024 * MiB, resolvePartitions([parseCryptPartition('data::reencrypt:expand', 'test')], gpt.partitions));
  assert.ok(big.encrypted[0]!.diskEnd > 1000 * MiB && big.encrypted[0]!.diskEnd <= 1024 * MiB - 34 * 512);
  assert.equal((big.encrypted[0]!.diskEnd - big.encrypted[0]!.start) % MiB, 0);
});

test('write-through refuses a disk too small for the header and a partition with no room after it', () => {
  const gpt = parseGpt(readFileSync(sfdiskImage('small.img', 64, STANDARD)).subarray(0, MiB));
  const data = resolvePartitions([parseCryptPartition('data::reencrypt', 't')], gpt.partitions);
  assert.throws(() => planWriteThrough(gpt, 70 * MiB, data), (e: Error) => e instanceof LayoutError && /too small for the image with the LUKS2 header of partition 3 "data"/.test(e.message) && /in-place/.test(e.message));
  const root = resolvePartitions([parseCryptPartition('root:/:reencrypt', 't')], gpt.partitions);
  assert.throws(() => planWriteThrough(gpt, 1024 * MiB, root), (e: Error) => e instanceof LayoutError && /next partition starts 0 B after its end/.test(e.message));
});

test('CRYPT_PARTITIONS words and partition names: what is wrong is said, with what exists', () => {
  assert.deepEqual(parseCryptPartition('home:/home:reencrypt', 'x'), { partition: 'home', mountpoint: '/home', mode: 'reencrypt' });
  assert.deepEqual(parseCryptPartition('3::format:expand', 'x'), { partition: '3', mode: 'format', expand: true });
  assert.throws(() => parseCryptPartition('home:/home', 'CRYPT_PARTITIONS[0]'), /CRYPT_PARTITIONS\[0\]: "home:\/home" is not <partition>:<mountpoint>:<mode>/);
  assert.throws(() => parseCryptPartition('home:/home:encrypt', 'x'), /mode "encrypt" is not one of reencrypt, format, noencrypt/);
  assert.throws(() => parseCryptPartition('home:home:format', 'x'), /must be an absolute path/);
  const parts = [
    { number: 1, uuid: 'A', name: 'esp', lastLba: 10n },
    { number: 2, uuid: 'B', name: 'root', lastLba: 20n },
    { number: 3, uuid: 'C', name: 'root', lastLba: 30n },
  ];
  assert.throws(() => resolvePartitions([{ partition: 'hoem', mode: 'reencrypt' }], parts), (e: Error) => e instanceof PartitionSpecError && /"hoem" is not in the image's partition table \(partitions: 1 "esp", 2 "root", 3 "root"\)/.test(e.message));
  assert.throws(() => resolvePartitions([{ partition: 'root', mode: 'reencrypt' }], parts), /names 2 partitions/);
  assert.throws(() => resolvePartitions([{ partition: '2', mode: 'reencrypt' }, { partition: 'PARTUUID=b', mode: 'format' }], parts), /named twice/);
  assert.throws(() => resolvePartitions([{ partition: '1', mode: 'reencrypt', expand: true }], parts), /only the last partition/);
  assert.equal(resolvePartitions([{ partition: 'PARTUUID=c', mode: 'reencrypt' }], parts)[0]!.partition.number, 3);
});

test('the target learns its volumes: crypttab lines with the TPM, fstab pointed at the opened volume', () => {
  const v = { name: 'data', luksUuid: '1111-2222', partUuid: 'ABCD-EF', label: 'data', mountpoint: '/data' };
  const ct = crypttabWith('# old\nswap /dev/sda2 /dev/urandom swap\ndata UUID=old none luks\n', [v]);
  assert.equal(ct, '# old\nswap /dev/sda2 /dev/urandom swap\ndata UUID=1111-2222 none luks,discard,tpm2-device=auto\n');
  const fs = fstabWith('UUID=aaaa / ext4 defaults 0 1\nPARTLABEL=data /srv ext4 defaults 0 2\n', [v]);
  assert.match(fs, /^\/dev\/mapper\/data \/srv ext4/m);
  assert.match(fs, /^\/dev\/mapper\/data\t\/data\tauto/m);
  assert.match(fs, /^UUID=aaaa \/ ext4/m);
  assert.equal(fstabWith('/dev/disk/by-partuuid/abcd-ef /data ext4 defaults 0 2\n', [v]), '/dev/mapper/data /data ext4 defaults 0 2\n');
});

test('recovery keys are in systemd\'s format, device and volume names follow the kernel\'s', () => {
  assert.equal(recoveryKeyOf(new Uint8Array(32).fill(0x0f)), Array(8).fill('cvcvcvcv').join('-'));
  const a = newRecoveryKey();
  assert.match(a, new RegExp(RECOVERY_KEY_PATTERN));
  assert.notEqual(a, newRecoveryKey());
  assert.equal(partitionDevice('/dev/vda', 3), '/dev/vda3');
  assert.equal(partitionDevice('/dev/nvme0n1', 3), '/dev/nvme0n1p3');
  assert.equal(partitionDevice('/dev/loop7', 1), '/dev/loop7p1');
  assert.equal(volumeName('data', 'X'), 'data');
  assert.equal(volumeName('my data', 'AB-CD'), 'luks-AB-CD');
});
