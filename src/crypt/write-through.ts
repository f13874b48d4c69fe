// Write-through encryption, the I/O half: before the image is streamed, the disk gets
// a partition table with the encrypted partitions grown, each is LUKS2-formatted with a
// temporary key and opened, and the copy engine is given a target that routes their
// data into the opened volumes. Encryption then costs what dm-crypt costs, not a
// second pass over the data (cryptsetup reencrypt reads and writes everything again).
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { openTarget, rereadPartitionTable } from '../image/target.ts';
import { openSource } from '../image/sources/open.ts';
import { openImage } from '../image/open-image.ts';
import type { SourceOptions } from '../image/types.ts';
import type { Target } from '../image/target.ts';
import { parseGpt, writeGpt, type Gpt } from './gpt.ts';
import { cryptsetup } from './cryptsetup.ts';
import { planWriteThrough, type WriteThroughLayout } from './write-through-layout.ts';
import { resolvePartitions, type CryptPartitionSpec } from './partition-spec.ts';
import { RoutedTarget } from './routed-target.ts';
import { newTemporaryKey } from './recovery-key.ts';
import { partitionDevice, removeHandoff, saveHandoff, volumeName, type PreparedVolume } from './volumes.ts';

/** Enough of the image's start for any sane GPT (128 entries end at 16.5 KiB; some tools place them later). */
const HEAD_BYTES = 1024 * 1024;

/** The first MiB of the decompressed image (its partition table). */
export async function readImageHead(image: string, sourceOptions: SourceOptions, signal?: AbortSignal): Promise<Buffer> {
  const source = await openSource(image, sourceOptions);
  try {
    const img = await openImage(source, 0, undefined, signal);
    const parts: Buffer[] = [];
    let n = 0;
    try {
      for await (const c of img.chunks) {
        // Chunks may be views of reused buffers: copy.
        parts.push(Buffer.from(c.subarray(0, Math.min(c.length, HEAD_BYTES - n))));
        n += parts.at(-1)!.length;
        if (n >= HEAD_BYTES) break;
      }
    } finally {
      img.destroy();
    }
    return Buffer.concat(parts);
  } finally {
    await source.close?.();
  }
}

export interface WriteThroughPlan {
  disk: string;
  gpt: Gpt;
  layout: WriteThroughLayout;
}

/** Everything that can fail before a write: the image's table, the names, the room for the headers. */
export function planFor(disk: string, diskBytes: number, head: Buffer, specs: CryptPartitionSpec[]): WriteThroughPlan {
  const gpt = parseGpt(head);
  const layout = planWriteThrough(gpt, diskBytes, resolvePartitions(specs, gpt.partitions));
  return { disk, gpt, layout };
}

export interface OpenedWriteThrough {
  target: Target;
  volumes: PreparedVolume[];
  /** Closes the volumes; on success the handoff for encrypt-disk stays, on failure it goes. */
  finish(ok: boolean): Promise<void>;
}

async function waitForNode(path: string, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (existsSync(path)) return;
  throw new Error(`${path} did not appear after the partition table was written`);
}

/** Writes the new table, formats and opens the volumes, and returns the routing target. */
export async function openWriteThrough(plan: WriteThroughPlan, stateDir: string, log: (m: string) => void, signal?: AbortSignal): Promise<OpenedWriteThrough> {
  const { disk, gpt, layout } = plan;
  const raw = await openTarget(disk);
  const table = writeGpt(gpt, BigInt(Math.floor(raw.size / 512)), layout.newLast);
  try {
    // The old backup table of a previous install could confuse tools: it is overwritten by ours at the disk's end.
    await raw.write(table.primary, 0);
    await raw.write(table.backup, table.backupOffset);
    await raw.sync();
  } finally {
    await raw.close();
  }
  await rereadPartitionTable(disk);
  const volumes: PreparedVolume[] = [];
  const opened: { number: number; target: Target; start: number }[] = [];
  const closeAll = async () => {
    for (const o of opened.splice(0)) await o.target.close().catch(() => {});
    for (const v of volumes) await cryptsetup.close(v.name).catch(() => {});
  };
  try {
    for (const e of layout.encrypted) {
      signal?.throwIfAborted();
      const device = partitionDevice(disk, e.number);
      await waitForNode(device);
      const name = volumeName(e.name, e.uuid);
      const tempKey = newTemporaryKey();
      const t0 = performance.now();
      await cryptsetup.format(device, tempKey, { ...(e.name ? { label: e.name } : {}), ...(signal ? { signal } : {}) });
      await cryptsetup.open(device, name, tempKey);
      const luksUuid = await cryptsetup.uuid(device);
      volumes.push({ number: e.number, device, label: e.name, partUuid: e.uuid, luksUuid, name, spec: e.spec, tempKey, tempSlot: 0, formatted: e.spec.mode === 'format' });
      log(`partition ${e.number}${e.name ? ` "${e.name}"` : ''}: LUKS2 ${luksUuid} on ${device}, opened as /dev/mapper/${name} in ${Math.round(performance.now() - t0)} ms; its data is written through it`);
      opened.push({ number: e.number, target: await openTarget(`/dev/mapper/${name}`), start: e.start });
    }
    await saveHandoff(stateDir, { disk, method: 'write-through', volumes });
    const diskTarget = await openTarget(disk, { shared: true });
    const target = new RoutedTarget(diskTarget, layout.regions, new Map(opened.map((o) => [o.number, o])));
    return {
      target,
      volumes,
      async finish(ok) {
        await target.close().catch(() => {});
        opened.splice(0);
        for (const v of volumes) await cryptsetup.close(v.name).catch((e: Error) => log(`closing /dev/mapper/${v.name}: ${e.message}`));
        if (!ok) await removeHandoff(stateDir);
      },
    };
  } catch (e) {
    await closeAll();
    await removeHandoff(stateDir);
    throw e;
  }
}
