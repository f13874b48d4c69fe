#!/usr/bin/env bash
# The agent on this machine (no virtual devices): sets the machine up, builds a real GPT disk image (FAT ESP + ext4 root),
# attaches a loop device as the "device's disk", and runs the sample pipeline in
# examples/demo/config.yaml with Isar-style kernel parameters. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh

DEMO=/tmp/bootline-demo
rm -rf "$DEMO"
mkdir -p "$DEMO/root/etc" "$DEMO/esp/EFI/BOOT" "$DEMO/leds/status"
loopdev=""
cleanup() { [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true; }
trap cleanup EXIT

echo "== building a 256 MiB GPT disk image (ESP + ext4 root with real files)"
img="$DEMO/disk.img"
truncate -s 256M "$img"
printf 'label: gpt\nstart=2048, size=65536, type=uefi, name=esp\nstart=67584, type=linux, name=root\n' | sfdisk -q "$img"
echo "bootline demo" > "$DEMO/root/etc/hostname"
cp -r /usr/share/doc/. "$DEMO/root/doc" 2>/dev/null || true
echo "demo" > "$DEMO/esp/EFI/BOOT/README.txt"
mkfs.vfat -C -n ESP "$DEMO/esp.img" 32768 >/dev/null
mcopy -s -i "$DEMO/esp.img" "$DEMO/esp/EFI" ::/
root_sectors=$(( (256 * 1024 * 1024 / 512) - 67584 - 34 ))
mke2fs -q -t ext4 -L root -d "$DEMO/root" "$DEMO/root.img" "$((root_sectors / 2))k"
dd if="$DEMO/esp.img" of="$img" bs=512 seek=2048 conv=notrunc,sparse status=none
dd if="$DEMO/root.img" of="$img" bs=512 seek=67584 conv=notrunc,sparse status=none
# The block map: deploy-image finds it beside the image and writes only mapped blocks.
node dist/bootline.mjs image create "$img" -o "$img.bmap"
gzip -1 -c "$img" > "$img.gz"
echo "   $(du -h --apparent-size "$img.gz" | cut -f1) compressed; $(du -h "$img" | cut -f1) of $(du -h --apparent-size "$img" | cut -f1) holds data"

# Fake sysfs LED so the led reporter has something to drive.
for f in trigger brightness delay_on delay_off; do echo 0 > "$DEMO/leds/status/$f"; done
echo 1 > "$DEMO/leds/status/max_brightness"

truncate -s 300M "$DEMO/device-disk"
if [ "$(id -u)" -eq 0 ] && loopdev=$(losetup -f --show "$DEMO/device-disk" 2>/dev/null); then
  target="/dev/nonexistent0,$loopdev"
  extra=""
  echo "== the device's disk is $loopdev (a loop device)"
else
  loopdev=""
  target="$DEMO/device-disk"
  extra="bootline.tasks.deploy-image.with.allowFile=1"
  echo "== no loop device (not root?): writing to the file $target instead"
fi

# What an Isar installer's kernel command line would carry.
echo "BOOT_IMAGE=/vmlinuz quiet installer.unattended installer.image.uri=$img.gz installer.target.dev=$target installer.target.overwrite=OVERWRITE bootline.deviceId=demo-0001 $extra" > "$DEMO/cmdline"

echo "== the plan (bootline run --dry-run), then the run"
node dist/bootline.mjs run --config examples/demo/config.yaml --cmdline "$DEMO/cmdline" --state-dir "$DEMO/state" --dry-run | sed -n '1,14p'
echo
set +e
node dist/bootline.mjs run --config examples/demo/config.yaml --cmdline "$DEMO/cmdline" --state-dir "$DEMO/state" --fresh --events "$DEMO/events.ndjson"
status=$?
set -e
echo
echo "== results"
echo "exit status: $status"
echo "report:      $DEMO/state/report.json ($(node -p "require('$DEMO/state/report.json').status"))"
echo "events:      $DEMO/events.ndjson ($(wc -l < "$DEMO/events.ndjson") events)"
echo "hook log:    $DEMO/state/hooks.log"
echo "LED:         trigger=$(cat "$DEMO/leds/status/trigger") brightness=$(cat "$DEMO/leds/status/brightness")"
if cmp -s <(head -c 1M "$img") <(head -c 1M "${loopdev:-$DEMO/device-disk}"); then echo "disk:        first MiB matches the image"; else echo "disk:        MISMATCH"; status=1; fi
[ "$status" -eq 0 ] || exit "$status"

echo
echo "== the same device bootstrapped by the line's server: only bootline.server= and bootline.token= on its command line"
SRV="$DEMO/server"
node dist/bootline.mjs image add "$img.gz" --data "$SRV" --name demo-os --image-version 1.0 | sed 's/^/   /'
node dist/bootline.mjs serve --data "$SRV" --listen 127.0.0.1:0 --log-level warn > "$DEMO/server.out" 2> "$DEMO/server.log" &
server_pid=$!
cleanup() { kill "$server_pid" 2>/dev/null || true; [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true; }
for _ in $(seq 100); do grep -q 'admin token' "$DEMO/server.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^bootline server listening on \([^ ]*\).*/\1/p' "$DEMO/server.out")
admin=$(sed -n 's/^admin token (shown once, stored hashed): //p' "$DEMO/server.out")
echo "   server $url (admin token ${admin:0:8}…, stored hashed)"
api() { curl -sS -f -H "authorization: Bearer $admin" -H 'content-type: application/json' "$@"; }
target_json="\"$([ -n "$loopdev" ] && echo "$loopdev" || echo "$DEMO/device-disk")\""
allow=$([ -n "$loopdev" ] && echo false || echo true)
api -X PUT "$url/api/v1/plans/demo-line" -d "{\"description\":\"demo line\",\"config\":{\"unattended\":true,\"tasks\":[
  {\"name\":\"deploy-image\",\"builtin\":\"deploy-image\",\"effort\":4,\"with\":{\"image\":\"image:demo-os\",\"target\":[$target_json],\"overwrite\":\"OVERWRITE\",\"allowFile\":$allow,\"skipIdentical\":true}},
  {\"name\":\"say-done\",\"script\":\"/bin/echo\",\"args\":[\"provisioned\"]}]}}" > /dev/null
api -X POST "$url/api/v1/rules" -d '{"match":"default","plan":"demo-line"}' > /dev/null
token=$(api -X POST "$url/api/v1/tokens" -d '{"label":"demo-batch","expiresInSeconds":3600}' | node -e 'process.stdin.on("data",d=>process.stdout.write(JSON.parse(d).token))')
echo "   plan demo-line (deploy image:demo-os, say-done), default rule, enrollment token for batch demo-batch"
echo "BOOT_IMAGE=/vmlinuz quiet bootline.server=$url bootline.token=$token" > "$DEMO/cmdline-server"
set +e
node dist/bootline.mjs run --cmdline "$DEMO/cmdline-server" --state-dir "$DEMO/state-server" 2>&1 | tail -n 8 | sed 's/^/   | /'
status=${PIPESTATUS[0]}
set -e
echo "== what the server recorded"
api "$url/api/v1/devices" | node -e '
  let s=""; process.stdin.on("data",d=>s+=d).on("end",()=>{ for (const d of JSON.parse(s))
    console.log(`   device ${d.id}  serial ${d.serial ?? "-"}  MACs ${d.macs.join(" ")}  batch ${d.batch}  state ${d.state}  progress ${d.progress}%  run ${d.currentRun}`) })'
api "$url/api/v1/export?batch=demo-batch&format=csv" | sed 's/^/   /'
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
exit $status
