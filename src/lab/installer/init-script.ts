// The installer's /init (PID 1, busybox sh) and the small scripts around it. Kept short:
// mount, load modules, DHCP, install data, agent, and what to do when the agent exits.
// Kernel parameters it reads are documented in docs/lab.md ("The installer").
import { AGENT_NODE_OPTIONS } from '../../agent/node-options.ts';

/** Where the installer keeps its own files. */
export const INIT_PATHS = {
  modules: 'etc/bootline/modules',
  udhcpcScript: 'usr/share/bootline/udhcpc.script',
  agent: 'usr/lib/bootline/bootline.mjs',
  wrapper: 'usr/bin/bootline',
  info: 'etc/bootline/installer.json',
} as const;

/**
 * /init. Its functions can be tried on a build host: with BOOTLINE_INIT_LIB=1 it only
 * defines them, and BOOTLINE_CMDLINE names a file to read instead of /proc/cmdline.
 */
export function initScript(): string {
  return `#!/bin/sh
# bootline installer init (PID 1): mounts the kernel's filesystems, loads the modules,
# brings up every ethernet interface with DHCP, mounts the install data (USB) at /install,
# then runs the agent. PID 1 must never exit (the kernel would panic): whatever happens,
# this script ends in a reboot, a power-off or a shell.
export PATH=/usr/sbin:/usr/bin HOME=/root TERM=\${TERM:-linux}

# The value of kernel parameter $1: "" when absent, "1" when given without "=". The last wins.
param() {
  v=
  set -f # parameters are words, not globs
  for p in $(cat "\${BOOTLINE_CMDLINE:-/proc/cmdline}"); do
    case "$p" in
      "$1") v=1 ;;
      "$1"=*) v=\${p#*=} ;;
    esac
  done
  set +f
  echo "$v"
}

# Messages carry the seconds since the kernel started, as the kernel's own do.
say() { echo "bootline-init: [$(cut -d' ' -f1 /proc/uptime 2>/dev/null)] $*"; }

mount_filesystems() {
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  mkdir -p /dev/pts /dev/shm
  mount -t devpts devpts /dev/pts
  mount -t tmpfs -o mode=0755 tmpfs /run
  mount -t tmpfs -o mode=1777 tmpfs /tmp
}

# One modprobe for all (each process start counts under emulation). Modules for hardware
# that is not there (aesni_intel on a CPU without AES-NI) refuse to load; the rest load.
load_modules() {
  modprobe -a $(cat /${INIT_PATHS.modules}) $(param bootline.modules | tr , ' ') ||
    say "some modules were not loaded (above); usually hardware this device does not have"
  if [ -d /sys/firmware/efi ]; then
    modprobe efivarfs && mount -t efivarfs efivarfs /sys/firmware/efi/efivars || say "efivarfs could not be mounted"
  fi
}

# DHCP on every ethernet interface at once; waits (bootline.dhcpTimeout, default 30 s)
# until one has a lease. udhcpc keeps running to renew it.
network_up() {
  [ "$(param bootline.net)" = off ] && { say "bootline.net=off: no network"; return; }
  n=0
  for dev in /sys/class/net/*; do
    [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] || continue # ARPHRD_ETHER (not lo)
    ip link set "\${dev##*/}" up
    udhcpc -f -i "\${dev##*/}" -s /${INIT_PATHS.udhcpcScript} -x hostname:"$(hostname)" >/dev/null 2>&1 &
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] || { say "no ethernet interface found"; return; }
  t=$(param bootline.dhcpTimeout)
  t=$((\${t:-30} * 5))
  while [ "$t" -gt 0 ] && [ -z "$(ls /run/bootline/net 2>/dev/null)" ]; do
    sleep 0.2
    t=$((t - 1))
  done
  [ -n "$(ls /run/bootline/net 2>/dev/null)" ] || say "no DHCP lease on $n interface(s): going on without network"
}

set_hostname() {
  h=$(param bootline.hostname)
  if [ -z "$h" ]; then
    for dev in /sys/class/net/*; do
      [ "$(cat "$dev/type" 2>/dev/null)" = 1 ] && h=bootline-$(tr -d : < "$dev/address") && break
    done
  fi
  hostname "\${h:-bootline}"
}

# The install data (Isar's /install: images, auto.install): a partition labelled BOOTLINE
# or INSTALLDATA, mounted read-only. bootline.install=LABEL waits up to 30 s for that
# label (USB sticks appear late); without it, one look.
mount_install_data() {
  want=$(param bootline.install)
  tries=1
  [ -n "$want" ] && tries=30
  while :; do
    for l in \${want:-BOOTLINE INSTALLDATA}; do
      d=$(findfs LABEL="$l" 2>/dev/null) || continue
      if mount -o ro "$d" /install; then say "install data: $d ($l) mounted on /install"; else say "cannot mount $d ($l) on /install"; fi
      return
    done
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || break
    sleep 1
  done
  [ -z "$want" ] || say "no partition labelled $want: /install stays empty"
}

# What to do after the agent exited with status $1: bootline.exit= if given, else reboot
# after success and a shell after a failure (someone should look at a failed device).
exit_action() {
  a=$(param bootline.exit)
  case "$a" in
    reboot | poweroff | halt | shell) echo "$a" ;;
    *) if [ "$1" = 0 ]; then echo reboot; else echo shell; fi ;;
  esac
}

# busybox's sh for people (line editing, history); scripts get /bin/sh (dash).
shell() {
  say "starting a shell on the console; leave it to start another"
  while :; do setsid cttyhack busybox sh -l; done
}

finish() {
  a=$(exit_action "$1")
  say "the agent exited with status $1: $a"
  sync
  case "$a" in
    reboot) reboot -f ;;
    poweroff) poweroff -f ;;
    halt) halt -f ;;
  esac
  shell
}

main() {
  mount_filesystems
  [ -n "$(param bootline.debug)" ] && set -x
  say "bootline installer $(sed -n 's/.*"version": *"\\([^"]*\\)".*/\\1/p' /${INIT_PATHS.info})"
  load_modules
  set_hostname
  say "modules loaded; hostname $(hostname)"
  network_up
  mount_install_data
  [ -n "$(param bootline.shell)" ] && shell
  say "starting the agent"
  setsid cttyhack bootline run
  finish $?
}

[ -n "\${BOOTLINE_INIT_LIB:-}" ] || main
`;
}

