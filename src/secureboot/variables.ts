// The Secure Boot variables: names, vendor GUIDs, attributes, and their efivarfs file
// names (`<Name>-<guid>`; the file's first 4 bytes are the attributes, little-endian).
import { GUIDS } from './guid.ts';

/** The variables a key enrollment writes. */
export const KEY_VARIABLES = ['PK', 'KEK', 'db', 'dbx'] as const;
export type KeyVariable = (typeof KEY_VARIABLES)[number];

/** The variables that tell the firmware's mode (one byte each; AuditMode/DeployedMode since UEFI 2.5). */
export const MODE_VARIABLES = ['SetupMode', 'SecureBoot', 'AuditMode', 'DeployedMode'] as const;
export type ModeVariable = (typeof MODE_VARIABLES)[number];

export function vendorGuid(name: KeyVariable | ModeVariable): string {
  return name === 'db' || name === 'dbx' ? GUIDS.imageSecurityDatabase : GUIDS.globalVariable;
}

export function efivarfsName(name: KeyVariable | ModeVariable): string {
  return `${name}-${vendorGuid(name)}`;
}

export function isKeyVariable(s: string): s is KeyVariable {
  return (KEY_VARIABLES as readonly string[]).includes(s);
}

export const ATTR = {
  NON_VOLATILE: 0x01,
  BOOTSERVICE_ACCESS: 0x02,
  RUNTIME_ACCESS: 0x04,
  TIME_BASED_AUTHENTICATED_WRITE_ACCESS: 0x20,
  APPEND_WRITE: 0x40,
} as const;

/** NV | BS | RT | time-based authenticated write: 0x27, what PK/KEK/db/dbx are written with. */
export const AUTH_ATTRIBUTES = ATTR.NON_VOLATILE | ATTR.BOOTSERVICE_ACCESS | ATTR.RUNTIME_ACCESS | ATTR.TIME_BASED_AUTHENTICATED_WRITE_ACCESS;
/** The same as an append (sign-efi-sig-list -a): 0x67. */
export const APPEND_ATTRIBUTES = AUTH_ATTRIBUTES | ATTR.APPEND_WRITE;
