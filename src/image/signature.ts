// Detached ed25519 signatures for images: `bootline image sign` writes them, the copy verifies
// them against the keys the device trusts before the first byte is written.
//
// What is signed
// - `signed: bmap`: the exact bytes of the bmap file as published. The bmap holds the
//   checksum of every mapped range (and its own BmapFileChecksum), so one signature over
//   a few kilobytes covers the whole image, and each range is checked as it is written.
// - `signed: sha256`: for an image without a bmap, the ASCII string `sha256:<64 lowercase
//   hex>` of the decompressed image. The digest is carried in the file (`sha256:` line), so
//   the signature can be checked before writing; the image is then held to that digest as
//   it streams (a mismatch can only be noticed at the end, hence: prefer a bmap).
//
// The file (UTF-8 text, LF or CRLF, at most 4 KiB; `#` comments and blank lines ignored;
// every field exactly once; unknown fields refused):
//
//   bootline-signature: 1          <- first field, the format version
//   algorithm: ed25519
//   key-id: <16 lowercase hex>     <- keyId() of the signing public key
//   signed: bmap | sha256
//   sha256: <64 lowercase hex>     <- only (and always) with `signed: sha256`
//   signature: <base64 of the 64-byte ed25519 signature>
//
// The sidecar is `<signed file>.ed25519.sig`: `product.wic.bmap.ed25519.sig` next to the bmap,
// or `product.wic.zst.ed25519.sig` next to an image without one. The name cannot collide with
// bmaptool's GPG sidecars (`<bmap>.asc`, `<bmap>.sig`).
//
// Keys are PEM: PKCS#8 private keys and SPKI public keys (`openssl genpkey -algorithm
// ed25519` and `openssl pkey -pubout` make the same).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';

export type SignedWhat = 'bmap' | 'sha256';

export class SignatureError extends Error {
  /** The signature file (or key) the problem is in. */
  readonly source: string;
  readonly line: number | undefined;
  constructor(source: string, line: number | undefined, message: string) {
    super(`${source}${line !== undefined ? `:${line}` : ''}: ${message}`);
    this.name = 'SignatureError';
    this.source = source;
    this.line = line;
  }
}

export interface ParsedSignature {
  version: 1;
  algorithm: 'ed25519';
  keyId: string;
  signed: SignedWhat;
  /** Lowercase hex digest of the decompressed image; present exactly when `signed` is 'sha256'. */
  sha256?: string;
  /** The raw 64-byte signature. */
  signature: Buffer;
}

export const SIGNATURE_SUFFIX = '.ed25519.sig';
export const MAX_SIGNATURE_BYTES = 4096;
const KEY_ID_HEX = 16;
const ED25519_SIGNATURE_BYTES = 64;
const SHA256_PAYLOAD = /^sha256:[0-9a-f]{64}$/;

/** A new ed25519 key pair as PEM (PKCS#8 private, SPKI public). */
export function generateKeyPair(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function publicKeyOf(pem: string, source: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey(pem);
  } catch (e) {
    throw new SignatureError(source, undefined, `not a PEM public key (${(e as Error).message}); expected "-----BEGIN PUBLIC KEY-----" as \`openssl pkey -pubout\` writes it`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new SignatureError(source, undefined, `is a ${key.asymmetricKeyType ?? 'unknown'} key; bootline signatures use ed25519 keys`);
  }
  return key;
}

function keyIdOf(key: KeyObject): string {
  const der = key.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('hex').slice(0, KEY_ID_HEX);
}

/** The key id of an ed25519 public key (or private key): the first 16 hex of sha256 over the DER SPKI. */
export function keyId(publicPem: string): string {
  return keyIdOf(publicKeyOf(publicPem, 'public key'));
}

/** Every PEM block in `text` (a trusted-keys file may hold several), each checked to be an ed25519 public key. */
export function splitPublicKeys(text: string, source: string): string[] {
  const blocks = text.match(/-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g) ?? [];
  if (blocks.length === 0) throw new SignatureError(source, undefined, 'holds no PEM public key ("-----BEGIN PUBLIC KEY-----")');
  blocks.forEach((b, i) => publicKeyOf(b, blocks.length > 1 ? `${source} (key ${i + 1})` : source));
  return blocks.map((b) => `${b}\n`);
}

/** The message signed for an image without a bmap: `sha256:<hex>` of the decompressed image. */
export function sha256Payload(hex: string): Buffer {
  const h = hex.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(h)) throw new Error(`not a sha256 digest: "${hex}" (expected 64 hex digits)`);
  return Buffer.from(`sha256:${h}`, 'ascii');
}

