// In-place encryption of a partition already written (isar-cip-core's reencrypt, done
// at bootstrapping time): shrink the ext filesystem, `cryptsetup reencrypt --encrypt
// --reduce-device-size`, and resume it after a power loss. cryptsetup needs the key to
// resume, and a header in reencryption state takes no token to keep it in; so the
// temporary key is one the TPM derives from the partition's UUID (tpmDerivedKey): the next
// run makes the same key again, nothing is stored, and its keyslot is wiped at the end.
import { open } from 'node:fs/promises';
import { cryptsetup, keyDir, reencryptPending, run, type LuksDump } from './cryptsetup.ts';
import { parseGpt, SECTOR, type Gpt } from './gpt.ts';
import { newTemporaryKey } from './recovery-key.ts';
import { tpmDerivedKey } from './tpm.ts';
import { formatBytes } from '../format.ts';
import { partitionDevice, volumeName, type PreparedVolume } from './volumes.ts';
import { resolvePartitions, type CryptPartitionSpec } from './partition-spec.ts';

/** Twice the LUKS2 header, as cryptsetup's manual asks for encryption with a data shift. */
export const REDUCE_BYTES = 32 * 1024 * 1024;

export async function readDiskGpt(disk: string): Promise<Gpt> {
  const fh = await open(disk, 'r');
  try {
    const buf = Buffer.alloc(1024 * 1024);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parseGpt(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

type Log = (m: string) => void;

/** The smallest an ext2/3/4 filesystem can be shrunk to, in bytes (resize2fs -P, in its blocks). */
async function minimumExtSize(device: string): Promise<number> {
  const blocks = /minimum size of the filesystem:\s*(\d+)/i.exec((await run('resize2fs', ['-P', device])).stdout)?.[1];
  const bs = /^Block size:\s*(\d+)/m.exec((await run('dumpe2fs', ['-h', device])).stdout)?.[1];
  if (!blocks || !bs) throw new Error(`cannot tell how small the filesystem on ${device} can be (resize2fs -P, dumpe2fs -h said nothing usable)`);
  return Number(blocks) * Number(bs);
}

/** Whether the partition starts with a LUKS2 header (its magic, "LUKS\xba\xbe"). */
async function primaryLuksHeader(device: string): Promise<boolean> {
  const fh = await open(device, 'r');
  try {
    const b = Buffer.alloc(6);
    await fh.read(b, 0, 6, 0);
    return b.equals(Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]));
  } finally {
    await fh.close();
  }
}

const hasTpmToken = (d: LuksDump) => Object.values(d.tokens).some((t) => t.type === 'systemd-tpm2');

export interface InPlaceOptions {
  mkfs: string;
  /** TPM2TOOLS_TCTI for the derived key (default the kernel's resource manager). */
  tcti?: string;
  signal?: AbortSignal;
  log: Log;
  onProgress?: (fraction: number) => void;
}

/**
 * Encrypts (or resumes encrypting) the chosen partitions of `disk`; returns the
 * volumes still to enroll. A volume that is already encrypted and enrolled is skipped.
 */
export async function encryptInPlace(disk: string, specs: CryptPartitionSpec[], o: InPlaceOptions): Promise<PreparedVolume[]> {
  const gpt = await readDiskGpt(disk);
  const chosen = resolvePartitions(specs, gpt.partitions).filter((c) => c.spec.mode !== 'noencrypt');
  const out: PreparedVolume[] = [];
  for (const [i, { spec, partition: p }] of chosen.entries()) {
    const device = partitionDevice(disk, p.number);
    const name = volumeName(p.name, p.uuid);
    const base = { number: p.number, device, label: p.name, partUuid: p.uuid, name, spec };
    const progress = (f: number) => o.onProgress?.((i + f) / chosen.length);
    if ((await cryptsetup.isLuks(device)) && !(await primaryLuksHeader(device))) {
      // A plain image written over an old volume: its filesystem replaced the primary LUKS2
      // header, but the secondary one (at 16 KiB, in a block the image does not map) is left.
      o.log(`${device}: a stale LUKS2 header of an earlier volume is left beside the image's filesystem: wiped`);
      await run('wipefs', ['-q', '-a', '-t', 'crypto_LUKS', device]);
    }
    const derived = async () => {
      const dir = await keyDir();
      try {
        return await tpmDerivedKey(p.uuid.toLowerCase(), { dir: dir.path, ...(o.tcti ? { tcti: o.tcti } : {}) });
      } finally {
        await dir.remove();
      }
    };
    if (await cryptsetup.isLuks(device)) {
      const d = await cryptsetup.dump(device);
      const key = await derived();
      const ours = await cryptsetup.testKey(device, key);
      if (reencryptPending(d)) {
        if (!ours) throw new Error(`${device} is in the middle of an encryption that this device's TPM did not start: it cannot be resumed here. Write the image again (deploy-image) and re-run`);
        o.log(`${device}: resuming the interrupted encryption`);
        await cryptsetup.repair(device, key);
        await cryptsetup.reencrypt(['--resume-only', device], key, { ...(o.signal ? { signal: o.signal } : {}), onProgress: (a, b) => progress(a / b) });
      } else if (hasTpmToken(d)) {
        if (ours) {
          // Cut after enrollment, before the temporary keyslot was wiped.
          await run('systemd-cryptenroll', ['--wipe-slot=password', device]).catch(() => undefined);
          o.log(`${device}: already encrypted and enrolled; its temporary keyslot was left by an interrupted run and is wiped`);
        } else o.log(`${device} is already encrypted and has a TPM keyslot: skipped`);
        continue;
      } else if (!ours) {
        throw new Error(`${device} is already a LUKS volume, but not one this task started (no TPM keyslot, and this TPM's key does not open it): it cannot be enrolled without its passphrase. Write the image again, or wipe it (wipefs -a ${device}) if its data is not needed`);
      }
      out.push({ ...base, luksUuid: await cryptsetup.uuid(device), tempKey: key, tempSlot: 0, formatted: spec.mode === 'format' });
      continue;
    }
    if (spec.mode === 'format') {
      const key = newTemporaryKey();
      await cryptsetup.format(device, key, { ...(p.name ? { label: p.name } : {}), ...(o.signal ? { signal: o.signal } : {}) });
      await cryptsetup.open(device, name, key);
      try {
        const [cmd, ...args] = o.mkfs.split(/\s+/);
        await run(cmd!, [...args, `/dev/mapper/${name}`]);
      } finally {
        await cryptsetup.close(name);
      }
      o.log(`${device}: formatted (LUKS2 and ${o.mkfs.split(/\s+/)[0]})`);
      out.push({ ...base, luksUuid: await cryptsetup.uuid(device), tempKey: key, tempSlot: 0, formatted: true });
      continue;
    }
    const type = (await run('blkid', ['-o', 'value', '-s', 'TYPE', device], { okCodes: [2] })).stdout.trim();
    if (!/^ext[234]$/.test(type)) {
      throw new Error(`${device} holds ${type ? `a ${type} filesystem` : 'no filesystem blkid knows'}, and only ext2/3/4 can be shrunk for in-place encryption: use method: write-through (deploy-image in the same plan) or mode: format`);
    }
    const bytes = Number(p.lastLba - p.firstLba + 1n) * SECTOR;
    const t0 = performance.now();
    // e2fsck exits 1 when it fixed something: that is fine here.
    await run('e2fsck', ['-f', '-y', device], { okCodes: [1] });
    const min = await minimumExtSize(device);
    if (min > bytes - REDUCE_BYTES) {
      throw new Error(
        `the filesystem on ${device} needs at least ${formatBytes(min)} (resize2fs -P), so it cannot give up ${REDUCE_BYTES >> 20} MiB of its ${formatBytes(bytes)} for the LUKS2 header; nothing was changed. ` +
          'Use method: write-through (deploy-image in the same plan), a bigger partition, or a filesystem with 4 KiB blocks (mke2fs -b 4096)',
      );
    }
    const key = await derived();
    await run('resize2fs', [device, `${Math.floor((bytes - REDUCE_BYTES) / 1024)}K`]);
    await cryptsetup.reencryptInit(device, key, REDUCE_BYTES, p.name || undefined);
    o.log(`${device}: filesystem shrunk by ${REDUCE_BYTES >> 20} MiB, LUKS2 header made in ${Math.round(performance.now() - t0)} ms; encrypting in place`);
    await cryptsetup.reencrypt(['--resume-only', device], key, { ...(o.signal ? { signal: o.signal } : {}), onProgress: (a, b) => progress(a / b) });
    out.push({ ...base, luksUuid: await cryptsetup.uuid(device), tempKey: key, tempSlot: 0, formatted: false });
  }
  return out;
}
