// bmaptool's GPG-signed bmaps, verified with `gpgv` (Debian package gpgv) against a keyring
// file the device trusts. No gpg home, agent or trust database is involved: gpgv trusts
// exactly the keys in the keyrings given.
//
// bmaptool 3.6 facts (bmaptools/CLI.py, verify_bmap_signature and helpers):
// - A bmap whose first 34 bytes are "-----BEGIN PGP SIGNED MESSAGE-----" is clearsigned: the
//   XML is inside, and is extracted (even with --no-sig-verify) before parsing. No leading
//   whitespace or BOM is tolerated. A clearsigned bmap with --bmap-sig is an error.
// - Otherwise the detached signature is --bmap-sig, else "<bmap path>.asc", else
//   "<bmap path>.sig" (the bmap's spec as found or given, not the image's); none: no check.
// - Every signature must verify; a signature file holding none is only a warning there,
//   an error here (a signature that was meant to be checked must not be dropped).
// - bmaptool checks with the invoking user's default GPG keyring (python `gpgme`); here the
//   keyring is explicit.
// - Under Python 3, 3.6 compares the bytes it read with a str marker, so it never detects a
//   clearsigned bmap (it fails parsing the XML), and it needs the `gpgme` module, which Debian
//   does not ship, for detached signatures (or --no-sig-verify). bootline does both properly.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { onPath } from '../which.ts';

export const CLEARSIGN_MARKER = '-----BEGIN PGP SIGNED MESSAGE-----';
/** Detached signature sidecars, in bmaptool's order. */
export const GPG_SIGNATURE_SUFFIXES = ['.asc', '.sig'] as const;
/** A bmap is at most 64 MiB (bmap/parse.ts); gpgv's output is held to the same bound. */
const MAX_OUTPUT_BYTES = 64 * 1024 * 1024;
const GPGV_TIMEOUT_MS = 60_000;

export class GpgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GpgError';
  }
}

/** True for a clearsigned bmap, detected exactly as bmaptool means to: the file starts with the marker. */
export function isClearsigned(bmap: string | Buffer): boolean {
  const head = typeof bmap === 'string' ? bmap.slice(0, CLEARSIGN_MARKER.length) : bmap.subarray(0, CLEARSIGN_MARKER.length).toString('latin1');
  return head === CLEARSIGN_MARKER;
}

/** The detached signature specs bmaptool tries for a bmap spec: `<bmap>.asc`, `<bmap>.sig` (URL queries kept). */
export function gpgSignatureCandidates(bmapSpec: string): string[] {
  if (bmapSpec === '-') return [];
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(bmapSpec) && !/^s3:/i.test(bmapSpec)) {
    return GPG_SIGNATURE_SUFFIXES.map((s) => {
      const u = new URL(bmapSpec);
      u.pathname = `${u.pathname}${s}`;
      return u.toString();
    });
  }
  return GPG_SIGNATURE_SUFFIXES.map((s) => `${bmapSpec}${s}`);
}

/**
 * The text of a clearsigned bmap WITHOUT checking its signature: for `--no-sig-verify`, where
 * bmaptool still extracts the XML. Undoes dash-escaping ("- -" -> "-"); the text ends with a
 * newline, as gpgv writes it.
 */
export function extractClearsigned(text: string, name = 'the bmap'): string {
  checkClearsignShape(text, name);
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  const blank = lines.indexOf('');
  const end = lines.indexOf('-----BEGIN PGP SIGNATURE-----');
  if (blank < 0 || blank > end) throw new GpgError(`${name}: the clearsigned message has no header end (blank line); re-sign it with \`gpg --clearsign\``);
  return lines
    .slice(blank + 1, end)
    .map((l) => (l.startsWith('- ') ? l.slice(2) : l))
    .join('\n')
    .concat('\n');
}

export interface GpgVerifyOptions {
  /** The bmap's bytes as fetched; or `bmapPath`. */
  bmapText?: string | Buffer;
  bmapPath?: string;
  /** The bmap's name for messages (default: bmapPath, else "the bmap"). */
  bmapName?: string;
  /** The detached signature's bytes (armored `.asc` or binary `.sig`); or `signaturePath`. None: the bmap must be clearsigned. */
  signature?: string | Buffer;
  signaturePath?: string;
  signatureName?: string;
  /** Trusted keyring file(s): `gpg --export` output, binary or armored (armored ones are converted for gpgv). */
  keyring: string | string[];
  /** The gpgv program (default: `gpgv` on PATH). */
  gpgv?: string;
  signal?: AbortSignal;
}

export interface GpgVerifyResult {
  /** The bmap text to parse: the bmap itself, or what a clearsigned bmap holds. */
  signedText: string;
  /** The fingerprint of the signer's primary key (of the first signature). */
  fingerprint?: string;
  /** The signer's user id as gpgv reports it. */
  signer?: string;
  clearsigned: boolean;
}

/**
 * Verifies a bmaptool-style GPG signature with gpgv: detached (`signature`) or clearsigned
 * (the bmap itself). Throws GpgError saying what is wrong and what to do; never returns
 * unverified text.
 */