/**
 * Signs `data` and returns the signature file's text. `what` 'bmap': `data` is the bmap
 * file's exact bytes; 'sha256': `data` is `sha256Payload(<image digest>)`.
 */
export function sign(data: Buffer, privatePem: string, what: SignedWhat): string {
  let key: KeyObject;
  try {
    key = createPrivateKey(privatePem);
  } catch (e) {
    throw new SignatureError('private key', undefined, `cannot be read (${(e as Error).message}); expected an unencrypted PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----")`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new SignatureError('private key', undefined, `is a ${key.asymmetricKeyType ?? 'unknown'} key; make an ed25519 one (\`openssl genpkey -algorithm ed25519\`)`);
  }
  let sha256: string | undefined;
  if (what === 'sha256') {
    const text = data.toString('latin1');
    if (!SHA256_PAYLOAD.test(text)) throw new Error('signing a sha256: the data must be sha256Payload(<64 hex digits>), not the image itself');
    sha256 = text.slice('sha256:'.length);
  } else if (SHA256_PAYLOAD.test(data.toString('latin1'))) {
    throw new Error('signing a bmap: the data is a sha256 payload, not a bmap file; sign it with "sha256"');
  }
  const signature = cryptoSign(null, data, key);
  return [
    'bootline-signature: 1',
    'algorithm: ed25519',
    `key-id: ${keyIdOf(createPublicKey(key))}`,
    `signed: ${what}`,
    ...(sha256 ? [`sha256: ${sha256}`] : []),
    `signature: ${signature.toString('base64')}`,
    '',
  ].join('\n');
}

const FIELDS = ['bootline-signature', 'algorithm', 'key-id', 'signed', 'sha256', 'signature'] as const;
type Field = (typeof FIELDS)[number];

/** Reads a signature file strictly; every error names `source` and, where there is one, the line. */
export function parseSignature(text: string, source: string): ParsedSignature {
  if (Buffer.byteLength(text, 'utf8') > MAX_SIGNATURE_BYTES) {
    throw new SignatureError(source, undefined, `larger than ${MAX_SIGNATURE_BYTES} bytes: not a bootline signature file`);
  }
  if (text.startsWith('-----BEGIN PGP')) {
    throw new SignatureError(source, 1, 'is a GPG signature, not a bootline ed25519 one; GPG signatures belong in <bmap>.asc or <bmap>.sig');
  }
  const seen = new Map<Field, { value: string; line: number }>();
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  lines.forEach((raw, i) => {
    const no = i + 1;
    const line = raw.replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) return;
    const m = /^([a-z0-9-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) throw new SignatureError(source, no, `expected "<field>: <value>", found "${line.length > 60 ? `${line.slice(0, 60)}...` : line}"`);
    const name = m[1] as string;
    const value = m[2] as string;
    if (!(FIELDS as readonly string[]).includes(name)) {
      throw new SignatureError(source, no, `unknown field "${name}" (known: ${FIELDS.join(', ')})`);
    }
    if (seen.size === 0 && name !== 'bootline-signature') {
      throw new SignatureError(source, no, 'not a bootline signature file: the first field must be "bootline-signature: 1"');
    }
    const prev = seen.get(name as Field);
    if (prev) throw new SignatureError(source, no, `"${name}" given twice (first on line ${prev.line})`);
    seen.set(name as Field, { value, line: no });
  });
  if (seen.size === 0) throw new SignatureError(source, undefined, 'is empty: not a bootline signature file');

  const need = (f: Field): { value: string; line: number } => {
    const v = seen.get(f);
    if (!v) throw new SignatureError(source, undefined, `the field "${f}" is missing`);
    return v;
  };
  const version = need('bootline-signature');
  if (version.value !== '1') {
    throw new SignatureError(source, version.line, `format version "${version.value}" is not supported (this bootline reads version 1); update bootline`);
  }
  const algorithm = need('algorithm');
  if (algorithm.value !== 'ed25519') {
    throw new SignatureError(source, algorithm.line, `algorithm "${algorithm.value}" is not supported; bootline signatures are ed25519`);
  }
  const kid = need('key-id');
  if (!new RegExp(`^[0-9a-f]{${KEY_ID_HEX}}$`).test(kid.value)) {
    throw new SignatureError(source, kid.line, `key-id "${kid.value}" is not ${KEY_ID_HEX} lowercase hex digits`);
  }
  const signed = need('signed');
  if (signed.value !== 'bmap' && signed.value !== 'sha256') {
    throw new SignatureError(source, signed.line, `signed "${signed.value}" must be "bmap" or "sha256"`);
  }
  const sha = seen.get('sha256');
  if (signed.value === 'sha256' && !sha) throw new SignatureError(source, signed.line, 'signed: sha256 needs a "sha256: <64 hex>" field');
  if (signed.value === 'bmap' && sha) throw new SignatureError(source, sha.line, 'a "sha256" field belongs only with "signed: sha256"');
  if (sha && !/^[0-9a-f]{64}$/.test(sha.value)) {
    throw new SignatureError(source, sha.line, `sha256 "${sha.value}" is not 64 lowercase hex digits`);
  }
  const sig = need('signature');
  const bytes = Buffer.from(sig.value, 'base64');
  if (bytes.toString('base64') !== sig.value || bytes.length !== ED25519_SIGNATURE_BYTES) {
    throw new SignatureError(source, sig.line, `signature is not the base64 of a ${ED25519_SIGNATURE_BYTES}-byte ed25519 signature (the file was cut or edited)`);
  }
  return {
    version: 1,
    algorithm: 'ed25519',
    keyId: kid.value,
    signed: signed.value,
    ...(sha ? { sha256: sha.value } : {}),
    signature: bytes,
  };
}

export interface VerifyOptions {
  /** The signed file's name for messages (the bmap, or the image for `signed: sha256`). */
  dataName?: string;
  /** What the caller is checking; a signature over the other kind is refused with a clear message. */
  expect?: SignedWhat;
  /** Where the operator installs trusted keys, for the "unknown key" message. */
  trustedKeysLocation?: string;
}

/**
 * Verifies `sigText` (from `source`) over `data` with one of `trustedPublicPems`. For
 * `signed: bmap`, `data` is the bmap's exact bytes; for `signed: sha256`, it is
 * `sha256Payload(<digest>)` (see verifySha256Signature for the usual case). Throws
 * SignatureError; returns the id of the key that signed.
 */
export function verify(data: Buffer, sigText: string, trustedPublicPems: string[], source: string, opts: VerifyOptions = {}): { keyId: string; signed: SignedWhat; sha256?: string } {
  const parsed = parseSignature(sigText, source);
  const dataName = opts.dataName ?? (parsed.signed === 'bmap' ? 'the bmap' : 'the image');
  if (opts.expect && opts.expect !== parsed.signed) {
    throw new SignatureError(
      source,
      undefined,
      parsed.signed === 'sha256'
        ? `signs an image's sha256, but ${dataName} is checked through its bmap; sign the bmap (\`bootline image sign <bmap>\`)`
        : `signs a bmap, but ${dataName} is copied without one; pass the bmap, or sign the image's sha256`,
    );
  }
  if (parsed.signed === 'sha256') {
    const want = `sha256:${parsed.sha256 ?? ''}`;
    const got = data.toString('latin1');
    if (got !== want) {
      throw new SignatureError(
        source,
        undefined,
        SHA256_PAYLOAD.test(got)
          ? `signs sha256 ${parsed.sha256}, but ${dataName} has sha256 ${got.slice(7)} — the image was changed after signing or the signature belongs to another image`
          : `signs an image's sha256, but was checked against other data (${dataName})`,
      );
    }
  }
  const keys = trustedKeys(trustedPublicPems);
  const where = opts.trustedKeysLocation ?? 'the device configuration';
  if (keys.length === 0) {
    throw new SignatureError(source, undefined, `no trusted public keys are configured to check it against — install the signer's public key in ${where}`);
  }
  const key = keys.find((k) => k.id === parsed.keyId);
  if (!key) {
    throw new SignatureError(
      source,
      undefined,
      `signed by key ${parsed.keyId}, which is not among the trusted keys (${keys.map((k) => k.id).join(', ')}) — install the right public key in ${where}, or sign with a trusted key`,
    );
  }
  if (!cryptoVerify(null, data, key.key, parsed.signature)) {
    throw new SignatureError(
      source,
      undefined,
      parsed.signed === 'bmap'
        ? `signature does not match ${dataName} — the bmap was changed after signing or the signature belongs to another file`
        : `signature does not match sha256 ${parsed.sha256 ?? ''} — the signature file was edited or belongs to another image`,
    );
  }
  return { keyId: key.id, signed: parsed.signed, ...(parsed.sha256 ? { sha256: parsed.sha256 } : {}) };
}

/**
 * For an image without a bmap: checks a `signed: sha256` signature over the digest it
 * carries, and that the digest equals `imageSha256` when the caller knows one (--sha256).
 * Returns the digest the image must then have when written (`copyImage`'s `sha256`).
 */
export function verifySha256Signature(sigText: string, trustedPublicPems: string[], source: string, opts: { imageSha256?: string; imageName?: string; trustedKeysLocation?: string } = {}): { keyId: string; sha256: string } {
  const parsed = parseSignature(sigText, source);
  const imageName = opts.imageName ?? 'the image';
  if (parsed.signed !== 'sha256' || !parsed.sha256) {
    throw new SignatureError(source, undefined, `signs a bmap, but ${imageName} is copied without one; pass the bmap, or sign the image's sha256`);
  }
  if (opts.imageSha256 !== undefined && opts.imageSha256.toLowerCase() !== parsed.sha256) {
    throw new SignatureError(source, undefined, `signs sha256 ${parsed.sha256}, but ${imageName} is expected to have sha256 ${opts.imageSha256.toLowerCase()} — the signature belongs to another image`);
  }
  const r = verify(sha256Payload(parsed.sha256), sigText, trustedPublicPems, source, {
    dataName: imageName,
    expect: 'sha256',
    ...(opts.trustedKeysLocation ? { trustedKeysLocation: opts.trustedKeysLocation } : {}),
  });
  return { keyId: r.keyId, sha256: parsed.sha256 };
}

function trustedKeys(pems: string[]): { id: string; key: KeyObject }[] {
  return pems.map((pem, i) => {
    const key = publicKeyOf(pem, `trusted key ${i + 1}`);
    return { id: keyIdOf(key), key };
  });
}

/**
 * The signature sidecar for a bmap or image spec: `<spec>.ed25519.sig` (for URLs the path
 * changes and the query stays; `-`, standard input, has none).
 */
export function signatureCandidates(spec: string): string[] {
  if (spec === '-') return [];
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec) && !/^s3:/i.test(spec)) {
    const u = new URL(spec);
    u.pathname = `${u.pathname}${SIGNATURE_SUFFIX}`;
    return [u.toString()];
  }
  return [`${spec}${SIGNATURE_SUFFIX}`];
}
