// The programs that make and open LUKS2 volumes: cryptsetup (2.4 or later, for
// --dump-json-metadata and --progress-json) and systemd-cryptenroll (TPM2 keyslots).
// Secrets go through standard input or 0600 files in a private directory on tmpfs,
// never on a command line.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

export class ToolError extends Error {}

/** Debian package of each program, for "install X" messages. */
const PACKAGES: Record<string, string> = {
  cryptsetup: 'cryptsetup-bin',
  'systemd-cryptenroll': 'systemd',
  e2fsck: 'e2fsprogs',
  resize2fs: 'e2fsprogs',
  'mkfs.ext4': 'e2fsprogs',
  blockdev: 'util-linux',
  partx: 'util-linux',
  sfdisk: 'fdisk',
  mount: 'mount',
  umount: 'mount',
  wipefs: 'util-linux',
  dumpe2fs: 'e2fsprogs',
  tpm2_createprimary: 'tpm2-tools',
  tpm2_hmac: 'tpm2-tools',
};

export interface RunOptions {
  input?: string | Buffer;
  env?: Record<string, string>;
  signal?: AbortSignal;
  /** Called with each line of standard output as it comes (progress). */
  onLine?: (line: string) => void;
  /** Exit codes that are not failures. */
  okCodes?: number[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program; rejects with what it said when it fails. */
export function run(file: string, args: string[], o: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: { ...process.env, LC_ALL: 'C', ...o.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(o.signal ? { signal: o.signal } : {}),
    });
    let stdout = '';
    let stderr = '';
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (!o.onLine) return;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) o.onLine(l);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {});
    child.stdin.end(o.input ?? '');
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') {
        const pkg = PACKAGES[file];
        reject(new ToolError(`${file} is not installed${pkg ? ` (Debian package ${pkg})` : ''}: the installer must carry it`));
      } else reject(new ToolError(`${file} could not run: ${e.message}`));
    });
    child.on('close', (code, sig) => {
      const c = code ?? -1;
      if (c === 0 || o.okCodes?.includes(c)) return resolve({ code: c, stdout, stderr });
      const said = (stderr || stdout).trim().split('\n').slice(-4).join(' / ');
      reject(new ToolError(`${file} ${args.filter((a) => !a.startsWith('--pbkdf')).join(' ')} ${sig ? `was killed (${sig})` : `exited with ${c}`}${said ? `: ${said}` : ''}`));
    });
  });
}

/**
 * Our keys are random 256-bit secrets, not passwords: a cheap PBKDF loses nothing,
 * and argon2id's default (up to 1 GiB, ~2 s of CPU) would dominate a run on a small device.
 */
const PBKDF = ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000'];

/** A private directory for key files: tmpfs (/run) when there is one. */
export async function keyDir(): Promise<{ path: string; file(name: string, secret: string): Promise<string>; remove(): Promise<void> }> {
  const base = existsSync('/run') ? '/run' : tmpdir();
  const path = await mkdtemp(join(base, 'bootline-keys-'));
  return {
    path,
    async file(name, secret) {
      const p = join(path, name);
      await writeFile(p, secret, { mode: 0o600 });
      return p;
    },
    remove: () => rm(path, { recursive: true, force: true }),
  };
}

export interface LuksDump {
  keyslots: Record<string, { type: string; priority?: string }>;
  tokens: Record<string, { type: string; keyslots: string[]; [k: string]: unknown }>;
  segments: Record<string, { type: string; offset: string; size: string; encryption?: string }>;
  config: { json_size?: string; keyslots_size?: string; flags?: string[]; requirements?: string[] | { mandatory?: string[] } };
}

