// X.509 certificates as Secure Boot needs them: PEM or DER in, DER out; the issuer and
// serial bytes a PKCS#7 signer refers to; a short name for messages; and self-signed
// certificates for new PK/KEK/db keys (node's crypto signs, the DER is written here).
import { createHash, createPublicKey, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { bitString, children, ctx, DerError, explicit, expectTag, nullValue, octetString, oid, readOne, seq, setOf, smallInteger, TAG, time, tlv, unsignedInteger, utf8String } from './der.ts';

export class CertificateError extends Error {
  override name = 'CertificateError';
}

export const OID = {
  sha256: '2.16.840.1.101.3.4.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  pkcs7Data: '1.2.840.113549.1.7.1',
  pkcs7SignedData: '1.2.840.113549.1.7.2',
  commonName: '2.5.4.3',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
} as const;

const PEM_CERT = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g;

/**
 * The DER certificates in a file's bytes: every PEM block, or the whole file as DER.
 * Each is checked to be a certificate; `what` (the file) is named in errors.
 */
export function certificatesFromBytes(bytes: Buffer, what: string): Buffer[] {
  const text = bytes.toString('latin1');
  let ders: Buffer[];
  if (text.includes('-----BEGIN')) {
    ders = [...text.matchAll(PEM_CERT)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
    if (ders.length === 0) {
      const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(text)?.[1] ?? 'unknown';
      throw new CertificateError(`${what} is PEM but holds no certificate (it holds a ${label}): give the .crt/.pem certificate file`);
    }
  } else {
    ders = [bytes];
  }
  ders.forEach((d, i) => {
    const which = ders.length > 1 ? `${what} (certificate ${i + 1})` : what;
    try {
      new X509Certificate(d);
      readOne(d, TAG.SEQUENCE, which);
    } catch (e) {
      throw new CertificateError(`${which} is not a readable X.509 certificate (PEM or DER): ${(e as Error).message}`);
    }
  });
  return ders;
}

export interface CertificateParts {
  /** The issuer Name and serial INTEGER, as TLVs copied from the certificate. */
  issuer: Buffer;
  serial: Buffer;
  subject: Buffer;
}

export function certificateParts(der: Buffer, what = 'certificate'): CertificateParts {
  const cert = readOne(der, TAG.SEQUENCE, what);
  const tbs = expectTag(children(cert, what)[0], TAG.SEQUENCE, `${what}: tbsCertificate`);
  const f = children(tbs, what);
  const i = f[0]?.tag === ctx(0) ? 1 : 0; // version is optional (v1)
  return {
    serial: expectTag(f[i], TAG.INTEGER, `${what}: serial`).raw,
    issuer: expectTag(f[i + 2], TAG.SEQUENCE, `${what}: issuer`).raw,
    subject: expectTag(f[i + 4], TAG.SEQUENCE, `${what}: subject`).raw,
  };
}

/** A short human name: the subject's CN (or whole subject) and the SHA-256 fingerprint's start. */
export function describeCertificate(der: Buffer): string {
  try {
    const c = new X509Certificate(der);
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(c.subject)?.[1] ?? c.subject.replace(/\n/g, ', ');
    return `"${cn}" (sha256 ${c.fingerprint256.replace(/:/g, '').slice(0, 16).toLowerCase()}…)`;
  } catch {
    return `(not a readable certificate, ${der.length} bytes)`;
  }
}

/** Whether a private key belongs to a certificate. */
export function keyMatchesCertificate(key: KeyObject, der: Buffer): boolean {
  try {
    return new X509Certificate(der).checkPrivateKey(key);
  } catch {
    return false;
  }
}

export interface SelfSignedInit {
  key: KeyObject;
  commonName: string;
  notBefore: Date;
  notAfter: Date;
  /** 1..20 bytes; random in practice. */
  serial: Buffer;
}

const algorithm = (dotted: string) => seq(oid(dotted), nullValue());

/**
 * A self-signed RSA/SHA-256 CA certificate (basicConstraints CA, keyUsage digitalSignature
 * and keyCertSign, key identifiers): what `openssl req -x509` makes for Secure Boot keys.
 */
export function selfSignedCertificate(o: SelfSignedInit): Buffer {
  if (o.key.asymmetricKeyType !== 'rsa') throw new CertificateError(`only RSA keys are supported for Secure Boot certificates, not ${o.key.asymmetricKeyType}`);
  const spki = createPublicKey(o.key).export({ type: 'spki', format: 'der' });
  const spkiNode = readOne(spki, TAG.SEQUENCE, 'public key');
  const keyBits = expectTag(children(spkiNode, 'public key')[1], TAG.BIT_STRING, 'public key bits');
  const keyId = createHash('sha1').update(keyBits.content.subarray(1)).digest();
  const name = seq(setOf(seq(oid(OID.commonName), utf8String(o.commonName))));
  const ext = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [Buffer.from([TAG_BOOLEAN, 1, 0xff])] : []), octetString(value));
  const extensions = seq(
    ext(OID.subjectKeyIdentifier, false, octetString(keyId)),
    ext(OID.authorityKeyIdentifier, false, seq(tlv(0x80, keyId))),
    ext(OID.basicConstraints, true, seq(Buffer.from([TAG_BOOLEAN, 1, 0xff]))),
    // digitalSignature (bit 0) and keyCertSign (bit 5): 0b10000100, 2 unused bits
    ext(OID.keyUsage, true, tlv(TAG.BIT_STRING, Buffer.from([0x02, 0x84]))),
  );
  const tbs = seq(
    explicit(0, smallInteger(2)),
    unsignedInteger(o.serial),
    algorithm(OID.sha256WithRsa),
    name,
    seq(time(o.notBefore), time(o.notAfter)),
    name,
    spki,
    explicit(3, extensions),
  );
  const der = seq(tbs, algorithm(OID.sha256WithRsa), bitString(sign('sha256', tbs, o.key)));
  try {
    new X509Certificate(der);
  } catch (e) {
    throw new DerError(`the certificate just made does not parse: ${(e as Error).message}`);
  }
  return der;
}

const TAG_BOOLEAN = 0x01;
