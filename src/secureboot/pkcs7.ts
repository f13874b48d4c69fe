// The PKCS#7 SignedData of an authenticated variable write, made as efitools'
// sign-efi-sig-list makes it (OpenSSL PKCS7_sign with BINARY|DETACHED|NOATTR, SHA-256):
// detached content (data, no eContent), the signer's certificate included, no signed
// attributes (the RSA signature is over the payload itself), and the DER SignedData
// written without its ContentInfo wrapper, as the UEFI specification asks. Reading also
// accepts the wrapped form (some tools write it; EDK2 accepts both).
import { sign, verify, X509Certificate, type KeyObject } from 'node:crypto';
import { children, ctx, decodeOid, DerError, expectTag, nullValue, octetString, oid, readOne, seq, setOf, smallInteger, TAG, tlv } from './der.ts';
import { certificateParts, OID } from './x509.ts';

const algorithm = (dotted: string) => seq(oid(dotted), nullValue());

/** SignedData over `payload`, signed by `key` (RSA) whose certificate is `certDer`. */
export function signDetached(payload: Buffer, key: KeyObject, certDer: Buffer): Buffer {
  if (key.asymmetricKeyType !== 'rsa') throw new DerError(`the signing key is ${key.asymmetricKeyType}; Secure Boot variables are signed with RSA keys`);
  const { issuer, serial } = certificateParts(certDer, 'signing certificate');
  const signerInfo = seq(
    smallInteger(1),
    seq(issuer, serial),
    algorithm(OID.sha256),
    algorithm(OID.rsaEncryption),
    octetString(sign('sha256', payload, key)),
  );
  return seq(
    smallInteger(1),
    setOf(algorithm(OID.sha256)),
    seq(oid(OID.pkcs7Data)),
    tlv(ctx(0), certDer),
    setOf(signerInfo),
  );
}

export interface ParsedSignedData {
  certificates: Buffer[];
  signers: Array<{ issuer: Buffer; serial: Buffer; digest: string; signature: Buffer; hasSignedAttributes: boolean }>;
}

export function parseSignedData(der: Buffer, what = 'PKCS#7 signature'): ParsedSignedData {
  let node = readOne(der, TAG.SEQUENCE, what);
  let f = children(node, what);
  if (f[0]?.tag === TAG.OID) {
    // ContentInfo { contentType signedData, [0] EXPLICIT SignedData }
    if (decodeOid(f[0].content) !== OID.pkcs7SignedData) throw new DerError(`${what}: a PKCS#7 ContentInfo that is not SignedData`);
    node = expectTag(children(expectTag(f[1], ctx(0), `${what}: content`), what)[0], TAG.SEQUENCE, `${what}: SignedData`);
    f = children(node, what);
  }
  expectTag(f[0], TAG.INTEGER, `${what}: version`);
  let i = 3;
  const certificates: Buffer[] = [];
  if (f[i]?.tag === ctx(0)) {
    for (const c of children(f[i]!, `${what}: certificates`)) certificates.push(Buffer.from(c.raw));
    i++;
  }
  if (f[i]?.tag === ctx(1)) i++; // CRLs
  const infos = children(expectTag(f[i], TAG.SET, `${what}: signerInfos`), what);
  const signers = infos.map((si) => {
    const s = children(si, `${what}: signerInfo`);
    const ias = children(expectTag(s[1], TAG.SEQUENCE, `${what}: issuerAndSerialNumber`), what);
    const hasSignedAttributes = s[3]?.tag === ctx(0);
    const rest = s.slice(hasSignedAttributes ? 4 : 3);
    return {
      issuer: Buffer.from(ias[0]!.raw),
      serial: Buffer.from(ias[1]!.raw),
      digest: decodeOid(children(expectTag(s[2], TAG.SEQUENCE, `${what}: digestAlgorithm`), what)[0]!.content),
      signature: Buffer.from(expectTag(rest[1], TAG.OCTET_STRING, `${what}: signature`).content),
      hasSignedAttributes,
    };
  });
  return { certificates, signers };
}

export type SignatureCheck = { ok: true; signer: Buffer } | { ok: false; why: string };

/**
 * Whether `sd` is a valid signature of `payload` by one of its own certificates (the
 * firmware then checks that certificate against PK or KEK; that is the caller's part).
 */
export function verifyDetached(sd: ParsedSignedData, payload: Buffer): SignatureCheck {
  if (sd.signers.length !== 1) return { ok: false, why: `it has ${sd.signers.length} signers, not one` };
  const s = sd.signers[0]!;
  if (s.digest !== OID.sha256) return { ok: false, why: `its digest is ${s.digest}, not SHA-256` };
  if (s.hasSignedAttributes) return { ok: false, why: 'it has signed attributes (UEFI firmware expects none)' };
  const cert = sd.certificates.find((c) => {
    const p = certificateParts(c);
    return p.issuer.equals(s.issuer) && p.serial.equals(s.serial);
  });
  if (!cert) return { ok: false, why: "the signer's certificate is not included" };
  const good = verify('sha256', payload, new X509Certificate(cert).publicKey, s.signature);
  return good ? { ok: true, signer: cert } : { ok: false, why: 'the signature does not match the signed data' };
}
