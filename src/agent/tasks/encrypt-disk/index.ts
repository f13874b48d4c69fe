// The encrypt-disk built-in: LUKS2 volumes bound to the TPM, made while bootstrapping
// instead of on the device's first boot. With deploy-image earlier in the plan the
// data was already written through dm-crypt (write-through, see deploy-image); else
// the partitions are encrypted in place. Then, per volume: grow it if asked, add a
// recovery key and escrow it to the server, enroll the TPM, wipe the temporary key,
// check that the TPM alone opens it, and tell the target system about it.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { BuiltinTask, TaskContext } from '../builtin.ts';
import { TaskError } from '../builtin.ts';
import { EncryptDiskOptions, type EncryptDiskOptionsT } from './options.ts';
import { preflight, specsOf } from './preflight.ts';
import { cryptsetup, enrollTpm2, run } from '../../../crypt/cryptsetup.ts';
import { encryptInPlace, readDiskGpt } from '../../../crypt/in-place.ts';
import { loadHandoff, partitionDevice, removeHandoff, type PreparedVolume } from '../../../crypt/volumes.ts';
import { newRecoveryKey } from '../../../crypt/recovery-key.ts';
import { matches } from '../../../crypt/partition-spec.ts';
import { crypttabWith, fstabWith } from '../../../crypt/target-config.ts';
import { formatDuration } from '../../../format.ts';

type Ctx = TaskContext<EncryptDiskOptionsT>;

const why = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function withVolumeOpen<T>(v: PreparedVolume, key: string, f: (dev: string) => Promise<T>): Promise<T> {
  await cryptsetup.open(v.device, v.name, key);
  try {
    return await f(`/dev/mapper/${v.name}`);
  } finally {
    await cryptsetup.close(v.name);
  }
}

async function finishVolume(disk: string, v: PreparedVolume, o: EncryptDiskOptionsT, ctx: Ctx, method: string): Promise<void> {
  const pcrs = o.pcrs ?? [];
  const t0 = performance.now();
  // 1. Growth (write-through made the partition big already; the filesystem follows here).
  if (v.spec.expand) {
    if (method === 'in-place') {
      // After the reencryption, not before: encrypting the grown partition would cost that much more.
      await run('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', '-N', String(v.number), disk], { input: ', +\n' });
      await run('partx', ['-u', disk]);
    }
    await withVolumeOpen(v, v.tempKey, async (dev) => {
      if (method === 'in-place') await run('cryptsetup', ['resize', '--key-file', '-', v.name], { input: v.tempKey });
      await run('e2fsck', ['-f', '-y', dev], { okCodes: [1] });
      await run('resize2fs', [dev]);
    });
    ctx.log('info', `${v.device}: ${method === 'in-place' ? 'partition, volume and ' : ''}filesystem grown to the disk's end`);
  }
  // 2. The recovery key, escrowed before the temporary key goes: the server must hold a way in first.
  if ((o.recoveryKey ?? 'escrow') === 'escrow') {
    const server = ctx.server;
    if (!server) throw new TaskError('recoveryKey is escrow, but the agent is not enrolled with a line server');
    const rk = newRecoveryKey();
    const slot = await cryptsetup.addKey(v.device, v.tempKey, rk);
    await cryptsetup.importToken(v.device, { type: 'systemd-recovery', keyslots: [String(slot)] });
    try {
      await server.putRecoveryKey({ volumeUuid: v.luksUuid, partition: v.device, ...(v.label ? { label: v.label } : {}), keyslot: slot, recoveryKey: rk, pcrs, ...(ctx.env.BOOTLINE_RUN_ID ? { runId: ctx.env.BOOTLINE_RUN_ID } : {}) });
    } catch (e) {
      await cryptsetup.killSlot(v.device, slot).catch(() => {});
      throw new TaskError(`${v.device}: the recovery key could not be escrowed to ${server.shown} (${why(e)}); the volume keeps its temporary key, and the task can be re-run`);
    }
    ctx.log('info', `${v.device}: recovery key in keyslot ${slot}, escrowed to ${server.shown}`);
  }
  // 3. The TPM keyslot, then the temporary key is wiped.
  await enrollTpm2(v.device, v.tempKey, pcrs, o.tpmDevice ?? 'auto');
  await cryptsetup.killSlot(v.device, v.tempSlot);
  // 4. The TPM alone must open it (no passphrase); the temporary key must not.
  const tpm = await cryptsetup.testTokenOnly(v.device);
  if (!tpm.ok) throw new TaskError(`${v.device}: the TPM does not open the volume after enrollment (${tpm.said || 'no reason given'}); its recovery key still does`);
  if (await cryptsetup.testKey(v.device, v.tempKey)) throw new TaskError(`${v.device}: the temporary key still opens the volume after its keyslot was wiped`);
  ctx.log('info', `${v.device}: TPM2 keyslot (PCRs: ${pcrs.length ? pcrs.join('+') : 'none, this TPM only'}) opens it alone; temporary key wiped (${formatDuration(performance.now() - t0)})`);
  ctx.setOutput(`luks_${v.name.replace(/[^A-Za-z0-9]/g, '_')}`, v.luksUuid);
}

