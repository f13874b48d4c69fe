// efivarfs, the kernel's file view of UEFI variables: one file per variable, named
// `<Name>-<vendor guid>`, whose content is the 4 attribute bytes (little-endian) followed
// by the value. Writing a file is a SetVariable call: attributes || data in ONE write(2)
// (for PK/KEK/db/dbx the data is the whole .auth); the firmware then stores the value
// without the authentication header. efivarfs marks the files of variables it does not
// know to be safe to change (PK, KEK and the other global ones) immutable, so such a file,
// once it exists, is only writable after `chattr -i`; this module clears the flag when a
// write is refused with EPERM, and sets it again afterwards.
import { constants } from 'node:fs';
import { mkdir, open, readFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { runProcess } from '../../process.ts';
import { efivarfsName, type KeyVariable, type ModeVariable } from '../../../secureboot/variables.ts';

/** statfs f_type of efivarfs (EFIVARFS_MAGIC). */
export const EFIVARFS_MAGIC = 0xde5e81e4;
export const DEFAULT_EFIVARS = '/sys/firmware/efi/efivars';

export interface Commands {
  chattr: string;
  mount: string;
  modprobe: string;
}

export const DEFAULT_COMMANDS: Commands = { chattr: 'chattr', mount: 'mount', modprobe: 'modprobe' };

export class EfivarfsError extends Error {
  override name = 'EfivarfsError';
}

export interface StoredVariable {
  attributes: number;
  data: Buffer;
}

/** What the task needs from efivarfs; the real one below, a firmware stand-in in tests. */
export interface EfiVariables {
  readonly root: string;
  read(name: KeyVariable | ModeVariable): Promise<StoredVariable | undefined>;
  /** One SetVariable: `attributes` || `data` in a single write. Returns the steps taken (for the log). */
  write(name: KeyVariable, attributes: number, data: Buffer): Promise<string[]>;
}

async function run(file: string, args: string[], signal?: AbortSignal): Promise<{ ok: boolean; output: string }> {
  const lines: string[] = [];
  const r = await runProcess({ file, args, env: process.env, timeoutMs: 30_000, ...(signal ? { signal } : {}), onLine: (_s, l) => lines.push(l) });
  if (r.spawnError) return { ok: false, output: `${file} could not be started: ${r.spawnError.code ?? r.spawnError.message}` };
  return { ok: r.exitCode === 0, output: lines.join('; ') || (r.exitCode !== 0 ? `${file} exited with status ${r.exitCode ?? r.signal}` : '') };
}

export async function isEfivarfs(dir: string): Promise<boolean> {
  try {
    // >>> 0: the magic has its top bit set; compare as unsigned 32 bits whatever width libuv gives.
    return (Number((await statfs(dir)).type) >>> 0) === EFIVARFS_MAGIC;
  } catch {
    return false;
  }
}

/**
 * Makes `dir` an efivarfs mount: nothing when it is one; else `mount -t efivarfs`, and when
 * that fails `modprobe efivarfs` and mount again. Returns what was done.
 */
export async function ensureEfivarfs(dir: string, commands: Commands, signal?: AbortSignal): Promise<string> {
  if (await isEfivarfs(dir)) return `efivarfs is mounted at ${dir}`;
  await mkdir(dir, { recursive: true }).catch(() => undefined);
  const mount = () => run(commands.mount, ['-t', 'efivarfs', 'efivarfs', dir], signal);
  let m = await mount();
  if (m.ok && (await isEfivarfs(dir))) return `mounted efivarfs at ${dir}`;
  const mod = await run(commands.modprobe, ['efivarfs'], signal);
  m = await mount();
  if (m.ok && (await isEfivarfs(dir))) return `loaded the efivarfs module and mounted efivarfs at ${dir}`;
  throw new EfivarfsError(
    `cannot mount efivarfs at ${dir}: ${m.output || 'mount did not fail, yet it is not efivarfs'}` +
      `${mod.ok ? '' : ` (modprobe efivarfs: ${mod.output})`}. Is this device booted in UEFI mode (/sys/firmware/efi exists)? ` +
      'Secure Boot keys can only be enrolled from an installer booted by UEFI',
  );
}

/** efivarfs at `root` (or a directory standing in for it), changing immutable flags with `commands.chattr`. */
export function efivarfs(root: string, commands: Pick<Commands, 'chattr'> = DEFAULT_COMMANDS, signal?: AbortSignal): EfiVariables {
  const path = (name: KeyVariable | ModeVariable) => join(root, efivarfsName(name));
  const chattr = async (flag: '-i' | '+i', file: string) => {
    const r = await run(commands.chattr, [flag, file], signal);
    if (!r.ok) throw new EfivarfsError(`${commands.chattr} ${flag} ${file} failed: ${r.output}`);
  };
  const writeOnce = async (file: string, bytes: Buffer) => {
    // No O_TRUNC: efivarfs takes the whole write as one SetVariable (as efi-updatevar and libefivar open it).
    const fh = await open(file, constants.O_WRONLY | constants.O_CREAT, 0o644);
    try {
      const { bytesWritten } = await fh.write(bytes, 0, bytes.length, null);
      if (bytesWritten !== bytes.length) throw new EfivarfsError(`${file}: only ${bytesWritten} of ${bytes.length} bytes were taken`);
    } finally {
      await fh.close();
    }
  };
  return {
    root,
    async read(name) {
      let b: Buffer;
      try {
        b = await readFile(path(name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw new EfivarfsError(`cannot read ${path(name)}: ${(e as Error).message}`);
      }
      if (b.length < 4) throw new EfivarfsError(`${path(name)} holds ${b.length} byte(s): not an efivarfs variable (4 attribute bytes, then the value)`);
      return { attributes: b.readUInt32LE(0), data: Buffer.from(b.subarray(4)) };
    },
    async write(name, attributes, data) {
      const file = path(name);
      const attrs = Buffer.alloc(4);
      attrs.writeUInt32LE(attributes);
      const bytes = Buffer.concat([attrs, data]);
      const steps: string[] = [];
      try {
        await writeOnce(file, bytes);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw writeError(file, e);
        steps.push(`${file} is immutable: ${commands.chattr} -i`);
        await chattr('-i', file);
        try {
          await writeOnce(file, bytes);
        } catch (e2) {
          throw writeError(file, e2);
        } finally {
          await chattr('+i', file).then(
            () => steps.push(`${commands.chattr} +i (as efivarfs had it)`),
            () => steps.push(`could not set the immutable flag of ${file} again`),
          );
        }
      }
      steps.push(`wrote ${bytes.length} bytes (attributes 0x${attributes.toString(16)} + ${data.length}) to ${file}`);
      return steps;
    },
  };
}

function writeError(file: string, e: unknown): EfivarfsError {
  const code = (e as NodeJS.ErrnoException).code;
  // The firmware's refusal (EFI_SECURITY_VIOLATION, bad signature, old timestamp) reaches us as EINVAL or EACCES.
  const why =
    code === 'EINVAL' || code === 'EACCES'
      ? `the firmware refused the update (${code}): wrong signer for this mode, a timestamp not later than the stored one, or a malformed .auth`
      : code === 'ENOSPC'
        ? 'the firmware has no room for the variable (ENOSPC)'
        : (e as Error).message;
  return new EfivarfsError(`writing ${file} failed: ${why}`);
}
