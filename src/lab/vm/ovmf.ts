// UEFI firmware for virtual devices: Debian's OVMF builds. CODE is shared and read-only;
// every device gets its own copy of a VARS template (its NVRAM: boot entries, Secure
// Boot keys), so that what one device enrolls does not leak into the next.
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';

export const OVMF_DIR = '/usr/share/OVMF';

/** "empty": no keys, the firmware is in Setup Mode (what bootline enrolls into). "ms": Microsoft's keys. */
export type VarsTemplate = 'empty' | 'ms';

export interface FirmwareChoice {
  /** The read-only code image. */
  code: string;
  /** The template each device's VARS is copied from. */
  varsTemplate: string;
  /** Secure-boot capable code: needs SMM and a secure pflash (see qemu-args). */
  secureBoot: boolean;
}

export function chooseFirmware(o: { secureBoot: boolean; vars: VarsTemplate }, dir = OVMF_DIR): FirmwareChoice {
  return {
    code: join(dir, o.secureBoot ? 'OVMF_CODE_4M.secboot.fd' : 'OVMF_CODE_4M.fd'),
    varsTemplate: join(dir, o.vars === 'ms' ? 'OVMF_VARS_4M.ms.fd' : 'OVMF_VARS_4M.fd'),
    secureBoot: o.secureBoot,
  };
}

/** The device's own, writable VARS. */
export function copyVars(choice: FirmwareChoice, dest: string): string {
  copyFileSync(choice.varsTemplate, dest);
  return dest;
}
