// The escrow key-encryption key: 32 random bytes in `<data>/secrets/escrow.key` (made 0600,
// in a 0700 directory, on first use), or the file BOOTLINE_ESCROW_KEY_FILE names. Whoever
// has it and the database has every recovery key; whoever loses it loses them all: it is
// only ever created while the database holds no sealed key, never silently replaced.
import { randomBytes } from 'node:crypto';
import { chmod, link, mkdir, open, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { KEK_BYTES, kekId } from './seal.ts';

export const ESCROW_KEY_ENV = 'BOOTLINE_ESCROW_KEY_FILE';

/** A refusal to use (or make) the escrow key, worded for the operator. */
export class EscrowKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EscrowKeyError';
  }
}

export interface EscrowKeySource {
  path: string;
  /** The default file may be made on first use; a file named by the environment must exist. */
  mayCreate: boolean;
}

export function escrowKeySource(dataDir: string, env: NodeJS.ProcessEnv = process.env): EscrowKeySource {
  const named = env[ESCROW_KEY_ENV];
  if (named) return { path: named, mayCreate: false };
  return { path: join(dataDir, 'secrets', 'escrow.key'), mayCreate: true };
}

export interface EscrowKeyring {
  readonly path: string;
  /**
   * The key. `sealedCount` says how many sealed keys the database holds: a missing key file
   * is only created when it is 0 (otherwise a new key would orphan them).
   */
  key(sealedCount: () => Promise<number>): Promise<{ kek: Buffer; id: string }>;
}

export function escrowKeyring(source: EscrowKeySource): EscrowKeyring {
  let loaded: Promise<{ kek: Buffer; id: string }> | undefined;
  return {
    path: source.path,
    key(sealedCount) {
      if (!loaded) {
        const p = load(source, sealedCount).then((kek) => ({ kek, id: kekId(kek) }));
        // A failure is not kept: the operator may restore the file while the server runs.
        p.catch(() => {
          if (loaded === p) loaded = undefined;
        });
        loaded = p;
      }
      return loaded;
    },
  };
}

async function load(source: EscrowKeySource, sealedCount: () => Promise<number>): Promise<Buffer> {
  const { path } = source;
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new EscrowKeyError(`cannot read the escrow key ${path}: ${(e as Error).message}`);
    if (!source.mayCreate) {
      throw new EscrowKeyError(
        `${ESCROW_KEY_ENV} names ${path}, which does not exist: restore the escrow key there, or make a new one (only if no key was escrowed with another) with: head -c 32 /dev/urandom > ${path} && chmod 600 ${path}`,
      );
    }
    const n = await sealedCount();
    if (n > 0) {
      throw new EscrowKeyError(
        `the escrow key ${path} is missing, but the database holds ${n} sealed recovery key${n === 1 ? '' : 's'}: restore the key file from its backup (a new key could not open them)`,
      );
    }
    return create(path);
  }
  if (!st.isFile()) throw new EscrowKeyError(`the escrow key ${path} is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new EscrowKeyError(`the escrow key ${path} is open to group or others (mode ${(st.mode & 0o777).toString(8)}): chmod 600 ${path}`);
  }
  const kek = await readFile(path);
  if (kek.length !== KEK_BYTES) throw new EscrowKeyError(`the escrow key ${path} is ${kek.length} bytes, expected ${KEK_BYTES}: restore it from its backup`);
  return kek;
}

/** Written beside, then linked into place: another process never reads a half-written key, and two racing get the same one. */
async function create(path: string): Promise<Buffer> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const kek = randomBytes(KEK_BYTES);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(kek);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await link(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    await unlink(tmp);
    return readFile(path);
  }
  await unlink(tmp);
  const d = await open(dir, 'r');
  await d.sync().finally(() => d.close());
  return kek;
}
