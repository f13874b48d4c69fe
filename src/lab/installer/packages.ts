// The Debian packages the installer is made of: the tools the agent's tasks call, and the
// shared libraries they depend on. The library closure follows only library packages
// (`lib*`, and zlib1g, the one library not named so):
// a tool's other dependencies (debconf, adduser, udev...) belong to an installed system,
// not to an initramfs. Whatever a binary really needs is checked afterwards from its ELF
// headers (libraries.ts), so a library this rule misses fails the build by name.
import { aptCache, DebianPackageError } from '../debian-packages.ts';

/** The tools, with the reason each is here. */
export const INSTALLER_PACKAGES: Record<string, string> = {
  'busybox-static': 'udhcpc, findfs, cttyhack and the small tools',
  // busybox-static's own sh runs its applets before PATH (a rescue shell): /bin/sh must be
  // a shell that runs the util-linux tools when scripts call them, as on Debian.
  dash: '/bin/sh for /init and the customer\'s scripts',
  'util-linux': 'lsblk, blkdiscard, blockdev, wipefs, blkid (the image engine and the tasks)',
  fdisk: 'sfdisk',
  mount: 'losetup, mount with libmount',
  e2fsprogs: 'mke2fs, e2fsck, resize2fs',
  dosfstools: 'mkfs.vfat, fsck.vfat',
  'cryptsetup-bin': 'cryptsetup (disk encryption)',
  'tpm2-tools': 'tpm2_* (TPM enrollment)',
  'libtss2-tcti-device0': 'the TPM transport tpm2-tools loads with dlopen (not a DT_NEEDED library)',
  // systemd's tools below link it (RUNPATH /usr/lib/x86_64-linux-gnu/systemd); it loads the TSS2 libraries with dlopen.
  'libsystemd-shared': 'the library of systemd-cryptenroll, systemd-cryptsetup and the cryptsetup token plugin',
  // systemd 252 loads these with dlopen for TPM2 work; tpm2-tools depends on them too, named here so that they stay.
  'libtss2-esys-3.0.2-0': 'libtss2-esys (dlopen by libsystemd-shared)', 'libtss2-mu0': 'libtss2-mu (dlopen by libsystemd-shared)', 'libtss2-rc0': 'libtss2-rc (dlopen by libsystemd-shared)',
  dmidecode: 'inventory',
  efibootmgr: 'boot entries of the target',
  efitools: 'efi-updatevar and signature lists (Secure Boot enrollment)',
  gzip: 'gzip', isal: 'igzip, the faster gzip decompressor the image engine prefers', 'xz-utils': 'xz images', '7zip': '7zz, which decompresses a multi-block .xz image faster than xz (xz-lanes.ts)', zstd: 'zstd images', lz4: 'lz4 images', bzip2: 'bzip2 images', lbzip2: 'parallel bzip2 (preferred by the image engine)',
  kmod: 'modprobe (also for the kernel\'s own module requests, e.g. crypto for dm-crypt)',
  'ca-certificates': 'CA bundle for https servers and images',
};

/**
 * Packages of which only some files are taken (paths as in the package): the rest of
 * them belongs to an installed system, and every MB of the initramfs costs boot time under
 * emulation. The library dependencies of those not also in INSTALLER_PACKAGES are not
 * followed: list those there (the ELF check names one that is missing).
 */
export const INSTALLER_PACKAGE_FILES: Record<string, { files: string[]; why: string }> = {
  // The binary alone (3.8 MB, libc and libcrypt): the script it runs uses no module.
  'perl-base': {
    files: ['usr/bin/perl'],
    why: 'starts the decompressors with room on their output socket (src/image/decompress/output-buffer.ts)',
  },
  // In INSTALLER_PACKAGES too, for its library dependencies; its other library (libsystemd-core, 2 MB) is PID 1's.
  'libsystemd-shared': {
    files: ['usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so'],
    why: 'the library of systemd\'s tools below (their RUNPATH is /usr/lib/x86_64-linux-gnu/systemd)',
  },
  systemd: {
    files: [
      'usr/bin/systemd-cryptenroll',
      'lib/systemd/systemd-cryptsetup',
      // libcryptsetup looks for token plugins in /lib/x86_64-linux-gnu/cryptsetup: `cryptsetup open --token-only` with a TPM2 keyslot
      'usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so',
    ],
    why: 'TPM2 keyslots and recovery keys for LUKS2 (encrypt-disk); the token plugin opens a volume with the TPM alone',
  },
};

/**
 * Libraries that programs load with dlopen, which their ELF headers do not name: the build
 * checks they are there too. Program path in the initramfs -> sonames (seen with LD_DEBUG=libs
 * in a lab guest; docs/notes/luks-in-the-installer.md).
 */
export const DLOPENED_LIBRARIES: Record<string, string[]> = {
  'usr/bin/systemd-cryptenroll': ['libtss2-esys.so.0', 'libtss2-rc.so.0', 'libtss2-mu.so.0', 'libtss2-tcti-device.so.0'],
  'usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so': ['libtss2-esys.so.0', 'libtss2-rc.so.0', 'libtss2-mu.so.0', 'libtss2-tcti-device.so.0'],
  'usr/bin/tpm2_getcap': ['libtss2-tcti-device.so.0'],
};

/** Packages of shared libraries: the dependencies worth following into an initramfs. */
export const isLibraryPackage = (name: string): boolean => /^(lib|zlib1g$)/.test(name);

/**
 * `apt-cache depends` output -> each package's direct dependencies. Of alternatives
 * (`|Depends: a` then `Depends: b`) the first is taken; virtual packages (`<name>`) are
 * skipped: the ELF check names a library still missing.
 */
export function parseAptDepends(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  let skipNext = false;
  for (const line of text.split('\n')) {
    if (/^\S/.test(line)) {
      current = [];
      out.set(line.trim(), current);
      skipNext = false;
      continue;
    }
    const m = /^ {2}(\|?)(?:Pre)?Depends: (\S+)/.exec(line);
    if (!m || !current) continue;
    const alternative = skipNext;
    skipNext = m[1] === '|';
    if (alternative || m[2]!.startsWith('<')) continue;
    current.push(m[2]!.replace(/:any$/, ''));
  }
  return out;
}

/** The packages `roots` need: themselves and, transitively, their library dependencies. Sorted. */
export async function libraryClosure(roots: readonly string[], depends: (names: string[]) => Promise<Map<string, string[]>>): Promise<string[]> {
  const seen = new Set<string>(roots);
  let frontier = [...roots];
  while (frontier.length > 0) {
    const deps = await depends(frontier);
    frontier = [];
    for (const list of deps.values())
      for (const d of list)
        if (isLibraryPackage(d) && !seen.has(d)) {
          seen.add(d);
          frontier.push(d);
        }
  }
  return [...seen].sort();
}

/** `apt-cache depends` for a batch of packages; an unknown name is an error that says what to do. */
export async function aptDepends(names: string[]): Promise<Map<string, string[]>> {
  try {
    const stdout = await aptCache(['depends', '--no-recommends', '--no-suggests', '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...names]);
    return parseAptDepends(stdout);
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    const detail = (err.stderr ?? err.message).trim().split('\n').pop();
    throw new DebianPackageError(`apt-cache does not know a package the installer needs (${detail}): run "apt-get update" (as root) and check the list in src/lab/installer/packages.ts`);
  }
}
