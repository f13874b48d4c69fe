#!/bin/sh
# Refuse to go on with too little memory or no disks; show what was found.
set -e
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
cpus=$(grep -c ^processor /proc/cpuinfo)
echo "CPU: $cpus core(s), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
echo "Memory: $((mem_kb / 1024)) MiB"
[ "$mem_kb" -gt 262144 ] || { echo "need at least 256 MiB of memory" >&2; exit 1; }
echo "Target chosen so far: ${BOOTLINE_TARGET:-none yet}"
