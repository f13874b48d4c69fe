// The few lines the console shows after collecting: enough to check a device at a glance.
import { formatBytes } from '../format.ts';
import type { InventoryDocument } from './schema.ts';

export function summarize(doc: InventoryDocument): string[] {
  const s = doc.system;
  const lines = [
    `${[s.vendor, s.product].filter(Boolean).join(' ') || 'unknown system'}, serial ${doc.serial ?? 'unknown'}${s.uuid ? `, UUID ${s.uuid}` : ''}`,
    `${doc.cpus.threads} CPU${doc.cpus.threads === 1 ? '' : 's'}${doc.cpus.model ? ` (${doc.cpus.model})` : ''}, memory ${doc.memory.totalBytes !== undefined ? formatBytes(doc.memory.totalBytes) : 'unknown'}`,
    `disks: ${doc.disks.map((d) => `${d.name} ${formatBytes(d.sizeBytes)}${d.serial ? ` ${d.serial}` : ''}`).join(', ') || 'none'}`,
    `NICs: ${doc.nics.map((n) => `${n.name} ${n.mac ?? '-'} ${n.state}`).join(', ') || 'none'}`,
    `TPM: ${doc.tpm.present ? `${doc.tpm.version ?? '?'}${doc.tpm.manufacturer ? ` ${doc.tpm.manufacturer}` : ''}${doc.tpm.endorsementKey ? `, EK sha256 ${doc.tpm.endorsementKey.sha256.slice(0, 16)}…` : ''}` : 'none'}; ` +
      `firmware ${doc.firmware.mode}${doc.firmware.version ? ` ${doc.firmware.version}` : ''}; Secure Boot ${!doc.secureBoot.supported ? 'not available' : doc.secureBoot.enabled ? 'on' : doc.secureBoot.setupMode ? 'off (setup mode)' : 'off'}`,
  ];
  if (doc.errors.length > 0) lines.push(`${doc.errors.length} field${doc.errors.length === 1 ? '' : 's'} could not be read (see the warnings)`);
  return lines;
}
