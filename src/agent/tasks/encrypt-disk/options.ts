// The encrypt-disk task's options: one schema, read by the task and by deploy-image
// (which writes the partitions through dm-crypt when this task follows it).
import { Type, type Static } from '@sinclair/typebox';

const PartitionObject = Type.Object(
  {
    partition: Type.String({ minLength: 1, description: 'GPT partition label, PARTUUID=<uuid>, or partition number' }),
    mountpoint: Type.Optional(Type.String({ pattern: '^/', description: "where the target mounts the opened volume (written to the target's fstab)" })),
    mode: Type.Union([Type.Literal('reencrypt'), Type.Literal('format'), Type.Literal('noencrypt')], {
      description: 'reencrypt: keep the data; format: a new empty filesystem; noencrypt: leave it alone',
    }),
    expand: Type.Optional(Type.Boolean({ description: "grow this (last) partition and its filesystem to the disk's end, after encryption" })),
  },
  { additionalProperties: false },
);

export const EncryptDiskOptions = Type.Object(
  {
    partitions: Type.Array(Type.Union([Type.String({ minLength: 1 }), PartitionObject]), {
      minItems: 1,
      description: "which partitions, as isar-cip-core's CRYPT_PARTITIONS words (`<partition>:<mountpoint>:<mode>[:expand]`, e.g. data:/data:reencrypt) or objects",
    }),
    method: Type.Optional(
      Type.Union([Type.Literal('auto'), Type.Literal('write-through'), Type.Literal('in-place')], {
        default: 'auto',
        description: 'write-through: deploy-image (earlier in the plan) writes the data through dm-crypt; in-place: encrypt what is on the disk (cryptsetup reencrypt); auto: write-through when deploy-image precedes this task',
      }),
    ),
    target: Type.Optional(Type.String({ minLength: 1, description: "the disk; default: the disk deploy-image wrote (BOOTLINE_TARGET)" })),
    pcrs: Type.Optional(
      Type.Array(Type.Integer({ minimum: 0, maximum: 23 }), {
        default: [],
        description: 'PCRs the TPM2 keyslot is bound to; default none (this TPM only). PCR 7 is refused while Secure Boot is in Setup Mode or enrolled in the same run (docs/encryption.md)',
      }),
    ),
    tpmDevice: Type.Optional(Type.String({ minLength: 1, default: 'auto', description: 'TPM2 device for systemd-cryptenroll (auto: the only one)' })),
    recoveryKey: Type.Optional(
      Type.Union([Type.Literal('escrow'), Type.Literal('none')], {
        default: 'escrow',
        description: "escrow: a recovery key is added and sent to the line's server (needs one) before the temporary key is wiped; none: the TPM is the only key",
      }),
    ),
    encryptionOptional: Type.Optional(Type.Boolean({ default: false, description: 'without a TPM: log it and leave the disk unencrypted instead of failing' })),
    targetRoot: Type.Optional(
      Type.String({ minLength: 1, description: "the partition holding the target's root filesystem, where /etc/crypttab and /etc/fstab are written; default: the one labelled root, if any; none: do not write them" }),
    ),
    mkfs: Type.Optional(Type.String({ minLength: 1, default: 'mkfs.ext4 -q', description: 'command that makes the filesystem of a partition in mode format (the device is appended)' })),
  },
  { additionalProperties: false },
);

export type EncryptDiskOptionsT = Static<typeof EncryptDiskOptions>;