/** udhcpc's hook: it passes the lease in the environment ($ip, $mask, $router, $dns, $domain). */
export function udhcpcScript(): string {
  return `#!/bin/sh
# udhcpc calls this with $1 = deconfig | bound | renew | leasefail | nak.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface" && break; done
    { [ -n "$domain" ] && echo "search $domain"; for d in $dns; do echo "nameserver $d"; done; } > /etc/resolv.conf
    mkdir -p /run/bootline/net
    echo "$ip" > "/run/bootline/net/$interface"
    echo "bootline-init: [$(cut -d" " -f1 /proc/uptime)] $interface: $ip/\${mask:-24}, router \${router:-none}, dns \${dns:-none}" > /dev/console
    ;;
esac
exit 0
`;
}

/** /usr/bin/bootline: the agent bundle on the node copied from the build host. */
export function agentWrapper(): string {
  return `#!/bin/sh
exec /usr/bin/node ${AGENT_NODE_OPTIONS.join(' ')} /${INIT_PATHS.agent} "$@"
`;
}

/**
 * reboot/poweroff/halt for the agent's final action: busybox's plain `reboot` signals
 * PID 1, which is a shell script here; this syncs and does it at once.
 */
export function powerWrapper(action: 'reboot' | 'poweroff' | 'halt'): string {
  return `#!/bin/sh
sync
exec busybox ${action} -f
`;
}
