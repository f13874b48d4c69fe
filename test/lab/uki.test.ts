// The installer's Unified Kernel Image without a guest: section placement from the stub's PE
// headers (pure), and a real UKI made from Debian's systemd-stub with objcopy and sbsign
// (small stand-ins for the kernel and initramfs: the firmware is what boots the real one, in
// secureboot.test.ts), with the refusals of bad signing input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fetchPackage } from '../../src/lab/debian-packages.ts';
import { PeFormatError, layoutSections, overlappingSections, parsePe, type PeImage } from '../../src/lab/installer/pe.ts';
import { STUB_PATH, UkiError, buildUki, checkSigningPair, installerOsRelease } from '../../src/lab/installer/uki.ts';
import { InstallerBuildError, parseBuildOptions } from '../../src/lab/installer/build.ts';
import { onPath } from '../../src/which.ts';
import { tempDir, thrown } from '../helpers.ts';

const image = (sections: [string, number, number][], sizeOfImage: number, sectionAlignment = 0x200): PeImage => ({
  magic: 0x20b,
  imageBase: 0n,
  sectionAlignment,
  fileAlignment: 0x200,
  sizeOfImage,
  sections: sections.map(([name, virtualAddress, virtualSize]) => ({ name, virtualAddress, virtualSize, rawSize: Math.ceil(virtualSize / 0x200) * 0x200, rawOffset: 0 })),
});

test('new sections go page-aligned after the stub\'s last one, one after the other, never overlapping', () => {
  const stub = image([['.text', 0x4000, 0xbff0], ['.sbat', 0x19000, 0xe2], ['.sdmagic', 0x19100, 0x34]], 0x19300);
  const placed = layoutSections(stub, [{ name: '.osrel', bytes: 0x90 }, { name: '.linux', bytes: 0x7dd7c0 }, { name: '.initrd', bytes: 5 }]);
  assert.deepEqual(placed, [
    { name: '.osrel', virtualAddress: 0x1a000 },
    { name: '.linux', virtualAddress: 0x1b000 },
    { name: '.initrd', virtualAddress: 0x1b000 + 0x7de000 },
  ]);
  // A larger section alignment of the stub is kept.
  assert.equal(layoutSections(image([['.text', 0x10000, 0x100]], 0x10100, 0x10000), [{ name: '.linux', bytes: 1 }])[0]!.virtualAddress, 0x20000);
  assert.throws(() => layoutSections(stub, [{ name: '.toolongname', bytes: 1 }]), PeFormatError);
  // The file's padding of a section (rawSize) is not part of it in memory: .sbat and .sdmagic do not overlap.
  assert.deepEqual(overlappingSections(stub), []);
  assert.deepEqual(overlappingSections(image([['.a', 0x1000, 0x2000], ['.b', 0x2000, 0x100]], 0x3000)), [['.a', '.b']]);
});

test('a file that is no PE32+ image is refused with what it is', () => {
  assert.match(thrown(PeFormatError, () => parsePe(Buffer.from('#!/bin/sh\n'.padEnd(128)), 'the EFI stub x')).message, /^the EFI stub x is not a PE32\+ EFI image: no "MZ" header$/);
  const mz = Buffer.alloc(256);
  mz.write('MZ');
  mz.writeUInt32LE(0x80, 0x3c);
  assert.match(thrown(PeFormatError, () => parsePe(mz, 'y')).message, /no "PE" signature/);
});

const tools = ['objcopy', 'sbsign', 'sbverify', 'openssl'].filter((t) => !onPath(t));

