#!/usr/bin/env bash
# The demo: sets this machine up (Debian packages, npm packages, the bundle), then runs
# `bootline lab demo`: builds the installer and a sample product image from Debian packages,
# starts a line server, network-boots two virtual devices (QEMU, UEFI, iPXE, TPM) that get
# bootstrapped end to end, reboots them into their new disks and prints a summary.
# Exits non-zero if any device failed. Extra arguments go to `bootline lab demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/bootline.mjs lab demo "$@"
