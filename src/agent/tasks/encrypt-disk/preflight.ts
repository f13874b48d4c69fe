// What encrypt-disk checks before anything is written, by itself and by deploy-image
// when it writes through this task's volumes: a usable TPM 2.0, the programs, a
// server to escrow the recovery key to, and a PCR policy that will still unlock
// after the next boot.
import { readFile } from 'node:fs/promises';
import { TaskError } from '../builtin.ts';
import { checkTpm2 } from '../../../crypt/tpm.ts';
import { onPath } from '../../../which.ts';
import { parseCryptPartition, type CryptPartitionSpec } from '../../../crypt/partition-spec.ts';
import type { EncryptDiskOptionsT } from './options.ts';

const EFI_GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

async function efiFlag(name: string, efivars: string): Promise<number | undefined> {
  const b = await readFile(`${efivars}/${name}-${EFI_GLOBAL}`).catch(() => undefined);
  return b && b.length >= 5 ? b[4] : undefined;
}

/** The options' partition list as specs (CRYPT_PARTITIONS words parsed). */
export function specsOf(o: EncryptDiskOptionsT): CryptPartitionSpec[] {
  return o.partitions.map((p, i) => {
    if (typeof p !== 'string') return { ...p };
    try {
      return parseCryptPartition(p, `encrypt-disk option partitions[${i}]`);
    } catch (e) {
      throw new TaskError((e as Error).message);
    }
  });
}

export interface PreflightEnv {
  hasServer: boolean;
  log(level: 'info' | 'warn', m: string): void;
  sys?: string;
  dev?: string;
  efivars?: string;
}

/** 'encrypt', or 'skip' (no TPM and encryptionOptional); throws a TaskError saying what to do otherwise. */
export async function preflight(o: EncryptDiskOptionsT, env: PreflightEnv): Promise<'encrypt' | 'skip'> {
  const specs = specsOf(o);
  if (specs.every((s) => s.mode === 'noencrypt')) return 'skip';
  const tpm = await checkTpm2(env.sys, env.dev);
  if (!tpm.ok) {
    if (o.encryptionOptional) {
      env.log('warn', `not encrypting: ${tpm.why}; encryptionOptional is set, so the disk stays unencrypted`);
      return 'skip';
    }
    throw new TaskError(`cannot encrypt: ${tpm.why}; nothing was written. Enable the TPM in the firmware, or set encryptionOptional: true to install unencrypted`);
  }
  const tools: Record<string, string> = { cryptsetup: 'cryptsetup-bin', 'systemd-cryptenroll': 'systemd', tpm2_createprimary: 'tpm2-tools', tpm2_hmac: 'tpm2-tools' };
  for (const [tool, pkg] of Object.entries(tools)) {
    if (!onPath(tool)) throw new TaskError(`cannot encrypt: ${tool} is not installed (Debian package ${pkg}); the installer must carry it. Nothing was written`);
  }
  if ((o.recoveryKey ?? 'escrow') === 'escrow' && !env.hasServer) {
    throw new TaskError('cannot encrypt: recoveryKey is escrow, but the agent is not enrolled with a line server to send the key to; nothing was written. Enroll the device, or set recoveryKey: none (the TPM is then the only key)');
  }
  if ((o.pcrs ?? []).includes(7)) {
    const efivars = env.efivars ?? '/sys/firmware/efi/efivars';
    const setup = await efiFlag('SetupMode', efivars);
    const sb = await efiFlag('SecureBoot', efivars);
    if (setup !== 0 || sb !== 1) {
      throw new TaskError(
        `cannot bind the TPM keyslot to PCR 7 now: Secure Boot is ${sb === 1 ? 'on' : 'off'}${setup === 1 ? ' and in Setup Mode' : ''}, so PCR 7 will differ after keys are enrolled and Secure Boot is on, and the disk would not unlock; nothing was written. ` +
          'Leave pcrs empty (bound to this TPM only; see docs/encryption.md), or encrypt in a boot where Secure Boot is already on',
      );
    }
  }
  return 'encrypt';
}
