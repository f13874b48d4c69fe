#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) for bootline: the Debian packages the
# agent, its tests and the demo use, then the npm packages (which also builds the
# bundle). Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Packages: util-linux/mount (losetup, script, blkdiscard, blockdev), fdisk (sfdisk),
# e2fsprogs, dosfstools and mtools build demo/test disk images; procps for pkill;
# the decompressors the image engine runs (gzip, pigz, isal's igzip, xz-utils, 7zip's 7zz for
# multi-block .xz, zstd, bzip2, lbzip2, lz4);
# bmap-tools is the reference bmaptool the tests and the benchmark compare with;
# openssl makes test certificates; make and g++ build the SEEK_DATA addon; gpgv checks
# GPG-signed bmaps (gnupg makes the test keys). The server: postgresql is the second
# database the tests run it on (they start their own instance), curl is the real TFTP and
# HTTP client of its tests, ipxe provides the iPXE binaries it serves over TFTP (dnsmasq
# checks the proxy-DHCP config it prints). The lab: QEMU, UEFI firmware (OVMF), iPXE option
# ROMs, a software TPM, and cpio/busybox to pack the installer initramfs; kmod for depmod,
# which indexes the installer's kernel modules (Debian's kernel package ships no modules.dep);
# binutils' strip makes the installer's copy of node 13 MB smaller (optional).
DEB_PACKAGES=(util-linux mount bsdutils coreutils procps fdisk e2fsprogs dosfstools mtools ca-certificates
  gzip pigz isal xz-utils 7zip zstd bzip2 lbzip2 lz4 bmap-tools openssl make g++ python3 gpgv gnupg
  postgresql curl ipxe dnsmasq
  qemu-system-x86 ovmf ipxe-qemu swtpm swtpm-tools cpio busybox-static kmod binutils
  # efitools: the reference (cert-to-efi-sig-list, sign-efi-sig-list) the secureboot tests compare with
  efitools
  # sbsigntool: sbsign/sbverify, Secure Boot signing of EFI binaries (the signed installer's UKI; objcopy, in binutils, assembles it)
  sbsigntool
  # collect-inventory's tests: dmidecode and tpm2-tools are the tools it calls (against swtpm)
  dmidecode
  tpm2-tools
  # package:deb's test: a Debian 13 root to install the .deb into, and lintian to check it
  mmdebstrap
  lintian
  # encrypt-disk's host tests: LUKS2 headers on files (no device-mapper needed for format, keyslots, tokens)
  cryptsetup-bin
  # the dashboard's browser tests and benchmark drive Debian's Chromium with playwright-core
  chromium
  # the dashboard's Firefox test drives Debian's Firefox ESR over WebDriver BiDi (test/web/firefox.ts)
  firefox-esr
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these Debian packages are missing: ${missing[*]} — run as root, or install them with apt-get" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "setup: node is not installed; bootline needs Node.js >= 20 (Debian 13: apt-get install nodejs npm)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "setup: node $(node --version) is too old; bootline needs Node.js >= 20" >&2
  exit 1
fi

# npm ci installs exactly the lock file and runs `prepare`, which builds dist/bootline.mjs.
npm ci --no-audit --no-fund --loglevel=error
