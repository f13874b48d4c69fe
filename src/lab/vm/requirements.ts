// What the lab needs on the host, checked before anything starts, each missing piece
// named with the Debian package that provides it.
import { existsSync } from 'node:fs';
import { onPath } from '../../which.ts';
import type { FirmwareChoice } from './ovmf.ts';

export class LabRequirementError extends Error {
  override name = 'LabRequirementError';
}

export interface Requirement {
  what: string;
  /** A command on PATH or an absolute file path. */
  need: string;
  debianPackage: string;
}

/** The iPXE option ROM for virtio-net under UEFI. */
export const IPXE_VIRTIO_ROM = '/usr/lib/ipxe/qemu/efi-virtio.rom';
export const QEMU = 'qemu-system-x86_64';
export const SWTPM = 'swtpm';
export const SWTPM_SETUP = 'swtpm_setup';

export function labRequirements(firmware: FirmwareChoice, o: { tpm: boolean }): Requirement[] {
  return [
    { what: 'QEMU', need: QEMU, debianPackage: 'qemu-system-x86' },
    { what: 'OVMF firmware code', need: firmware.code, debianPackage: 'ovmf' },
    { what: 'OVMF variables template', need: firmware.varsTemplate, debianPackage: 'ovmf' },
    { what: 'the iPXE ROM for virtio-net', need: IPXE_VIRTIO_ROM, debianPackage: 'ipxe-qemu' },
    ...(o.tpm
      ? [
          { what: 'the software TPM', need: SWTPM, debianPackage: 'swtpm' },
          { what: "the software TPM's setup tool", need: SWTPM_SETUP, debianPackage: 'swtpm-tools' },
        ]
      : []),
  ];
}

/** The requirements that are not met (pure apart from the `present` probe). */
export function missingRequirements(reqs: Requirement[], present: (need: string) => boolean = isPresent): Requirement[] {
  return reqs.filter((r) => !present(r.need));
}

function isPresent(need: string): boolean {
  return need.startsWith('/') ? existsSync(need) : onPath(need) !== undefined;
}

/** Throws one error listing everything missing and the apt-get line that installs it. */
export function assertRequirements(reqs: Requirement[], present?: (need: string) => boolean): void {
  const missing = missingRequirements(reqs, present);
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((r) => r.debianPackage))];
  throw new LabRequirementError(
    `the lab cannot start: ${missing.map((r) => `${r.what} (${r.need}) is missing`).join('; ')}. Install with: apt-get install ${pkgs.join(' ')}`,
  );
}
