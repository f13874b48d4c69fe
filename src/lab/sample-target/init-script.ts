// /init of the sample target's initramfs: what "the product" does on its first boot in the
// lab. It proves the disk the installer wrote boots, and says so on the serial console in a
// line a test or the demo can wait for, then powers the device off.

/** The line the sample target prints once it has booted from its disk; release and serial follow. */
export const TARGET_MARKER = 'BOOTLINE-SAMPLE-TARGET-BOOTED';

export function targetInitScript(release: string): string {
  return `#!/bin/sh
# bootline sample target: first boot check (PID 1, busybox sh).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null || echo unknown)
# Through the kernel log, not a write to /dev/console: printk puts the line out on the serial
# console in order, before the kernel's own power-off message, while a tty write is sent
# asynchronously and poweroff could cut it off. Level 2 (critical) still shows under "quiet".
echo "<2>${TARGET_MARKER} release=${release} serial=$serial" > /dev/kmsg
sync
poweroff -f
# Not reached; PID 1 must not exit.
while :; do sleep 3600; done
`;
}
