// The volumes one run encrypts, as written down between deploy-image (which makes and
// fills them) and encrypt-disk (which enrolls their keys): a 0600 file in the agent's
// state directory. It holds each volume's temporary key until encrypt-disk wipes it.
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { CryptPartitionSpec } from './partition-spec.ts';

export interface PreparedVolume {
  number: number;
  /** The partition's device node, e.g. /dev/vda3. */
  device: string;
  /** GPT label (may be empty). */
  label: string;
  partUuid: string;
  luksUuid: string;
  /** The name the target's crypttab gives it (and the dm name while the agent holds it open). */
  name: string;
  spec: CryptPartitionSpec;
  /** The temporary passphrase of keyslot `tempSlot`. */
  tempKey: string;
  tempSlot: number;
  /** Whether its filesystem was made here (mode format) rather than written from the image. */
  formatted: boolean;
}

export interface Handoff {
  disk: string;
  method: 'write-through';
  volumes: PreparedVolume[];
}

export const handoffPath = (stateDir: string) => join(stateDir, 'crypt', 'volumes.json');

export async function saveHandoff(stateDir: string, h: Handoff): Promise<void> {
  const p = handoffPath(stateDir);
  await mkdir(dirname(p), { recursive: true, mode: 0o700 });
  await writeFile(`${p}.tmp`, JSON.stringify(h, null, 2), { mode: 0o600 });
  await rename(`${p}.tmp`, p);
}

export async function loadHandoff(stateDir: string): Promise<Handoff | undefined> {
  try {
    return JSON.parse(await readFile(handoffPath(stateDir), 'utf8')) as Handoff;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read ${handoffPath(stateDir)} (written by deploy-image): ${(e as Error).message}`);
  }
}

export const removeHandoff = (stateDir: string) => rm(handoffPath(stateDir), { force: true });

/** The device node of partition `n` of `disk` (sda -> sda3; nvme0n1, mmcblk0, loop0 -> p3). */
export function partitionDevice(disk: string, n: number): string {
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}

/** A dm and crypttab name for a partition: its label when that is a safe name, else luks-<partuuid>. */
export function volumeName(label: string, partUuid: string): string {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$/.test(label) ? label : `luks-${partUuid}`;
}