export async function verifyGpg(o: GpgVerifyOptions): Promise<GpgVerifyResult> {
  const bmapName = o.bmapName ?? o.bmapPath ?? 'the bmap';
  const bmap = o.bmapText !== undefined ? Buffer.from(o.bmapText) : o.bmapPath !== undefined ? await readFile(o.bmapPath) : undefined;
  if (!bmap) throw new GpgError('verifyGpg: give bmapText or bmapPath');
  const clearsigned = isClearsigned(bmap);
  const hasSig = o.signature !== undefined || o.signaturePath !== undefined;
  const sigName = o.signatureName ?? o.signaturePath ?? (clearsigned ? bmapName : 'the signature');
  if (clearsigned && hasSig) {
    throw new GpgError(`${bmapName}: is clearsigned and already holds its signature, so a separate signature (${sigName}) must not be given`);
  }
  if (!clearsigned && !hasSig) {
    throw new GpgError(`${bmapName}: is not clearsigned and no detached signature (<bmap>.asc or <bmap>.sig) was given`);
  }
  if (clearsigned) checkClearsignShape(bmap.toString('latin1'), bmapName);
  const sig = o.signature !== undefined ? Buffer.from(o.signature) : o.signaturePath !== undefined ? await readFile(o.signaturePath) : undefined;

  const gpgv = o.gpgv ?? onPath('gpgv');
  if (!gpgv) {
    throw new GpgError(`cannot verify the GPG signature of ${bmapName}: the program \`gpgv\` is not installed; install the Debian package gpgv (apt-get install gpgv)`);
  }
  const keyrings = (Array.isArray(o.keyring) ? o.keyring : [o.keyring]).map((k) => resolve(k));
  if (keyrings.length === 0) throw new GpgError(`cannot verify the GPG signature of ${bmapName}: no trusted keyring is configured`);

  const home = await mkdtemp(join(tmpdir(), 'bootline-gpgv-'));
  try {
    const keyringArgs: string[] = [];
    for (const [i, k] of keyrings.entries()) {
      let bytes: Buffer;
      try {
        bytes = await readFile(k);
      } catch (e) {
        throw new GpgError(`the trusted GPG keyring ${k} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); install it (gpg --export <key id> > ${k})`);
      }
      if (bytes.subarray(0, 40).toString('latin1').trimStart().startsWith('-----BEGIN PGP PUBLIC KEY BLOCK-----')) {
        // gpgv reads binary keyrings only ("invalid packet (ctb=2d)").
        const bin = join(home, `keyring-${i}.gpg`);
        await writeFile(bin, dearmor(bytes.toString('latin1'), k), { mode: 0o600 });
        keyringArgs.push('--keyring', bin);
      } else {
        keyringArgs.push('--keyring', k);
      }
    }
    const dataFile = join(home, 'bmap');
    await writeFile(dataFile, bmap, { mode: 0o600 });
    const files: string[] = [];
    if (sig) {
      const sigFile = join(home, 'bmap.sig');
      await writeFile(sigFile, sig, { mode: 0o600 });
      files.push(sigFile, dataFile);
    } else {
      files.push('--output', '-', dataFile);
    }
    const r = await run(gpgv, ['--homedir', home, '--status-fd', '3', ...keyringArgs, ...files], o.signal);
    const status = parseStatus(r.status);
    judge(status, r, { sigName, bmapName, keyrings, clearsigned });
    const valid = status.find((s) => s.kw === 'VALIDSIG');
    const good = status.find((s) => s.kw === 'GOODSIG');
    const fingerprint = valid?.args[9] ?? valid?.args[0];
    const signer = good ? good.args.slice(1).join(' ') : undefined;
    return {
      signedText: clearsigned ? r.stdout.toString('utf8') : bmap.toString('utf8'),
      ...(fingerprint ? { fingerprint } : {}),
      ...(signer ? { signer } : {}),
      clearsigned,
    };
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/**
 * One clearsigned message and nothing else: gpgv accepts text after the signature and a
 * second signed message after the first (writing only the first), which would let unsigned
 * text ride along.
 */
function checkClearsignShape(text: string, name: string): void {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, '').trimEnd());
  const count = (m: string) => lines.filter((l) => l === m).length;
  if (count(CLEARSIGN_MARKER) !== 1 || count('-----BEGIN PGP SIGNATURE-----') !== 1 || count('-----END PGP SIGNATURE-----') !== 1) {
    throw new GpgError(`${name}: not a single clearsigned message (one "${CLEARSIGN_MARKER}", one signature block); re-sign it with \`gpg --clearsign\``);
  }
  const end = lines.indexOf('-----END PGP SIGNATURE-----');
  if (lines.slice(end + 1).some((l) => l.trim() !== '')) {
    throw new GpgError(`${name}: has text after "-----END PGP SIGNATURE-----", which the signature does not cover; re-sign it with \`gpg --clearsign\``);
  }
}

interface StatusLine {
  kw: string;
  args: string[];
}

