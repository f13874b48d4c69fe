// The inventory document: what the collect-inventory task gathers about a device, in one
// JSON document with one schema. The server stores it on the device record, the USB case
// writes it beside Isar's device-info-collector output, and docs/inventory.schema.json is
// this schema as JSON (written by scripts/inventory-schema.mjs, checked by a test).
// Every field a collector could not read is absent, and the reason is in `errors`.
import { Type, type Static } from '@sinclair/typebox';

export const INVENTORY_FORMAT = 'bootline-inventory/1';

const Str = (description?: string) => Type.Optional(Type.String(description ? { description } : {}));
const Int = (description: string) => Type.Optional(Type.Integer({ minimum: 0, description }));

export const DmiSystem = Type.Object(
  {
    vendor: Str(),
    product: Str(),
    version: Str(),
    serial: Str('as the firmware says, placeholders included'),
    uuid: Str('SMBIOS system UUID, lower-case'),
    sku: Str(),
    family: Str(),
  },
  { additionalProperties: false },
);

export const DmiBoard = Type.Object(
  { vendor: Str(), product: Str(), version: Str(), serial: Str(), assetTag: Str() },
  { additionalProperties: false },
);

export const DmiChassis = Type.Object(
  { vendor: Str(), type: Str('SMBIOS chassis type number'), version: Str(), serial: Str(), assetTag: Str() },
  { additionalProperties: false },
);

export const Firmware = Type.Object(
  {
    mode: Type.Union([Type.Literal('uefi'), Type.Literal('bios')], { description: 'uefi when the kernel was started by UEFI firmware' }),
    vendor: Str(),
    version: Str(),
    date: Str('as SMBIOS gives it (MM/DD/YYYY)'),
    release: Str('SMBIOS BIOS release, major.minor'),
  },
  { additionalProperties: false },
);

export const Cpus = Type.Object(
  {
    architecture: Type.String({ description: "node's process.arch: x64, arm64, ..." }),
    model: Str(),
    vendor: Str(),
    sockets: Type.Integer({ minimum: 0, description: 'distinct physical ids (1 when the kernel does not say)' }),
    cores: Type.Integer({ minimum: 0, description: 'physical cores, all sockets' }),
    threads: Type.Integer({ minimum: 0, description: 'logical processors' }),
    mhz: Type.Optional(Type.Number({ minimum: 0, description: 'current clock of the first processor' })),
  },
  { additionalProperties: false },
);

export const MemoryModule = Type.Object(
  {
    locator: Type.String(),
    sizeBytes: Type.Integer({ minimum: 0 }),
    type: Str(),
    speed: Str(),
    manufacturer: Str(),
    serial: Str(),
    partNumber: Str(),
  },
  { additionalProperties: false },
);

export const Memory = Type.Object(
  {
    totalBytes: Int('MemTotal: what the kernel can use'),
    modules: Type.Optional(Type.Array(MemoryModule, { description: 'populated slots, from dmidecode -t 17' })),
  },
  { additionalProperties: false },
);

export const Disk = Type.Object(
  {
    name: Type.String({ description: 'kernel name: sda, nvme0n1, vda, mmcblk0' }),
    sizeBytes: Type.Integer({ minimum: 0 }),
    model: Str(),
    vendor: Str(),
    serial: Str(),
    wwn: Str('World Wide Name / NVMe EUI or NGUID as the kernel shows it'),
    transport: Str('nvme, ata, usb, virtio, mmc, scsi'),
    rotational: Type.Optional(Type.Boolean()),
    removable: Type.Boolean(),
  },
  { additionalProperties: false },
);

export const Nic = Type.Object(
  {
    name: Type.String(),
    mac: Str('the permanent address of a bonded NIC, else its address'),
    state: Type.String({ description: 'operstate: up, down, dormant, unknown, ...' }),
    carrier: Type.Optional(Type.Boolean({ description: 'link detected' })),
    speedMbps: Int('negotiated speed, when there is a link'),
    driver: Str(),
    bus: Str('the bus address of the device (PCI address for PCI NICs)'),
  },
  { additionalProperties: false },
);

