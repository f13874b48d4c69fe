// Which partitions to encrypt, and how: isar-cip-core's CRYPT_PARTITIONS entries
// (`<partition>:<mountpoint>:<mode>[:expand]`) or the same as objects, resolved
// against a partition table. Pure.

export type CryptMode = 'reencrypt' | 'format' | 'noencrypt';

export interface CryptPartitionSpec {
  /** A GPT partition label, `PARTUUID=<uuid>`, or a partition number. */
  partition: string;
  /** Where the target mounts the opened volume (for its crypttab and fstab); optional. */
  mountpoint?: string;
  /** reencrypt: keep the data; format: a new empty filesystem; noencrypt: leave it alone. */
  mode: CryptMode;
  /** Grow this (last) partition and its filesystem to the end of the disk. */
  expand?: boolean;
}

export interface PartitionLike {
  number: number;
  uuid: string;
  name: string;
}

export class PartitionSpecError extends Error {}

const MODES: readonly CryptMode[] = ['reencrypt', 'format', 'noencrypt'];

/** One CRYPT_PARTITIONS word, e.g. `data:/data:reencrypt:expand` (`where` names it in errors). */
export function parseCryptPartition(word: string, where: string): CryptPartitionSpec {
  const parts = word.split(':');
  if (parts.length < 3 || parts.length > 4) {
    throw new PartitionSpecError(`${where}: "${word}" is not <partition>:<mountpoint>:<mode>[:expand] (e.g. data:/data:reencrypt)`);
  }
  const [partition, mountpoint, mode, extra] = parts as [string, string, string, string | undefined];
  if (!partition) throw new PartitionSpecError(`${where}: "${word}" has no partition name before the first colon`);
  if (!(MODES as readonly string[]).includes(mode)) throw new PartitionSpecError(`${where}: "${word}": mode "${mode}" is not one of ${MODES.join(', ')}`);
  if (extra !== undefined && extra !== 'expand') throw new PartitionSpecError(`${where}: "${word}": the fourth field may only be "expand", not "${extra}"`);
  if (mountpoint && !mountpoint.startsWith('/')) throw new PartitionSpecError(`${where}: "${word}": the mountpoint "${mountpoint}" must be an absolute path (or empty)`);
  return { partition, ...(mountpoint ? { mountpoint } : {}), mode: mode as CryptMode, ...(extra ? { expand: true } : {}) };
}

/** How a spec's partition name matches a partition (number, PARTUUID= or label). */
export function matches(spec: string, p: PartitionLike): boolean {
  if (/^\d+$/.test(spec)) return Number(spec) === p.number;
  const uuid = /^PARTUUID=(.+)$/i.exec(spec)?.[1];
  if (uuid !== undefined) return uuid.toLowerCase() === p.uuid.toLowerCase();
  return spec === p.name;
}

const describe = (p: PartitionLike) => `${p.number}${p.name ? ` "${p.name}"` : ''}`;

/**
 * Each spec's partition. Refuses a name that matches none or several, a partition
 * named twice, and `expand` on any but the last partition, listing what exists.
 */
export function resolvePartitions<P extends PartitionLike & { lastLba: bigint }>(specs: CryptPartitionSpec[], parts: P[]): { spec: CryptPartitionSpec; partition: P }[] {
  const seen = new Map<number, string>();
  const last = parts.reduce<P | undefined>((a, p) => (!a || p.lastLba > a.lastLba ? p : a), undefined);
  return specs.map((spec) => {
    const found = parts.filter((p) => matches(spec.partition, p));
    const list = parts.map(describe).join(', ') || 'none';
    if (found.length === 0) throw new PartitionSpecError(`partition "${spec.partition}" is not in the image's partition table (partitions: ${list}); name one by GPT label, PARTUUID=<uuid> or number`);
    if (found.length > 1) throw new PartitionSpecError(`partition "${spec.partition}" names ${found.length} partitions (${found.map(describe).join(', ')}); name it by PARTUUID=<uuid> or number`);
    const p = found[0]!;
    const twice = seen.get(p.number);
    if (twice !== undefined) throw new PartitionSpecError(`partition ${describe(p)} is named twice ("${twice}" and "${spec.partition}")`);
    seen.set(p.number, spec.partition);
    if (spec.expand && p !== last) throw new PartitionSpecError(`partition ${describe(p)} cannot expand: only the last partition on the disk (${last ? describe(last) : 'none'}) can grow to the disk's end`);
    return { spec, partition: p };
  });
}