test('a UKI from Debian\'s systemd-stub: the sections where they were placed, signed so that sbverify accepts it with our certificate only', { skip: tools.length > 0 && `needs ${tools.join(', ')}` }, async () => {
  const dir = tempDir('bootline-uki-');
  const stub = join((await fetchPackage('systemd-boot-efi')).root, STUB_PATH);
  const key = (name: string) => {
    execFileSync('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}/`, '-days', '30', '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`)], { stdio: 'pipe' });
    return { key: join(dir, `${name}.key`), cert: join(dir, `${name}.crt`) };
  };
  const db = key('db');
  const other = key('other');
  const vmlinuz = join(dir, 'vmlinuz');
  const initrd = join(dir, 'initrd');
  writeFileSync(vmlinuz, randomBytes(300_000));
  writeFileSync(initrd, randomBytes(1_000_001));
  const out = join(dir, 'uki.efi');
  const r = await buildUki({ stub, vmlinuz, initrd, uname: '6.1.0-99-amd64', osrel: installerOsRelease('1.2.3', '6.1.0-99-amd64'), cmdline: 'console=ttyS0 bootline.x=1', out, work: join(dir, 'w-'), sign: db });
  assert.equal(r.signed, true);
  const pe = parsePe(readFileSync(out), 'uki');
  assert.deepEqual(overlappingSections(pe), []);
  const byName = new Map(pe.sections.map((s) => [s.name, s]));
  for (const s of r.sections) assert.equal(byName.get(s.name)?.virtualAddress, s.virtualAddress, s.name);
  assert.equal(byName.get('.linux')?.virtualSize, 300_000);
  assert.equal(byName.get('.initrd')?.virtualSize, 1_000_001);
  // objdump sees the same addresses; the sections hold the inputs.
  const objdump = execFileSync('objdump', ['-h', out], { encoding: 'utf8' });
  for (const s of r.sections) assert.match(objdump, new RegExp(`\\${s.name}\\s+[0-9a-f]+\\s+0*${s.virtualAddress.toString(16)}\\s`), s.name);
  const file = readFileSync(out);
  const section = (name: string) => {
    const s = byName.get(name)!;
    return file.subarray(s.rawOffset, s.rawOffset + s.virtualSize);
  };
  assert.equal(section('.cmdline').toString('latin1'), 'console=ttyS0 bootline.x=1\0');
  assert.equal(section('.uname').toString('latin1'), '6.1.0-99-amd64');
  assert.match(section('.osrel').toString('latin1'), /^PRETTY_NAME="bootline installer 1\.2\.3 \(Linux 6\.1\.0-99-amd64\)"$/m);
  assert.ok(section('.initrd').equals(readFileSync(initrd)));
  assert.equal(spawnSync('sbverify', ['--cert', db.cert, out]).status, 0, 'signed by db');
  assert.notEqual(spawnSync('sbverify', ['--cert', other.cert, out]).status, 0, 'not by another key');

  // Without .cmdline (the netboot form) and unsigned: no signature at all.
  const plain = join(dir, 'plain.efi');
  await buildUki({ stub, vmlinuz, initrd, uname: 'u', osrel: 'NAME=x\n', out: plain, work: join(dir, 'w2-') });
  assert.ok(!parsePe(readFileSync(plain), 'plain').sections.some((s) => s.name === '.cmdline'));
  const listed = spawnSync('sbverify', ['--list', plain], { encoding: 'utf8' });
  assert.match(listed.stdout + listed.stderr, /No signature table present/);

  // Signing input is checked before anything is built.
  assert.match((await checkSigningPair(db.key, other.cert).catch((e: Error) => e))?.message ?? '', /--sign-key .*db\.key does not belong to --sign-cert .*other\.crt/);
  assert.match((await checkSigningPair(db.cert, db.cert).catch((e: Error) => e))?.message ?? '', /--sign-key .*db\.crt is not a PEM private key/);
  assert.match((await checkSigningPair(join(dir, 'nope.key'), db.cert).catch((e: Error) => e))?.message ?? '', /--sign-key .*nope\.key: no such file/);
  assert.ok((await checkSigningPair(db.key, other.cert).catch((e: Error) => e)) instanceof UkiError);
});

test('--sign-key and --sign-cert go together, and imply the UKI', () => {
  assert.match(thrown(InstallerBuildError, () => parseBuildOptions({ signKey: 'db.key' })).message, /--sign-key and --sign-cert go together: give --sign-cert <db\.crt> too/);
  assert.match(thrown(InstallerBuildError, () => parseBuildOptions({ signCert: 'db.crt' })).message, /give --sign-key <db\.key> too/);
  const o = parseBuildOptions({ signKey: 'db.key', signCert: 'db.crt' });
  assert.equal(o.uki, true);
  assert.match(o.sign?.key ?? '', /\/db\.key$/);
  assert.equal(parseBuildOptions({}).uki, false);
  assert.equal(parseBuildOptions({}).sign, undefined);
});