/** Writes crypttab and fixes fstab in the target's root filesystem. */
async function configureTarget(disk: string, volumes: PreparedVolume[], o: EncryptDiskOptionsT, ctx: Ctx): Promise<void> {
  if (o.targetRoot === 'none' || volumes.length === 0) return;
  const gpt = await readDiskGpt(disk);
  const want = o.targetRoot ?? 'root';
  const root = gpt.partitions.find((p) => matches(want, p));
  if (!root) {
    if (o.targetRoot) throw new TaskError(`targetRoot "${o.targetRoot}" is not a partition of ${disk} (partitions: ${gpt.partitions.map((p) => `${p.number} "${p.name}"`).join(', ')})`);
    ctx.log('warn', `no partition labelled root on ${disk}: /etc/crypttab was not written (set targetRoot to the root filesystem's partition)`);
    return;
  }
  const encRoot = volumes.find((v) => v.number === root.number);
  const mnt = await mkdtemp('/tmp/bootline-root-');
  let device = partitionDevice(disk, root.number);
  try {
    if (encRoot) {
      // Opened the way the target will open it: with the TPM alone.
      await run('cryptsetup', ['open', '--token-only', encRoot.device, encRoot.name]);
      device = `/dev/mapper/${encRoot.name}`;
    }
    await run('mount', [device, mnt]);
    try {
      const etc = join(mnt, 'etc');
      if (!existsSync(etc)) throw new TaskError(`partition ${root.number} ("${root.name}") has no /etc: it is not a root filesystem; set targetRoot`);
      const refs = volumes.map((v) => ({ name: v.name, luksUuid: v.luksUuid, partUuid: v.partUuid, label: v.label, ...(v.spec.mountpoint ? { mountpoint: v.spec.mountpoint } : {}) }));
      const read = (f: string) => readFile(join(etc, f), 'utf8').catch(() => '');
      await writeFile(join(etc, 'crypttab'), crypttabWith(await read('crypttab'), refs));
      await writeFile(join(etc, 'fstab'), fstabWith(await read('fstab'), refs));
      ctx.log('info', `wrote /etc/crypttab (${volumes.map((v) => v.name).join(', ')}: tpm2-device=auto) and updated /etc/fstab on partition ${root.number}${encRoot ? ` (encrypted: boot with rd.luks.name=${encRoot.luksUuid}=${encRoot.name} root=/dev/mapper/${encRoot.name})` : ''}`);
    } finally {
      await run('umount', [mnt]);
    }
  } finally {
    if (encRoot) await cryptsetup.close(encRoot.name).catch(() => {});
    await rm(mnt, { recursive: true, force: true });
  }
}

export const encryptDisk: BuiltinTask<typeof EncryptDiskOptions> = {
  name: 'encrypt-disk',
  description: 'Encrypt partitions of the target disk with LUKS2, unlocked by the TPM, with a recovery key escrowed to the server',
  destructive: true,
  optionsSchema: EncryptDiskOptions,
  async run(ctx: Ctx): Promise<void> {
    const o = ctx.options;
    const specs = specsOf(o);
    if ((await preflight(o, { hasServer: ctx.server !== undefined, log: ctx.log })) === 'skip') return;
    const disk = o.target ?? ctx.env.BOOTLINE_TARGET;
    if (!disk) throw new TaskError('no disk to encrypt: set the option target, or run deploy-image before this task (it names the disk it wrote)');
    const t0 = performance.now();
    const handoff = await loadHandoff(ctx.stateDir);
    let method: 'write-through' | 'in-place';
    let volumes: PreparedVolume[];
    try {
      if (handoff && handoff.disk === disk) {
        method = 'write-through';
        volumes = handoff.volumes;
        ctx.log('info', `${volumes.length} volume(s) were made and filled by deploy-image (write-through)`);
      } else if (o.method === 'write-through') {
        throw new TaskError(`method is write-through, but deploy-image did not write ${disk} through this task's volumes in this run: put deploy-image before encrypt-disk, or use method: in-place`);
      } else {
        method = 'in-place';
        volumes = await encryptInPlace(disk, specs, {
          mkfs: o.mkfs ?? 'mkfs.ext4 -q',
          signal: ctx.signal,
          log: (m) => ctx.log('info', m),
          onProgress: (f) => ctx.progress({ taskProgress: Math.min(90, f * 90), message: 'encrypting in place' }),
        });
      }
      for (const v of volumes) await finishVolume(disk, v, o, ctx, method);
      await configureTarget(disk, volumes, o, ctx);
    } catch (e) {
      if (e instanceof TaskError) throw e;
      throw new TaskError(why(e));
    }
    await removeHandoff(ctx.stateDir);
    ctx.log('info', `encrypted ${volumes.map((v) => v.device).join(', ') || 'nothing new'} (${method}) in ${formatDuration(performance.now() - t0)}`);
  },
};
