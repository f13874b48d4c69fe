// Sealing of escrowed recovery keys: AES-256-GCM under the server's key-encryption key, a
// fresh random 96-bit IV per record, and the device id and volume UUID as associated data,
// so that a sealed key copied onto another device's or volume's row no longer opens.
// Pure apart from the randomness.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

const VERSION = 'bl-escrow-1';
const IV_BYTES = 12;
const TAG_BYTES = 16;
export const KEK_BYTES = 32;

/** A short public fingerprint of a key-encryption key: tells which key sealed a record. */
export function kekId(kek: Buffer): string {
  return createHash('sha256').update('bootline escrow key id\0').update(kek).digest('hex').slice(0, 16);
}

function aad(deviceId: string, volumeUuid: string): Buffer {
  return Buffer.from(`${VERSION}\0${deviceId}\0${volumeUuid}`, 'utf8');
}

export interface SealContext {
  deviceId: string;
  volumeUuid: string;
}

/** `bl-escrow-1.<kek id>.<iv>.<ciphertext>.<tag>` (base64url): one text column. */
export function seal(kek: Buffer, ctx: SealContext, plaintext: string): string {
  if (kek.length !== KEK_BYTES) throw new Error(`escrow key must be ${KEK_BYTES} bytes, not ${kek.length}`);
  const iv = randomBytes(IV_BYTES);
  const c = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
  c.setAAD(aad(ctx.deviceId, ctx.volumeUuid));
  const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
  return [VERSION, kekId(kek), iv.toString('base64url'), ct.toString('base64url'), c.getAuthTag().toString('base64url')].join('.');
}

/** The record was sealed under another key than the one the server has now. */
export class EscrowKeyMismatchError extends Error {
  constructor(
    readonly sealedWith: string,
    readonly current: string,
  ) {
    super(`sealed with escrow key ${sealedWith}, but the server's escrow key is ${current}`);
    this.name = 'EscrowKeyMismatchError';
  }
}

/** The record does not open under its key: damaged, or moved to another device or volume. */
export class EscrowRecordDamagedError extends Error {
  constructor(why: string) {
    super(why);
    this.name = 'EscrowRecordDamagedError';
  }
}

export function unseal(kek: Buffer, ctx: SealContext, sealed: string): string {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== VERSION) throw new EscrowRecordDamagedError(`not a ${VERSION} record`);
  const [, id, ivText, ctText, tagText] = parts as [string, string, string, string, string];
  const current = kekId(kek);
  if (id !== current) throw new EscrowKeyMismatchError(id, current);
  const iv = Buffer.from(ivText, 'base64url');
  const tag = Buffer.from(tagText, 'base64url');
  if (iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw new EscrowRecordDamagedError('bad IV or tag length');
  const d = createDecipheriv('aes-256-gcm', kek, iv, { authTagLength: TAG_BYTES });
  d.setAAD(aad(ctx.deviceId, ctx.volumeUuid));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(Buffer.from(ctText, 'base64url')), d.final()]).toString('utf8');
  } catch {
    throw new EscrowRecordDamagedError('authentication failed (the record was altered, or belongs to another device or volume)');
  }
}