export const PciDevice = Type.Object(
  {
    address: Type.String({ description: 'domain:bus:device.function' }),
    vendorId: Type.String({ description: '4 hex digits' }),
    deviceId: Type.String(),
    subsystemVendorId: Str(),
    subsystemDeviceId: Str(),
    class: Type.String({ description: '6 hex digits: class, subclass, programming interface' }),
    driver: Str(),
  },
  { additionalProperties: false },
);

export const UsbDevice = Type.Object(
  {
    path: Type.String({ description: 'sysfs name: bus-port.port' }),
    vendorId: Type.String(),
    productId: Type.String(),
    bus: Int('bus number'),
    device: Int('device number on the bus'),
    manufacturer: Str(),
    product: Str(),
    serial: Str(),
    speedMbps: Type.Optional(Type.Number({ minimum: 0 })),
  },
  { additionalProperties: false },
);

export const EndorsementKey = Type.Object(
  {
    algorithm: Type.String({ description: 'rsa or ecc' }),
    publicKeyPem: Type.String({ description: 'the public part of the EK, SubjectPublicKeyInfo PEM' }),
    sha256: Type.String({ description: 'sha256 of the DER SubjectPublicKeyInfo, hex' }),
  },
  { additionalProperties: false },
);

export const Tpm = Type.Object(
  {
    present: Type.Boolean(),
    device: Str('the character device, e.g. /dev/tpmrm0'),
    version: Str('1.2 or 2.0'),
    manufacturer: Str('vendor id as the TPM reports it: IFX, NTC, STM, INTC, IBM (swtpm)...'),
    firmwareVersion: Str(),
    endorsementKey: Type.Optional(EndorsementKey),
    ekCertificatePem: Str('the EK certificate the manufacturer stored in NV (RSA index 0x01c00002), when present'),
  },
  { additionalProperties: false },
);

export const SecureBoot = Type.Object(
  {
    supported: Type.Boolean({ description: 'UEFI variables readable (efivarfs)' }),
    enabled: Type.Optional(Type.Boolean({ description: 'the SecureBoot variable' })),
    setupMode: Type.Optional(Type.Boolean({ description: 'the SetupMode variable: no Platform Key enrolled' })),
  },
  { additionalProperties: false },
);

export const CommandOutput = Type.Object(
  {
    name: Type.String(),
    command: Type.Array(Type.String()),
    exitCode: Type.Union([Type.Integer(), Type.Null()], { description: 'null when it did not start or was killed' }),
    stdout: Type.String(),
    stderr: Type.String(),
  },
  { additionalProperties: false },
);

export const FieldError = Type.Object(
  {
    field: Type.String({ description: 'dotted path of the field that is missing or incomplete, e.g. tpm.endorsementKey' }),
    message: Type.String({ description: 'why, and what would fix it' }),
  },
  { additionalProperties: false },
);

export const InventoryDocument = Type.Object(
  {
    format: Type.Literal(INVENTORY_FORMAT),
    collectedAt: Type.String({ format: 'date-time' }),
    agentVersion: Str(),
    serial: Str('the serial the device is known by: system, else board, else chassis serial, placeholders skipped'),
    hostname: Str(),
    system: DmiSystem,
    board: DmiBoard,
    chassis: DmiChassis,
    firmware: Firmware,
    cpus: Cpus,
    memory: Memory,
    disks: Type.Array(Disk),
    nics: Type.Array(Nic),
    pci: Type.Array(PciDevice),
    usb: Type.Array(UsbDevice),
    tpm: Tpm,
    secureBoot: SecureBoot,
    commands: Type.Array(CommandOutput),
    errors: Type.Array(FieldError),
  },
  { additionalProperties: false, title: 'bootline device inventory' },
);

export type InventoryDocument = Static<typeof InventoryDocument>;
export type DiskInfo = Static<typeof Disk>;
export type NicInfo = Static<typeof Nic>;
export type PciInfo = Static<typeof PciDevice>;
export type UsbInfo = Static<typeof UsbDevice>;
export type TpmInfo = Static<typeof Tpm>;
export type CpuInfo = Static<typeof Cpus>;
export type MemoryModuleInfo = Static<typeof MemoryModule>;
export type FieldErrorInfo = Static<typeof FieldError>;
export type CommandOutputInfo = Static<typeof CommandOutput>;
