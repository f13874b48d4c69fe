// Recovery keys in systemd's format (systemd-cryptenroll --recovery-key): 256 random
// bits as 64 "modhex" characters in 8 dashed groups. The format is typeable on any
// keyboard layout, and systemd-cryptsetup and cryptsetup take it as a passphrase.
import { randomBytes } from 'node:crypto';
import { MODHEX } from '../api/recovery-key.ts';

export function recoveryKeyOf(bytes: Uint8Array): string {
  if (bytes.length !== 32) throw new Error('a recovery key is made of 32 bytes');
  let s = '';
  for (const b of bytes) s += MODHEX[b >> 4]! + MODHEX[b & 15]!;
  return s.match(/.{8}/g)!.join('-');
}

export const newRecoveryKey = (): string => recoveryKeyOf(randomBytes(32));

/** A random temporary passphrase (hex, so that every tool reads the same bytes). */
export const newTemporaryKey = (): string => randomBytes(32).toString('hex');
