#!/bin/sh
# Read back the partition table that deploy-image just wrote to $BOOTLINE_TARGET.
set -e
echo "Partitions on $BOOTLINE_TARGET:"
sfdisk --list "$BOOTLINE_TARGET" 2>/dev/null | sed -n "/^Device/,\$p"