function parseStatus(text: string): StatusLine[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('[GNUPG:] '))
    .map((l) => {
      const [kw = '', ...args] = l.slice(9).trimEnd().split(' ');
      return { kw, args };
    });
}

function judge(
  status: StatusLine[],
  r: { code: number | null; stderr: string },
  c: { sigName: string; bmapName: string; keyrings: string[]; clearsigned: boolean },
): void {
  const first = (kw: string) => status.find((s) => s.kw === kw);
  const said = r.stderr.trim().split('\n').filter((l) => l.trim() !== '').slice(-3).join('; ');
  const fail = (m: string): never => {
    throw new GpgError(`${c.sigName}: ${m}`);
  };
  const noKey = first('NO_PUBKEY');
  const errSig = first('ERRSIG');
  const bad = first('BADSIG');
  if (bad) {
    fail(
      `BAD GPG signature from ${bad.args.slice(1).join(' ') || bad.args[0]} over ${c.bmapName} — ` +
        (c.clearsigned ? 'the bmap was changed after signing' : 'the bmap was changed after signing or the signature belongs to another file'),
    );
  }
  const expired = first('EXPKEYSIG') ?? first('EXPSIG') ?? first('REVKEYSIG');
  if (expired) {
    const what = expired.kw === 'REVKEYSIG' ? 'was made by a revoked key' : expired.kw === 'EXPSIG' ? 'has expired' : 'was made by an expired key';
    fail(`the GPG signature ${what} (${expired.args.slice(1).join(' ') || expired.args[0]}); re-sign the bmap with a valid key`);
  }
  if (noKey) {
    fail(
      `signed by GPG key ${noKey.args[0] ?? '?'}, which is not in the trusted keyring (${c.keyrings.join(', ')}) — ` +
        `add the signer's public key there (gpg --export <key> >> keyring), or sign with a trusted key`,
    );
  }
  if (errSig) {
    fail(`the GPG signature by key ${errSig.args[0] ?? '?'} cannot be checked (gpgv error code ${errSig.args[5] ?? '?'}${said ? `: ${said}` : ''})`);
  }
  if (first('NODATA') || !first('NEWSIG')) {
    fail(`holds no valid OpenPGP signature${said ? ` (gpgv: ${said})` : ''}; expected an armored (.asc) or binary (.sig) detached signature, or a clearsigned bmap`);
  }
  const sigs = status.filter((s) => s.kw === 'NEWSIG').length;
  const valid = status.filter((s) => s.kw === 'VALIDSIG').length;
  if (r.code !== 0 || valid === 0 || valid !== sigs) {
    fail(`gpgv did not accept the signature (exit ${r.code ?? 'signal'}${said ? `: ${said}` : ''})`);
  }
  if (c.clearsigned && status.filter((s) => s.kw === 'PLAINTEXT').length !== 1) {
    fail('the clearsigned bmap does not hold exactly one signed text; re-sign it with `gpg --clearsign`');
  }
}

/** The binary packets of ASCII-armored public key block(s). */
function dearmor(text: string, name: string): Buffer {
  const blocks = text.match(/-----BEGIN PGP PUBLIC KEY BLOCK-----[\s\S]*?-----END PGP PUBLIC KEY BLOCK-----/g) ?? [];
  if (blocks.length === 0) throw new GpgError(`the trusted GPG keyring ${name} is armored but holds no complete public key block`);
  return Buffer.concat(
    blocks.map((b) => {
      const lines = b.split('\n').map((l) => l.replace(/\r$/, '').trim());
      // Armor headers ("Comment: ...") end at the first blank line.
      const blank = lines.indexOf('');
      const body = lines.slice(blank >= 0 ? blank + 1 : 1, -1).filter((l) => l !== '' && !l.startsWith('='));
      return Buffer.from(body.join(''), 'base64');
    }),
  );
}

function run(cmd: string, args: string[], signal?: AbortSignal): Promise<{ code: number | null; stdout: Buffer; stderr: string; status: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C', LANGUAGE: '' },
      ...(signal ? { signal } : {}),
    });
    const out: Buffer[] = [];
    let outSize = 0;
    let err = '';
    let status = '';
    let tooBig = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), GPGV_TIMEOUT_MS);
    child.stdout?.on('data', (c: Buffer) => {
      outSize += c.length;
      if (outSize > MAX_OUTPUT_BYTES) {
        tooBig = true;
        child.kill('SIGKILL');
        return;
      }
      out.push(c);
    });
    child.stderr?.on('data', (c: Buffer) => {
      if (err.length < 64 * 1024) err += c.toString('utf8');
    });
    const statusStream = child.stdio[3];
    statusStream?.on('data', (c: Buffer) => {
      if (status.length < 1024 * 1024) status += c.toString('utf8');
    });
    child.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' ? new GpgError(`cannot run ${cmd}: not found; install the Debian package gpgv (apt-get install gpgv)`) : e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (tooBig) reject(new GpgError(`gpgv wrote more than ${MAX_OUTPUT_BYTES / 1024 / 1024} MiB: not a clearsigned bmap`));
      else resolvePromise({ code, stdout: Buffer.concat(out), stderr: err, status });
    });
  });
}

