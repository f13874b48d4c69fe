// Key pairs for the secureboot tests: committed openssl-made fixtures (see
// test/fixtures/secureboot/README.md), and efitools, the reference.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

export interface KeyPair {
  key: string;
  crt: string;
}

export const SB_FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'secureboot');

/** The fixture pair `<name>-<bits>.{key,crt}`: PK, KEK, db at 2048 bits; PK, KEK at 4096. */
export function fixturePair(name: 'PK' | 'KEK' | 'db', bits: 2048 | 4096): KeyPair {
  return { key: join(SB_FIXTURES, `${name}-${bits}.key`), crt: join(SB_FIXTURES, `${name}-${bits}.crt`) };
}

/** Runs an efitools program; its chatter on stdout is dropped. */
export function efitools(program: 'cert-to-efi-sig-list' | 'sign-efi-sig-list', args: string[]): void {
  execFileSync(program, args, { stdio: 'pipe' });
}
