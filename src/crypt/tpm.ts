// Whether the machine has a TPM 2.0 that systemd-cryptenroll can use: the kernel's
// view in sysfs and the resource manager device node.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';

export interface TpmCheck {
  ok: boolean;
  /** Why not, in words, when not. */
  why?: string;
}

export async function checkTpm2(sys = '/sys', dev = '/dev'): Promise<TpmCheck> {
  const major = await readFile(`${sys}/class/tpm/tpm0/tpm_version_major`, 'utf8').then((s) => s.trim(), () => undefined);
  if (major === undefined) return { ok: false, why: `no TPM (${sys}/class/tpm/tpm0 is missing: none fitted, disabled in the firmware, or no driver)` };
  if (major !== '2') return { ok: false, why: `the TPM is version ${major}, and LUKS2 TPM keyslots need TPM 2.0` };
  if (!existsSync(`${dev}/tpmrm0`)) return { ok: false, why: `the TPM has no resource manager device (${dev}/tpmrm0)` };
  return { ok: true };
}
