#!/usr/bin/env node
// Records the part of this machine's /sys and /proc that the collect-inventory task reads
// into a directory (sys/ and proc/), keeping sysfs's symbolic links as they are, so that
// a test can run the collectors on it and expect exact values:
//   node scripts/record-inventory-tree.mjs test/fixtures/sysfs-vm
// Unreadable files (root-only serials when not root) are left out.
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const out = process.argv[2];
if (!out) {
  process.stderr.write('usage: record-inventory-tree.mjs OUTDIR\n');
  process.exit(2);
}

/** Copies `path` (absolute, under / ) into out, recreating each symlink met on the way. */
function record(path) {
  const parts = path.split('/').filter(Boolean);
  let src = '/';
  for (let i = 0; i < parts.length; i++) {
    src = join(src, parts[i]);
    const dst = join(out, relative('/', src));
    let st;
    try {
      st = lstatSync(src);
    } catch {
      return;
    }
    if (st.isSymbolicLink()) {
      const target = readlinkSync(src);
      if (!existsLink(dst)) {
        mkdirSync(dirname(dst), { recursive: true });
        symlinkSync(target, dst);
      }
      // Continue from where the link points, then the rest of the path.
      const rest = parts.slice(i + 1).join('/');
      return record(resolve(dirname(src), target) + (rest ? `/${rest}` : ''));
    }
    if (st.isDirectory()) {
      mkdirSync(dst, { recursive: true });
      continue;
    }
    if (i === parts.length - 1) {
      try {
        const data = readFileSync(src);
        mkdirSync(dirname(dst), { recursive: true });
        writeFileSync(dst, data);
      } catch {
        // unreadable: left out, as the collectors would report it
      }
    }
  }
}

function existsLink(p) {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function list(dir) {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** A link, recorded as a link (its target need not be recorded). */
function recordLink(path) {
  try {
    const target = readlinkSync(path);
    const dst = join(out, relative('/', path));
    if (existsLink(dst)) return;
    mkdirSync(dirname(dst), { recursive: true });
    symlinkSync(target, dst);
  } catch {
    // not a link here
  }
}

const DMI = ['sys_vendor', 'product_name', 'product_version', 'product_serial', 'product_uuid', 'product_sku', 'product_family', 'board_vendor', 'board_name', 'board_version',
  'board_serial', 'board_asset_tag', 'chassis_vendor', 'chassis_type', 'chassis_version', 'chassis_serial', 'chassis_asset_tag', 'bios_vendor', 'bios_version', 'bios_date', 'bios_release'];
for (const f of DMI) record(`/sys/class/dmi/id/${f}`);
for (const name of list('/sys/block')) {
  for (const f of ['size', 'removable', 'serial', 'wwid', 'queue/rotational', 'device/model', 'device/vendor', 'device/serial', 'device/wwid']) record(`/sys/block/${name}/${f}`);
  recordLink(`/sys/block/${name}/device`);
}
for (const name of list('/sys/class/net')) {
  for (const f of ['address', 'operstate', 'carrier', 'speed', 'bonding_slave/perm_hwaddr']) record(`/sys/class/net/${name}/${f}`);
  recordLink(`/sys/class/net/${name}/device`);
  recordLink(`/sys/class/net/${name}/device/driver`);
}
for (const a of list('/sys/bus/pci/devices')) {
  for (const f of ['vendor', 'device', 'subsystem_vendor', 'subsystem_device', 'class']) record(`/sys/bus/pci/devices/${a}/${f}`);
  recordLink(`/sys/bus/pci/devices/${a}/driver`);
}
for (const a of list('/sys/bus/usb/devices'))
  for (const f of ['idVendor', 'idProduct', 'busnum', 'devnum', 'manufacturer', 'product', 'serial', 'speed']) record(`/sys/bus/usb/devices/${a}/${f}`);
for (const t of list('/sys/class/tpm')) record(`/sys/class/tpm/${t}/tpm_version_major`);
for (const v of list('/sys/firmware/efi/efivars')) if (/^(SecureBoot|SetupMode)-/.test(v)) record(`/sys/firmware/efi/efivars/${v}`);
if (existsSync('/sys/firmware/efi')) mkdirSync(join(out, 'sys/firmware/efi'), { recursive: true });
for (const f of ['cpuinfo', 'meminfo']) {
  mkdirSync(join(out, 'proc'), { recursive: true });
  writeFileSync(join(out, "proc", f), readFileSync(`/proc/${f}`));
}
process.stdout.write(`recorded into ${out}\n`);
