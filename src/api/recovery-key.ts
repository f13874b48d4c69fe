// Recovery-key escrow, defined once: what the agent's encrypt-disk task sends after it has
// enrolled a recovery key into a LUKS2 volume, and what the management API shows of it.
// The server's routes validate with these schemas; the agent derives its types from them.
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

/** systemd's modhex alphabet: the recovery key survives a keyboard layout that swaps letters. */
export const MODHEX = 'cbdefghijklnrtuv';
/** `systemd-cryptenroll --recovery-key`: 8 groups of 8 modhex characters joined by `-` (256 bits). */
export const RECOVERY_KEY_PATTERN = `^[${MODHEX}]{8}(-[${MODHEX}]{8}){7}$`;
/** A LUKS2 UUID as `cryptsetup luksUUID` prints it. */
export const VOLUME_UUID_PATTERN = '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

export const VolumeUuid = Type.String({ pattern: VOLUME_UUID_PATTERN, description: 'the LUKS2 UUID, lower case (cryptsetup luksUUID)' });
export const RecoveryKey = Type.String({
  pattern: RECOVERY_KEY_PATTERN,
  description: 'systemd recovery key: 8 groups of 8 modhex characters (cbdefghijklnrtuv) joined by "-"',
});

export const RecoveryKeyEscrow = Type.Object(
  {
    volumeUuid: VolumeUuid,
    partition: Type.String({ minLength: 1, maxLength: 200, description: 'the partition, e.g. /dev/vda3, or its GPT label' }),
    label: Type.Optional(Type.String({ maxLength: 200, description: 'the LUKS2 label' })),
    keyslot: Type.Integer({ minimum: 0, maximum: 31, description: 'the LUKS2 keyslot holding the recovery key' }),
    recoveryKey: RecoveryKey,
    pcrs: Type.Optional(Type.Array(Type.Integer({ minimum: 0, maximum: 23 }), { maxItems: 24, uniqueItems: true, description: 'PCRs the TPM2 keyslot is bound to' })),
    runId: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'the run that encrypted the volume (default: the device’s current run)' })),
  },
  { additionalProperties: false },
);
export type RecoveryKeyEscrow = Static<typeof RecoveryKeyEscrow>;

const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

/** An escrowed volume as the management API lists it: never the key. */
export const EscrowedVolume = Type.Object({
  volumeUuid: Type.String(),
  partition: Type.String(),
  label: Nullable(Type.String()),
  keyslot: Type.Integer(),
  pcrs: Type.Union([Type.Array(Type.Integer()), Type.Null()]),
  runId: Nullable(Type.String()),
  createdAt: Type.String({ description: 'ISO 8601: when the server received the key' }),
  /** The last reveal (API, dashboard or report export) and who made it; null until the first. */
  revealedAt: Nullable(Type.String()),
  revealedBy: Nullable(Type.String()),
  revealCount: Type.Integer(),
});
export type EscrowedVolume = Static<typeof EscrowedVolume>;

export const RevealedRecoveryKey = Type.Object({ recoveryKey: Type.String() });
export type RevealedRecoveryKey = Static<typeof RevealedRecoveryKey>;

const FIELD_HELP: Record<string, string> = {
  volumeUuid: 'volumeUuid must be the LUKS2 UUID in lower case, as `cryptsetup luksUUID` prints it (e.g. 0f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11)',
  recoveryKey:
    'recoveryKey is not a systemd recovery key: expected 8 groups of 8 modhex characters (cbdefghijklnrtuv) joined by "-", as `systemd-cryptenroll --recovery-key` prints it',
  partition: 'partition must be a device path or GPT label of 1 to 200 characters',
  label: 'label must be at most 200 characters',
  keyslot: 'keyslot must be a LUKS2 keyslot number, an integer from 0 to 31',
  pcrs: 'pcrs must be a list of distinct PCR numbers from 0 to 23',
  runId: 'runId must be a run id of 1 to 200 characters',
};

/**
 * What is wrong with an escrow body, one sentence per field, in words an operator can act
 * on; empty when it is valid. Never quotes the key itself (it would end up in logs).
 */
export function recoveryKeyEscrowProblems(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return ['the body must be a JSON object {volumeUuid, partition, keyslot, recoveryKey, …}'];
  const out = new Set<string>();
  for (const e of Value.Errors(RecoveryKeyEscrow, body)) {
    const field = e.path.split('/')[1] ?? '';
    if (!(field in FIELD_HELP)) out.add(`unknown field ${field || '(top level)'}: allowed are ${Object.keys(RecoveryKeyEscrow.properties).join(', ')}`);
    else if (!(field in body)) out.add(`${field} is missing`);
    else out.add(FIELD_HELP[field]!);
  }
  return [...out];
}