export const cryptsetup = {
  async isLuks(dev: string): Promise<boolean> {
    return (await run('cryptsetup', ['isLuks', dev], { okCodes: [1] })).code === 0;
  },
  async uuid(dev: string): Promise<string> {
    return (await run('cryptsetup', ['luksUUID', dev])).stdout.trim();
  },
  async dump(dev: string): Promise<LuksDump> {
    const out = (await run('cryptsetup', ['luksDump', '--dump-json-metadata', dev])).stdout;
    return JSON.parse(out) as LuksDump;
  },
  async format(dev: string, key: string, o: { label?: string; signal?: AbortSignal } = {}): Promise<void> {
    await run('cryptsetup', ['luksFormat', '--batch-mode', '--type', 'luks2', '--key-file', '-', ...PBKDF, ...(o.label ? ['--label', o.label] : []), dev], {
      input: key,
      ...(o.signal ? { signal: o.signal } : {}),
    });
  },
  async open(dev: string, name: string, key: string): Promise<void> {
    // Without dm-crypt's work queues: measured 36 s -> 22 s for 240 MiB of buffered writes under TCG.
    await run('cryptsetup', ['open', '--perf-no_read_workqueue', '--perf-no_write_workqueue', '--key-file', '-', dev, name], { input: key });
  },
  /** Recovers a header whose reencryption was cut (cryptsetup will not resume before). */
  async repair(dev: string, key: string): Promise<void> {
    await run('cryptsetup', ['repair', '--batch-mode', '--key-file', '-', dev], { input: key });
  },
  async close(name: string): Promise<void> {
    await run('cryptsetup', ['close', name]);
  },
  /** Adds `newKey` (unlocking with `key`); returns the new keyslot's number. */
  async addKey(dev: string, key: string, newKey: string): Promise<number> {
    const before = new Set(Object.keys((await cryptsetup.dump(dev)).keyslots));
    const dir = await keyDir();
    try {
      await run('cryptsetup', ['luksAddKey', '--batch-mode', '--key-file', await dir.file('old', key), ...PBKDF, dev, await dir.file('new', newKey)]);
    } finally {
      await dir.remove();
    }
    const added = Object.keys((await cryptsetup.dump(dev)).keyslots).filter((k) => !before.has(k));
    if (added.length !== 1) throw new ToolError(`luksAddKey on ${dev} added ${added.length} keyslots, expected 1`);
    return Number(added[0]);
  },
  async killSlot(dev: string, slot: number): Promise<void> {
    await run('cryptsetup', ['luksKillSlot', '--batch-mode', dev, String(slot)]);
  },
  /** Whether `key` opens a keyslot of `dev` (nothing is activated). */
  async testKey(dev: string, key: string): Promise<boolean> {
    // Without --disable-external-tokens cryptsetup tries the TPM token first, and it would open.
    return (await run('cryptsetup', ['open', '--test-passphrase', '--disable-external-tokens', '--key-file', '-', dev], { input: key, okCodes: [1, 2] })).code === 0;
  },
  /** Whether a token (the TPM's) opens `dev` with no passphrase at all. */
  async testTokenOnly(dev: string): Promise<{ ok: boolean; said: string }> {
    const r = await run('cryptsetup', ['open', '--test-passphrase', '--token-only', dev], { okCodes: [1, 2, 3, 4, 5] });
    return { ok: r.code === 0, said: (r.stderr || r.stdout).trim() };
  },
  async importToken(dev: string, token: object): Promise<void> {
    await run('cryptsetup', ['token', 'import', '--json-file', '-', dev], { input: JSON.stringify(token) });
  },
  async removeToken(dev: string, id: number): Promise<void> {
    await run('cryptsetup', ['token', 'remove', '--token-id', String(id), dev]);
  },
  /** cryptsetup reencrypt, with progress as fractions (0-1) from --progress-json. */
  async reencrypt(args: string[], key: string, o: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
    await run('cryptsetup', ['reencrypt', '--batch-mode', '--key-file', '-', '--progress-json', '--progress-frequency', '1', ...args], {
      input: key,
      ...(o.signal ? { signal: o.signal } : {}),
      onLine: (line) => {
        try {
          const p = JSON.parse(line) as { device_bytes?: string; device_size?: string };
          if (p.device_bytes && p.device_size) o.onProgress?.(Number(p.device_bytes), Number(p.device_size));
        } catch {
          // not a progress line
        }
      },
    });
  },
  async reencryptInit(dev: string, key: string, reduceBytes: number, label?: string): Promise<void> {
    await run('cryptsetup', ['reencrypt', '--batch-mode', '--encrypt', '--type', 'luks2', '--init-only', '--reduce-device-size', `${reduceBytes / 512}s`, '--key-file', '-', ...PBKDF, ...(label ? ['--label', label] : []), dev], { input: key });
  },
};

/** Whether a LUKS2 header is in the middle of a reencryption (power loss, or stopped). */
export function reencryptPending(d: LuksDump): boolean {
  const req = d.config.requirements;
  const list = Array.isArray(req) ? req : (req?.mandatory ?? []);
  return list.some((r) => r.startsWith('online-reencrypt'));
}

/** Enrolls a TPM2 keyslot (systemd's token format, so that the target's systemd-cryptsetup unlocks it). */
export async function enrollTpm2(dev: string, key: string, pcrs: number[], device = 'auto'): Promise<void> {
  // PASSWORD is how systemd 252 takes the existing passphrase unattended.
  await run('systemd-cryptenroll', [`--tpm2-device=${device}`, `--tpm2-pcrs=${pcrs.join('+')}`, dev], { env: { PASSWORD: key } });
}
