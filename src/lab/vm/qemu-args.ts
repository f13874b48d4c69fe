// QEMU's command line for one virtual device, from a typed spec: pure, so that every
// flag is asserted by unit tests and nothing here touches the host.
//
// Boot order is given with bootindex (OVMF turns it into its BootOrder through fw_cfg):
// a USB stick first when one is given, then the network (iPXE ROM on the virtio NIC),
// then the virtio disk. When the server's script says `exit`, iPXE returns to the
// firmware, which tries the next entry. OVMF counts its own PXE and HTTP boot entries for
// the same NIC as part of the network's place in that order, and would try them all
// (HTTP boot waits for a timeout) before the disk; the fw_cfg knobs below switch its own
// network stack off, so the next entry after iPXE is the disk. iPXE has its own stack.

export type Accel = 'kvm' | 'tcg';
export type TpmModel = 'tpm-crb' | 'tpm-tis';

export interface QemuDeviceSpec {
  /** QEMU's -name (also the guest's process title). */
  name: string;
  accel: Accel;
  /**
   * TCG's buffer of translated code (QEMU's tb-size; 1 GiB by default since QEMU 5.0). A reset
   * keeps what it holds; after a long first boot, the encryption lab's boot 2 took 86-99 s
   * from the kernel's first console line to /init, and 9-12 s with 128 MiB (2026-12-01).
   * Probably the kernel writing over pages that still carried translated code: not proven.
   */
  tcgCodeBufferMiB?: number;
  memoryMiB: number;
  cpus: number;
  firmware: { code: string; vars: string; secureBoot: boolean };
  /** Raw disk image (a sparse file). */
  disk: string;
  /** Raw installer images attached as read-only USB sticks, booted first, in this order. */
  usb?: string | string[];
  net: { mac: string; tftpDir: string; bootfile: string; romfile: string };
  /** swtpm's control socket; no TPM without it. */
  tpm?: { socket: string; model: TpmModel };
  smbios: { serial: string; uuid: string; manufacturer: string; product: string };
  serialLog: string;
  qmpSocket: string;
}

/** QEMU's option values are comma-separated: a comma in a value is written twice. */
export function qemuValue(v: string): string {
  return v.replace(/,/g, ',,');
}

/** OVMF's own network boot (PXE, HTTP boot, IPv4 and IPv6 stacks), off: iPXE does it. */
export const OVMF_NETWORK_OFF = ['IPv4PXESupport', 'IPv6PXESupport', 'IPv4Support', 'IPv6Support'];

export function qemuArgs(s: QemuDeviceSpec): string[] {
  const q = qemuValue;
  // -machine accel= and -accel cannot be mixed: the code buffer's size needs -accel.
  const tbSize = s.accel === 'tcg' ? s.tcgCodeBufferMiB : undefined;
  const args: string[] = [
    '-name', `${q(s.name)},process=${q(s.name)}`,
    '-machine', `q35${tbSize === undefined ? `,accel=${s.accel}` : ''}${s.firmware.secureBoot ? ',smm=on' : ''}`,
    ...(tbSize === undefined ? [] : ['-accel', `tcg,tb-size=${tbSize}`]),
    '-cpu', s.accel === 'kvm' ? 'host' : 'max',
    '-smp', String(s.cpus),
    '-m', String(s.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none',
  ];
  // Secure Boot firmware keeps its variables in SMM-only flash, or the OS could rewrite them.
  if (s.firmware.secureBoot) args.push('-global', 'driver=cfi.pflash01,property=secure,value=on');
  args.push(
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${q(s.firmware.code)}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${q(s.firmware.vars)}`,
  );
  let bootindex = 0;
  const sticks = s.usb === undefined ? [] : [s.usb].flat();
  if (sticks.length > 0) args.push('-device', 'qemu-xhci,id=xhci');
  sticks.forEach((stick, n) => {
    args.push(
      '-drive', `if=none,id=usb${n},format=raw,readonly=on,file=${q(stick)}`,
      '-device', `usb-storage,bus=xhci.0,drive=usb${n},bootindex=${bootindex++}`,
    );
  });
  for (const knob of OVMF_NETWORK_OFF) args.push('-fw_cfg', `name=opt/org.tianocore/${knob},string=no`);
  args.push(
    '-netdev', `user,id=net0,tftp=${q(s.net.tftpDir)},bootfile=${q(s.net.bootfile)}`,
    '-device', `virtio-net-pci,netdev=net0,mac=${s.net.mac},romfile=${q(s.net.romfile)},bootindex=${bootindex++}`,
    // discard=unmap keeps the sparse file sparse when the guest trims.
    '-drive', `if=none,id=disk0,format=raw,discard=unmap,file=${q(s.disk)}`,
    '-device', `virtio-blk-pci,drive=disk0,bootindex=${bootindex++}`,
  );
  if (s.tpm) {
    args.push(
      '-chardev', `socket,id=tpmchr0,path=${q(s.tpm.socket)}`,
      '-tpmdev', 'emulator,id=tpm0,chardev=tpmchr0',
      '-device', `${s.tpm.model},tpmdev=tpm0`,
    );
  }
  const sm = s.smbios;
  args.push(
    '-smbios', `type=1,manufacturer=${q(sm.manufacturer)},product=${q(sm.product)},serial=${q(sm.serial)},uuid=${sm.uuid}`,
    '-smbios', `type=2,manufacturer=${q(sm.manufacturer)},product=${q(sm.product)},serial=${q(sm.serial)}`,
    '-smbios', `type=3,manufacturer=${q(sm.manufacturer)},serial=${q(sm.serial)}`,
    '-chardev', `file,id=serial0,path=${q(s.serialLog)}`,
    '-serial', 'chardev:serial0',
    '-qmp', `unix:${q(s.qmpSocket)},server=on,wait=off`,
  );
  return args;
}
