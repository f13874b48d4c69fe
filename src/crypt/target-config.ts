// What the target system needs to find and unlock its volumes: /etc/crypttab lines
// (systemd-cryptsetup unlocks them with the TPM at boot) and /etc/fstab entries that
// name the opened volume instead of the raw partition. Pure: text in, text out.

export interface VolumeRef {
  name: string;
  luksUuid: string;
  partUuid: string;
  label: string;
  mountpoint?: string;
}

/** crypttab with one line per volume (replacing any line of the same name). */
export function crypttabWith(existing: string, volumes: VolumeRef[]): string {
  const names = new Set(volumes.map((v) => v.name));
  const kept = existing.split('\n').filter((l) => {
    const name = l.trim().split(/\s+/)[0];
    return !(name && !name.startsWith('#') && names.has(name));
  });
  while (kept.length > 0 && kept.at(-1) === '') kept.pop();
  const lines = volumes.map((v) => `${v.name} UUID=${v.luksUuid} none luks,discard,tpm2-device=auto`);
  return [...kept, ...(kept.length === 0 ? ['# <name> <device> <key file> <options>'] : []), ...lines].join('\n') + '\n';
}

/** The ways an fstab line can name a partition that is now a LUKS container. */
function namesPartition(spec: string, v: VolumeRef): boolean {
  const s = spec.toLowerCase();
  const uuid = v.partUuid.toLowerCase();
  if (s === `partuuid=${uuid}` || s === `/dev/disk/by-partuuid/${uuid}`) return true;
  return v.label !== '' && (spec === `PARTLABEL=${v.label}` || spec === `/dev/disk/by-partlabel/${v.label}`);
}

/**
 * fstab with entries for the raw partitions pointed at /dev/mapper/<name> (UUID= and
 * LABEL= entries still find the filesystem inside the volume), and an entry added for
 * a volume whose mountpoint has none.
 */
export function fstabWith(existing: string, volumes: VolumeRef[]): string {
  const lines = existing.split('\n');
  while (lines.length > 0 && lines.at(-1) === '') lines.pop();
  const mounted = new Set<string>();
  const out = lines.map((l) => {
    const f = l.trim().split(/\s+/);
    if (!f[0] || f[0].startsWith('#') || f.length < 2) return l;
    mounted.add(f[1]!);
    const v = volumes.find((x) => namesPartition(f[0]!, x));
    return v ? l.replace(f[0], `/dev/mapper/${v.name}`) : l;
  });
  for (const v of volumes) {
    if (v.mountpoint && !mounted.has(v.mountpoint)) out.push(`/dev/mapper/${v.name}\t${v.mountpoint}\tauto\tdefaults,nofail\t0\t2`);
  }
  return out.join('\n') + '\n';
}
