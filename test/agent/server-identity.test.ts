// The device's identity for enrollment: serial, UUID, MACs of physical NICs, from sysfs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { chooseSerial, cleanHostname, cleanMac, cleanSerial, cleanUuid, readDeviceIdentity, SYSFS_ROOT_ENV } from '../../src/agent/device-identity.ts';
import { tempDir } from '../helpers.ts';

const RECORDED = join(import.meta.dirname, '..', 'fixtures', 'sysfs-pc');

test('firmware placeholders are not serial numbers', () => {
  for (const p of ['To be filled by O.E.M.', 'TO BE FILLED BY O.E.M.', 'Default string', '0', '00000000', 'System Serial Number', 'Not Specified', 'None', 'FFFFFFFF', '........', '   ', '', 'N/A', '123456789']) {
    assert.equal(cleanSerial(p), undefined, JSON.stringify(p));
  }
  assert.equal(cleanSerial('  PF3XK2A9 \n'), 'PF3XK2A9');
  assert.equal(cleanSerial('CZC1234\0\0'), 'CZC1234');
  assert.equal(cleanSerial('10'), '10');
  assert.equal(cleanSerial(undefined), undefined);
});

test('the serial comes from the product, then the board, then the chassis', () => {
  assert.equal(chooseSerial({ product_serial: 'P1', board_serial: 'B1', chassis_serial: 'C1' }), 'P1');
  assert.equal(chooseSerial({ product_serial: 'To be filled by O.E.M.', board_serial: 'B1', chassis_serial: 'C1' }), 'B1');
  assert.equal(chooseSerial({ product_serial: 'Default string', board_serial: 'Default string', chassis_serial: 'C1' }), 'C1');
  assert.equal(chooseSerial({ product_serial: '0' }), undefined);
  assert.equal(chooseSerial({}), undefined);
});

test('UUIDs are lower-cased; filler UUIDs are dropped', () => {
  assert.equal(cleanUuid('4C4C4544-0042-3510-8052-B4C04F564432\n'), '4c4c4544-0042-3510-8052-b4c04f564432');
  assert.equal(cleanUuid('00000000-0000-0000-0000-000000000000'), undefined);
  assert.equal(cleanUuid('FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'), undefined);
  assert.equal(cleanUuid('03000200-0400-0500-0006-000700080009'), undefined);
  assert.equal(cleanUuid('not a uuid'), undefined);
});

test('MACs are lower-case six-byte addresses, never all zeros', () => {
  assert.equal(cleanMac('3C:EC:EF:12:34:56\n'), '3c:ec:ef:12:34:56');
  assert.equal(cleanMac('00:00:00:00:00:00'), undefined);
  assert.equal(cleanMac('80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:00:01'), undefined);
  assert.equal(cleanMac(''), undefined);
  assert.equal(cleanHostname('(none)'), undefined);
  assert.equal(cleanHostname('localhost'), undefined);
  assert.equal(cleanHostname('line-a-07\n'), 'line-a-07');
});

test('a recorded sysfs tree: board serial, UUID, and the MACs of the NICs only', async () => {
  const id = await readDeviceIdentity({ sysfsRoot: RECORDED, hostname: 'installer' });
  assert.deepEqual(id, {
    serial: 'PF3XK2A9',
    uuid: '4c4c4544-0042-3510-8052-b4c04f564432',
    // eno1; enp4s0 by its own (permanent) address, not the bond's; wlp2s0. Not lo, br0,
    // bond0 (no device), enp3s0 (all zeros), ib0 (not a MAC-48 address).
    macs: ['3c:ec:ef:12:34:56', '00:1b:21:aa:00:02', 'a4:c3:f0:aa:bb:cc'],
    hostname: 'installer',
  });
});

test('BOOTLINE_SYSFS_ROOT moves the root; a tree without DMI or NICs gives only the host name', async () => {
  const dir = tempDir();
  mkdirSync(join(dir, 'class', 'net', 'lo'), { recursive: true });
  writeFileSync(join(dir, 'class', 'net', 'lo', 'address'), '00:00:00:00:00:00\n');
  const before = process.env[SYSFS_ROOT_ENV];
  process.env[SYSFS_ROOT_ENV] = dir;
  try {
    assert.deepEqual(await readDeviceIdentity({ hostname: 'h' }), { macs: [], hostname: 'h' });
    process.env[SYSFS_ROOT_ENV] = RECORDED;
    assert.equal((await readDeviceIdentity()).serial, 'PF3XK2A9');
  } finally {
    if (before === undefined) delete process.env[SYSFS_ROOT_ENV];
    else process.env[SYSFS_ROOT_ENV] = before;
  }
});
