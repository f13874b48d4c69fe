// The installer as a Unified Kernel Image: systemd's EFI stub (linuxx64.efi.stub from
// Debian's systemd-boot-efi) with the kernel, the initramfs, os-release, the kernel release
// and (for the USB form) the command line added as PE sections with objcopy, then signed
// with sbsign. The firmware checks one signature over all of it; the stub then starts the
// embedded kernel itself (EFI handover), so Debian's own signature on the kernel plays no
// part and no shim is needed.
import { execFile as execFileCb } from 'node:child_process';
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { layoutSections, overlappingSections, parsePe } from './pe.ts';

const execFile = promisify(execFileCb);

export const UKI_TOOLS = { objcopy: 'binutils' } as const;
export const SIGN_TOOLS = { sbsign: 'sbsigntool', sbverify: 'sbsigntool' } as const;

/** Where the stub is in Debian's systemd-boot-efi. */
export const STUB_PATH = 'usr/lib/systemd/boot/efi/linuxx64.efi.stub';

export class UkiError extends Error {
  override name = 'UkiError';
}

export interface UkiInput {
  stub: string;
  vmlinuz: string;
  initrd: string;
  /** The kernel release (the .uname section). */
  uname: string;
  /** os-release text (the .osrel section). */
  osrel: string;
  /**
   * The built-in command line (.cmdline). Left out, the stub passes on the command line its
   * loader gives it, even with Secure Boot on (systemd-stub uses a loader's command line
   * when Secure Boot is off or the image has no .cmdline): the netboot form relies on it.
   */
  cmdline?: string;
  /** The UKI to write. */
  out: string;
  /** Scratch files go beside `out` with this prefix. */
  work: string;
  sign?: { key: string; cert: string };
}

export interface UkiResult {
  bytes: number;
  sections: { name: string; virtualAddress: number; bytes: number }[];
  signed: boolean;
}

/** The os-release of the installer's UKI (boot menus and `ukify inspect` show it). */
export function installerOsRelease(version: string, kernel: string): string {
  return [
    'NAME="bootline installer"',
    'ID=bootline-installer',
    'ID_LIKE=debian',
    `VERSION_ID=${JSON.stringify(version)}`,
    `PRETTY_NAME="bootline installer ${version} (Linux ${kernel})"`,
    '',
  ].join('\n');
}

/** objcopy's arguments that add `files` (section name -> file) at the given addresses. */
export function objcopyArgs(imageBase: bigint, placed: { name: string; virtualAddress: number; file: string }[], stub: string, out: string): string[] {
  const args: string[] = [];
  for (const s of placed) {
    args.push('--add-section', `${s.name}=${s.file}`, '--change-section-vma', `${s.name}=0x${(imageBase + BigInt(s.virtualAddress)).toString(16)}`);
    args.push('--set-section-flags', `${s.name}=data,readonly`);
  }
  return [...args, stub, out];
}

async function run(tool: string, args: string[], what: string): Promise<string> {
  try {
    const { stdout, stderr } = await execFile(tool, args, { encoding: 'utf8', maxBuffer: 16 << 20 });
    return `${stdout}${stderr}`;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new UkiError(`${what} failed: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' / ')}`);
  }
}

export async function buildUki(i: UkiInput): Promise<UkiResult> {
  const stub = parsePe(readFileSync(i.stub), `the EFI stub ${i.stub}`);
  const texts: Record<string, string | undefined> = { '.osrel': i.osrel, '.cmdline': i.cmdline, '.uname': i.uname };
  const files: { name: string; file: string }[] = [];
  for (const [name, text] of Object.entries(texts)) {
    if (text === undefined) continue;
    const file = `${i.work}${name}`;
    // The stub reads .cmdline as a C string: end it with NUL, as ukify does.
    writeFileSync(file, name === '.cmdline' ? `${text}\0` : text);
    files.push({ name, file });
  }
  files.push({ name: '.linux', file: i.vmlinuz }, { name: '.initrd', file: i.initrd });
  const sizes = files.map((f) => ({ name: f.name, bytes: statSync(f.file).size }));
  const placed = layoutSections(stub, sizes).map((p, n) => ({ ...p, file: files[n]!.file }));
  const unsigned = i.sign ? `${i.work}unsigned.efi` : `${i.out}.partial`;
  try {
    await run('objcopy', objcopyArgs(stub.imageBase, placed, i.stub, unsigned), 'objcopy (adding the UKI sections to the stub)');
    const made = parsePe(readFileSync(unsigned), `the UKI ${unsigned}`);
    const overlaps = overlappingSections(made);
    if (overlaps.length > 0) throw new UkiError(`the UKI's sections overlap in memory (${overlaps.map((o) => o.join('/')).join(', ')}): objcopy placed them elsewhere than asked`);
    if (i.sign) {
      await run('sbsign', ['--key', i.sign.key, '--cert', i.sign.cert, '--output', `${i.out}.partial`, unsigned], `sbsign with ${i.sign.key} and ${i.sign.cert}`);
      await run('sbverify', ['--cert', i.sign.cert, `${i.out}.partial`], `sbverify of the signed UKI against ${i.sign.cert}`);
    }
    renameSync(`${i.out}.partial`, i.out);
  } finally {
    for (const f of [...files.filter((f) => f.file.startsWith(i.work)).map((f) => f.file), `${i.work}unsigned.efi`, `${i.out}.partial`]) rmSync(f, { force: true });
  }
  return { bytes: statSync(i.out).size, sections: placed.map((p, n) => ({ name: p.name, virtualAddress: p.virtualAddress, bytes: sizes[n]!.bytes })), signed: i.sign !== undefined };
}

/** Checks a key and certificate pair before anything is built: both readable, PEM, matching. */
export async function checkSigningPair(key: string, cert: string): Promise<void> {
  for (const [f, opt] of [[key, '--sign-key'], [cert, '--sign-cert']] as const) {
    let text: string;
    try {
      text = readFileSync(f, 'latin1');
    } catch (e) {
      throw new UkiError(`${opt} ${f}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    const want = opt === '--sign-key' ? /-----BEGIN (RSA |EC )?PRIVATE KEY-----/ : /-----BEGIN CERTIFICATE-----/;
    if (!want.test(text)) throw new UkiError(`${opt} ${f} is not a PEM ${opt === '--sign-key' ? 'private key (unencrypted)' : 'certificate'}: sbsign needs PEM files, e.g. the db.key and db.crt of "bootline secureboot keys create"`);
  }
  const pub = async (args: string[], what: string) => (await run('openssl', args, what)).trim();
  const fromKey = await pub(['pkey', '-in', key, '-pubout'], `reading ${key}`);
  const fromCert = await pub(['x509', '-in', cert, '-noout', '-pubkey'], `reading ${cert}`);
  if (fromKey !== fromCert) throw new UkiError(`--sign-key ${key} does not belong to --sign-cert ${cert} (their public keys differ): give the key the certificate was made for`);
}
