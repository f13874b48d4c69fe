// Which kernel modules the installer carries: the drivers and filesystems a device needs
// that Debian's kernel does not build in, with every module they depend on (from the
// kernel's modules.dep). Pure: the texts are read by the caller.

/**
 * Loaded at boot (by /init, with modprobe). Virtual devices (virtio) and common real
 * hardware: disks (NVMe, AHCI, USB sticks), network cards, USB keyboards for the console.
 */
export const DEFAULT_MODULES = [
  // buses and disks
  'virtio_pci', 'virtio_blk', 'virtio_scsi', 'nvme', 'ahci', 'sd_mod', 'usb_storage', 'uas',
  'xhci_pci', 'ehci_pci', 'usbhid', 'hid_generic',
  // network
  'virtio_net', 'e1000', 'e1000e',
  // filesystems and what the image engine and the encryption task use
  'ext4', 'vfat', 'nls_cp437', 'nls_ascii', 'nls_iso8859_1', 'nls_utf8', 'squashfs', 'loop',
  // crc32c: ext4's metadata checksums; the generic one where the CPU has no SSE4.2 (QEMU's TCG)
  // dm-crypt's default aes-xts-plain64: aes and sha256 are built in, xts and the ecb it wraps
  // are modules; AF_ALG (algif_*) is how cryptsetup checks ciphers and encrypts keyslots
  'dm_mod', 'dm_crypt', 'xts', 'ecb', 'aesni_intel', 'algif_skcipher', 'algif_hash', 'crc32c_intel', 'crc32c_generic',
  'efivarfs', '9p', '9pnet_virtio',
  'tpm_tis', 'tpm_crb',
] as const;

/** The kernel's own name of a module: "-" and "_" are the same to it. */
export const moduleName = (nameOrPath: string): string =>
  nameOrPath.replace(/^.*\//, '').replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');

/** modules.dep: module path -> the paths it depends on (all of them, already transitive). */
export function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    deps.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim().split(/\s+/).filter(Boolean));
  }
  return deps;
}

/** modules.builtin: one path per line; the names of modules compiled into the kernel. */
export const parseBuiltin = (text: string): Set<string> =>
  new Set(text.split('\n').filter((l) => l.trim()).map(moduleName));

export interface ModuleSelection {
  /** Module files (paths relative to /lib/modules/<release>), sorted. */
  files: string[];
  /** Requested modules the kernel has built in: nothing to ship. */
  builtin: string[];
  /** Requested modules that are neither built in nor in modules.dep. */
  missing: string[];
}

/** The files that `wanted` modules need, dependencies included (modules.dep lists them transitively). */
export function selectModules(wanted: readonly string[], modulesDep: Map<string, string[]>, builtin: Set<string>): ModuleSelection {
  const byName = new Map<string, string>();
  for (const path of modulesDep.keys()) byName.set(moduleName(path), path);
  const files = new Set<string>();
  const out: ModuleSelection = { files: [], builtin: [], missing: [] };
  for (const w of new Set(wanted.map(moduleName))) {
    const path = byName.get(w);
    if (path) {
      files.add(path);
      // Transitive already, but following them again costs nothing and survives a hand-made file.
      const todo = [...(modulesDep.get(path) ?? [])];
      while (todo.length > 0) {
        const d = todo.pop()!;
        if (files.has(d)) continue;
        files.add(d);
        todo.push(...(modulesDep.get(d) ?? []));
      }
    } else if (builtin.has(w)) out.builtin.push(w);
    else out.missing.push(w);
  }
  out.files = [...files].sort();
  return out;
}
