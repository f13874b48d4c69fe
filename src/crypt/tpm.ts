// Whether the machine has a TPM 2.0 that systemd-cryptenroll can use: the kernel's
// view in sysfs and the resource manager device node.
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './cryptsetup.ts';

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

/**
 * A secret only this TPM can make, and makes again after a power cut: an HMAC (keyed by a
 * primary key derived from the owner hierarchy's seed, so the same every time) of `label`.
 * In-place encryption uses it as its temporary key: a header in reencryption state takes no
 * token to keep a key in, and a key written to the disk would outlive the run.
 */
export async function tpmDerivedKey(label: string, o: { tcti?: string; dir: string }): Promise<string> {
  const env = { TPM2TOOLS_TCTI: o.tcti ?? process.env.TPM2TOOLS_TCTI ?? 'device:/dev/tpmrm0' };
  const ctx = join(o.dir, 'primary.ctx');
  // noda: a power cut after using it must not count towards the TPM's dictionary-attack lockout.
  await run('tpm2_createprimary', ['-Q', '-C', 'o', '-G', 'hmac', '-g', 'sha256', '-a', 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda', '-c', ctx], { env });
  try {
    const out = (await run('tpm2_hmac', ['-c', ctx, '-g', 'sha256', '--hex'], { input: `bootline-reencrypt:${label}`, env })).stdout.trim();
    if (!/^[0-9a-f]{64}$/.test(out)) throw new Error(`tpm2_hmac gave no sha256 HMAC (it said "${out.slice(0, 80)}")`);
    return out;
  } finally {
    await run('tpm2_flushcontext', ['-t'], { env }).catch(() => {});
  }
}
