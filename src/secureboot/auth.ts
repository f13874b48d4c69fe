// EFI_VARIABLE_AUTHENTICATION_2: the signed, time-based update of a Secure Boot variable,
// as sign-efi-sig-list writes it (a .auth file), and the data it signs:
//
//   .auth = TimeStamp EFI_TIME(16)
//         | WIN_CERTIFICATE_UEFI_GUID: dwLength u32 (24 + n) | wRevision u16 0x0200
//           | wCertificateType u16 0x0EF1 (EFI_GUID) | CertType EFI_CERT_TYPE_PKCS7_GUID(16)
//           | CertData: PKCS#7 SignedData (n bytes)
//         | the new value: an EFI signature list (possibly several, or empty to delete)
//
//   signed = VariableName (UTF-16LE, no NUL) | VendorGuid(16) | Attributes u32 | TimeStamp | value
//
// The attributes are signed but not in the file: whoever writes the update must use the
// same ones (0x27, or 0x67 for an append); verifyAuth finds out which.
import type { KeyObject } from 'node:crypto';
import { decodeEfiTime, encodeEfiTime, type EfiTime } from './efi-time.ts';
import { formatGuid, GUIDS, parseGuid } from './guid.ts';
import { parseSignedData, signDetached, verifyDetached, type ParsedSignedData } from './pkcs7.ts';
import { APPEND_ATTRIBUTES, AUTH_ATTRIBUTES, vendorGuid, type KeyVariable } from './variables.ts';

export class AuthError extends Error {
  override name = 'AuthError';
}

const WIN_CERT_REVISION = 0x0200;
const WIN_CERT_TYPE_EFI_GUID = 0x0ef1;
/** TimeStamp + WIN_CERTIFICATE header (8) + CertType GUID. */
const FIXED = 16 + 8 + 16;

export function signedPayload(variable: KeyVariable, attributes: number, time: EfiTime, esl: Buffer): Buffer {
  const attrs = Buffer.alloc(4);
  attrs.writeUInt32LE(attributes);
  return Buffer.concat([Buffer.from(variable, 'utf16le'), parseGuid(vendorGuid(variable)), attrs, encodeEfiTime(time), esl]);
}

export interface AuthInit {
  variable: KeyVariable;
  esl: Buffer;
  key: KeyObject;
  certDer: Buffer;
  time: EfiTime;
  /** An APPEND_WRITE update (sign-efi-sig-list -a). */
  append?: boolean;
}

/** The .auth bytes; equal to `sign-efi-sig-list [-a] -t TIME -k KEY -c CERT VAR ESL OUT` for the same inputs. */
export function makeAuth(o: AuthInit): Buffer {
  const attributes = o.append ? APPEND_ATTRIBUTES : AUTH_ATTRIBUTES;
  const sig = signDetached(signedPayload(o.variable, attributes, o.time, o.esl), o.key, o.certDer);
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(24 + sig.length, 0);
  hdr.writeUInt16LE(WIN_CERT_REVISION, 4);
  hdr.writeUInt16LE(WIN_CERT_TYPE_EFI_GUID, 6);
  return Buffer.concat([encodeEfiTime(o.time), hdr, parseGuid(GUIDS.certTypePkcs7), sig, o.esl]);
}

export interface DecodedAuth {
  time: EfiTime;
  /** The PKCS#7 CertData bytes. */
  signature: Buffer;
  signedData: ParsedSignedData;
  /** The new value: what the firmware stores (an EFI signature list). */
  esl: Buffer;
}

/** Splits a .auth file; `what` (its file or URL) is named in errors. */
export function decodeAuth(buf: Buffer, what: string): DecodedAuth {
  if (buf.length < FIXED) throw new AuthError(`${what} is ${buf.length} bytes, too short for an authenticated variable (.auth) file`);
  const len = buf.readUInt32LE(16);
  const rev = buf.readUInt16LE(20);
  const type = buf.readUInt16LE(22);
  const certType = formatGuid(buf.subarray(24, 40));
  if (rev !== WIN_CERT_REVISION || type !== WIN_CERT_TYPE_EFI_GUID || certType !== GUIDS.certTypePkcs7) {
    throw new AuthError(
      `${what} is not an EFI_VARIABLE_AUTHENTICATION_2 (.auth) file: expected a WIN_CERTIFICATE of revision 0x0200, type 0x0EF1, PKCS#7 ` +
        `after the 16-byte timestamp (an .esl or a certificate given instead?)`,
    );
  }
  if (len < 24 || 16 + len > buf.length) throw new AuthError(`${what}: its signature claims ${len - 24} bytes, the file has ${buf.length - FIXED} after the header (truncated?)`);
  const signature = Buffer.from(buf.subarray(FIXED, 16 + len));
  let signedData: ParsedSignedData;
  try {
    signedData = parseSignedData(signature, `${what}: PKCS#7 signature`);
  } catch (e) {
    throw new AuthError((e as Error).message);
  }
  return { time: decodeEfiTime(buf.subarray(0, 16)), signature, signedData, esl: Buffer.from(buf.subarray(16 + len)) };
}

export type AuthCheck = { ok: true; attributes: number; append: boolean; signer: Buffer } | { ok: false; why: string };

/**
 * Whether `auth` is a valid signed update of `variable` (its signature verifies with its
 * own certificate for this variable name and GUID), and with which attributes: a replace
 * (0x27) or an append (0x67). Says nothing yet about whether PK/KEK will accept the signer.
 */
export function verifyAuth(auth: DecodedAuth, variable: KeyVariable): AuthCheck {
  let why = '';
  for (const attributes of [AUTH_ATTRIBUTES, APPEND_ATTRIBUTES]) {
    const r = verifyDetached(auth.signedData, signedPayload(variable, attributes, auth.time, auth.esl));
    if (r.ok) return { ok: true, attributes, append: attributes === APPEND_ATTRIBUTES, signer: r.signer };
    why = r.why;
  }
  return { ok: false, why: why === 'the signature does not match the signed data' ? `its signature does not verify as an update of ${variable} (made for another variable, or altered?)` : why };
}
