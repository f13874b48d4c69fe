// The trust policy: which signatures an image must carry before its first byte is
// written. With trusted ed25519 keys configured, the bmap (or, without a bmap, the
// image's sha256) must be signed by one of them; with a GPG keyring configured, the bmap
// must carry a valid GPG signature, detached (.asc/.sig) or clearsigned, as bmaptool's.
import { readFile } from 'node:fs/promises';
import { openSource } from './sources/open.ts';
import { signatureCandidates, splitPublicKeys, verify, verifySha256Signature, MAX_SIGNATURE_BYTES } from './signature.ts';
import { extractClearsigned, gpgSignatureCandidates, isClearsigned, verifyGpg } from './gpg.ts';
import type { SourceOptions } from './types.ts';

export interface TrustOptions {
  /** File holding the trusted ed25519 public keys (PEM, several allowed). */
  trustedKeys?: string;
  /** GPG keyring(s) for bmaptool-style signed bmaps. */
  keyring?: string;
  /** A detached GPG signature of the bmap, instead of looking for <bmap>.asc/.sig. */
  bmapSig?: string;
  /** Do not check GPG signatures (bmaptool's --no-sig-verify); ed25519 trust still applies. */
  noSigVerify?: boolean;
}

type Log = (message: string) => void;

/** Reads a small file from any source, refusing more than `limit` bytes. */
export async function readSmall(spec: string, limit: number, opts?: SourceOptions, signal?: AbortSignal): Promise<Buffer> {
  const src = await openSource(spec, opts);
  try {
    const stream = await src.open(0, signal);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of stream) {
      size += (c as Buffer).length;
      if (size > limit) {
        stream.destroy();
        throw new Error(`${spec}: larger than ${limit} bytes — not what was expected here`);
      }
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  } finally {
    await src.close?.();
  }
}

async function firstExisting(specs: string[], opts?: SourceOptions): Promise<string | undefined> {
  for (const s of specs) {
    const src = await openSource(s, opts).catch(() => undefined);
    if (!src) continue;
    const found = await src.exists().catch(() => false);
    await src.close?.();
    if (found) return s;
  }
  return undefined;
}

async function trustedKeys(t: TrustOptions): Promise<string[] | undefined> {
  return t.trustedKeys ? splitPublicKeys(await readFile(t.trustedKeys, 'utf8'), t.trustedKeys) : undefined;
}

/** Checks the bmap's signatures under the policy; returns the bmap text to parse. */
export async function checkBmapTrust(bmapSpec: string, bytes: Buffer, t: TrustOptions, opts: SourceOptions | undefined, log: Log): Promise<string> {
  if (t.bmapSig && t.noSigVerify) throw new Error('--bmap-sig and --no-sig-verify contradict each other: give one of them');
  const keys = await trustedKeys(t);
  let verified = false;

  const edSig = await firstExisting(signatureCandidates(bmapSpec), opts);
  if (keys) {
    if (!edSig) throw new Error(`${bmapSpec} is not signed (looked for ${signatureCandidates(bmapSpec).join(', ')}), and trusted keys are configured (${t.trustedKeys}): refusing to write it`);
    const r = verify(bytes, (await readSmall(edSig, MAX_SIGNATURE_BYTES, opts)).toString('utf8'), keys, edSig, { dataName: bmapSpec, expect: 'bmap', trustedKeysLocation: t.trustedKeys });
    log(`bmap signature ${edSig} verified (key ${r.keyId})`);
    verified = true;
  } else if (edSig) {
    log(`found ${edSig} but no trusted keys are configured: signature not checked`);
  }

  const text = bytes.toString('utf8');
  if (isClearsigned(bytes)) {
    if (t.keyring && !t.noSigVerify) {
      const r = await verifyGpg({ bmapText: bytes, bmapName: bmapSpec, keyring: t.keyring });
      log(`clearsigned bmap verified with gpgv${r.fingerprint ? ` (key ${r.fingerprint})` : ''}`);
      return r.signedText;
    }
    if (!verified) log(`${bmapSpec} is clearsigned but no GPG keyring is configured: signature not checked`);
    return extractClearsigned(text, bmapSpec);
  }
  if (t.keyring && !t.noSigVerify) {
    const sig = t.bmapSig ?? (await firstExisting(gpgSignatureCandidates(bmapSpec), opts));
    if (!sig) {
      if (verified) return text;
      throw new Error(`${bmapSpec} has no GPG signature (looked for ${gpgSignatureCandidates(bmapSpec).join(', ')}), and a keyring is configured (${t.keyring}): refusing to write it`);
    }
    const r = await verifyGpg({ bmapText: bytes, bmapName: bmapSpec, signature: await readSmall(sig, 1024 * 1024, opts), signatureName: sig, keyring: t.keyring });
    log(`bmap signature ${sig} verified with gpgv${r.fingerprint ? ` (key ${r.fingerprint})` : ''}`);
  }
  return text;
}

/**
 * Without a bmap, trusted keys require a signed sha256 of the image; returns the digest
 * the written image must have. The digest is known before writing, but whether the
 * image matches it is only known once it has streamed through.
 */
export async function checkImageTrust(imageSpec: string, t: TrustOptions, sha256: string | undefined, opts: SourceOptions | undefined, log: Log): Promise<string | undefined> {
  const keys = await trustedKeys(t);
  if (!keys) return sha256;
  const sig = await firstExisting(signatureCandidates(imageSpec), opts);
  if (!sig) throw new Error(`${imageSpec} has no bmap and no signature (looked for ${signatureCandidates(imageSpec).join(', ')}), and trusted keys are configured (${t.trustedKeys}): refusing to write it`);
  const r = verifySha256Signature((await readSmall(sig, MAX_SIGNATURE_BYTES, opts)).toString('utf8'), keys, sig, {
    ...(sha256 ? { imageSha256: sha256 } : {}),
    imageName: imageSpec,
    ...(t.trustedKeys ? { trustedKeysLocation: t.trustedKeys } : {}),
  });
  log(`image sha256 signature ${sig} verified (key ${r.keyId}); the written image must match it`);
  return r.sha256;
}
