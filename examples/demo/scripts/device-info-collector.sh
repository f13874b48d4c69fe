#!/bin/sh
# Collect a small inventory into the state dir, reporting sub-progress the way
# `bmaptool copy --psplash-pipe` does: psplash commands on $BOOTLINE_PROGRESS.
set -e
out="$BOOTLINE_STATE_DIR/inventory.txt"
: > "$out"
step() { printf 'MSG %s\n' "$2" > "$BOOTLINE_PROGRESS"; printf 'PROGRESS %d\n' "$1" > "$BOOTLINE_PROGRESS"; sleep 0.4; }
step 10 "reading CPU"; grep -m1 '^model name' /proc/cpuinfo >> "$out" || true
step 35 "reading memory"; grep '^MemTotal' /proc/meminfo >> "$out"
step 60 "reading disks"; ls /sys/block >> "$out"
step 85 "reading network"; for n in /sys/class/net/*; do echo "$(basename "$n") $(cat "$n/address")" >> "$out"; done
step 100 "done"
echo "inventory: $(wc -l < "$out") lines in $out"
