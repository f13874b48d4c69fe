// The installer builder's pure parts: ELF needs, module and package closures, the cpio
// format, the tree, /init's logic (run with the host's dash, the installer's /bin/sh),
// the USB image's files, and the errors a build gives before it fetches anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { elfNeeds } from '../../src/lab/installer/elf.ts';
import { moduleName, parseBuiltin, parseModulesDep, selectModules } from '../../src/lab/installer/modules.ts';
import { DLOPENED_LIBRARIES, INSTALLER_PACKAGE_FILES, isLibraryPackage, libraryClosure, parseAptDepends } from '../../src/lab/installer/packages.ts';
import { candidateVersions, parseCandidates } from '../../src/lab/debian-packages.ts';
import { cpioHeader, cpioStream } from '../../src/lab/installer/cpio.ts';
import { FileTree, isExcluded, mergedPath, type Entry } from '../../src/lab/installer/tree.ts';
import { addHostLibraries, checkLibraries, missingLibrariesMessage } from '../../src/lab/installer/libraries.ts';
import { initScript, udhcpcScript } from '../../src/lab/installer/init-script.ts';
import { infoArchive, installerInfoJson } from '../../src/lab/installer/pack.ts';
import { dataFiles, loaderFiles } from '../../src/lab/installer/usb-image.ts';
import { InstallerBuildError, buildInstaller, parseBuildOptions } from '../../src/lab/installer/build.ts';
import { INIT_PARAMS, parseCmdline } from '../../src/config/cmdline.ts';
import { tempDir } from '../helpers.ts';

test('ELF needs: the host node names its interpreter and libc; a script is no ELF', () => {
  const needs = elfNeeds(readFileSync(process.execPath));
  assert.ok(needs);
  assert.equal(needs.interpreter, '/lib64/ld-linux-x86-64.so.2');
  assert.ok(needs.needed.includes('libc.so.6'), needs.needed.join(' '));
  // The same list ldd-style tools print from the dynamic section.
  const readelf = execFileSync('readelf', ['-d', process.execPath], { encoding: 'utf8' });
  assert.deepEqual(needs.needed, [...readelf.matchAll(/\(NEEDED\)\s+Shared library: \[(.+)\]/g)].map((m) => m[1]));
  assert.equal(elfNeeds(Buffer.from('#!/bin/sh\necho hi\n')), undefined);
});

test('ELF needs: RUNPATH directories are read, and a library there satisfies the check (systemd\'s tools)', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'main.c'), 'int main(void) { return 0; }\n');
  const withRunpath = join(dir, 'with-runpath');
  // g++ (setup.sh) drives the linker; --enable-new-dtags writes DT_RUNPATH as Debian's systemd has it.
  execFileSync('g++', ['-x', 'c', '-o', withRunpath, join(dir, 'main.c'), '-Wl,--enable-new-dtags,-rpath,/usr/lib/x86_64-linux-gnu/systemd:/opt/x', '-L/usr/lib/x86_64-linux-gnu', '-Wl,--no-as-needed', '-lm']);
  const needs = elfNeeds(readFileSync(withRunpath));
  assert.deepEqual(needs?.runpath, ['/usr/lib/x86_64-linux-gnu/systemd', '/opt/x']);
  assert.equal(elfNeeds(readFileSync(process.execPath))?.runpath, undefined);
  // libm.so.6 only in the RUNPATH directory: found there, and not found without it.
  const tree = new FileTree();
  tree.set('usr/bin/tool', { kind: 'file', mode: 0o755, source: withRunpath, size: 0, origin: 'systemd 252' });
  const lib = (path: string) => tree.set(path, { kind: 'file', mode: 0o644, source: '/dev/null', size: 0, origin: 'test' });
  for (const l of ['usr/lib64/ld-linux-x86-64.so.2', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'usr/lib/x86_64-linux-gnu/libstdc++.so.6', 'usr/lib/x86_64-linux-gnu/libgcc_s.so.1']) lib(l);
  assert.deepEqual(checkLibraries(tree).missing.map((m) => m.library), ['libm.so.6']);
  lib('usr/lib/x86_64-linux-gnu/systemd/libm.so.6');
  assert.deepEqual(checkLibraries(tree).missing, []);
});

test('modules: the closure of the wanted ones from modules.dep; built-in and unknown ones are told apart', () => {
  const dep = parseModulesDep(
    [
      'kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko kernel/lib/crc16.ko',
      'kernel/fs/jbd2/jbd2.ko:',
      'kernel/fs/mbcache.ko:',
      'kernel/lib/crc16.ko:',
      'kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko',
      'kernel/drivers/md/dm-mod.ko:',
      'kernel/drivers/block/loop.ko:',
      '',
    ].join('\n'),
  );
  const builtin = parseBuiltin('kernel/drivers/char/tpm/tpm_tis.ko\nkernel/fs/nls/nls_base.ko\n');
  const s = selectModules(['ext4', 'dm_crypt', 'tpm-tis', 'nope'], dep, builtin);
  assert.deepEqual(s.files, [
    'kernel/drivers/md/dm-crypt.ko', 'kernel/drivers/md/dm-mod.ko', 'kernel/fs/ext4/ext4.ko', 'kernel/fs/jbd2/jbd2.ko', 'kernel/fs/mbcache.ko', 'kernel/lib/crc16.ko',
  ]);
  assert.deepEqual(s.builtin, ['tpm_tis']);
  assert.deepEqual(s.missing, ['nope']);
  assert.equal(moduleName('kernel/drivers/usb/storage/usb-storage.ko.xz'), 'usb_storage');
});

test('packages: apt-cache depends parsed (first alternative, no virtual packages) and only libraries followed', async () => {
  const deps = parseAptDepends(
    ['tpm2-tools', '  Depends: libc6', '  Depends: libssl3', '  Depends: adduser', 'cryptsetup-bin', '  |Depends: libfoo1', '  Depends: libbar1', '  Depends: <libvirtual>', '    libprovider1', '  PreDepends: zlib1g', 'libc6', '  Depends: libgcc-s1', ''].join('\n'),
  );
  assert.deepEqual(deps.get('tpm2-tools'), ['libc6', 'libssl3', 'adduser']);
  assert.deepEqual(deps.get('cryptsetup-bin'), ['libfoo1', 'zlib1g']);
  assert.ok(isLibraryPackage('zlib1g') && isLibraryPackage('libc6') && !isLibraryPackage('adduser') && !isLibraryPackage('zlib1g-dev'));
  const graph: Record<string, string[]> = { tool: ['libc6', 'debconf', 'zlib1g'], libc6: ['libgcc-s1'], 'libgcc-s1': ['gcc-12-base'], zlib1g: ['libc6'] };
  const calls: string[][] = [];
  const closure = await libraryClosure(['tool'], async (names) => {
    calls.push(names);
    return new Map(names.map((n) => [n, graph[n] ?? []]));
  });
  assert.deepEqual(closure, ['libc6', 'libgcc-s1', 'tool', 'zlib1g']);
  assert.equal(calls.length, 3, 'one apt-cache call per level');
  assert.deepEqual(
    [...parseCandidates('zstd:\n  Installed: 1\n  Candidate: 1.5.4+dfsg2-5+deb12u1\n  Version table:\nnone:\n  Candidate: (none)\nlibc6:\n  Candidate: 2.36-9\n')],
    [['zstd', '1.5.4+dfsg2-5+deb12u1'], ['libc6', '2.36-9']],
  );
});

async function pack(entries: [string, Entry][], mtime = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of cpioStream(entries, mtime)) parts.push(b);
  return Buffer.concat(parts);
}

test('cpio: newc entries the host cpio reads back, owned by root, one mtime, same tree same bytes', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'payload'), 'hello world\n');
  const entries: [string, Entry][] = [
    ['etc', { kind: 'dir', mode: 0o755 }],
    ['etc/motd', { kind: 'data', mode: 0o644, data: Buffer.from('bootline\n') }],
    ['usr', { kind: 'dir', mode: 0o755 }],
    ['usr/bin', { kind: 'dir', mode: 0o755 }],
    ['usr/bin/hello', { kind: 'file', mode: 0o755, source: join(dir, 'payload'), size: 12, origin: 'test' }],
    ['usr/bin/sh', { kind: 'symlink', target: 'dash' }],
  ];
  const a = await pack(entries, 1_700_000_000);
  assert.deepEqual(a, await pack(entries, 1_700_000_000));
  assert.equal(a.length % 4, 0);
  const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: a, encoding: 'utf8' });
  assert.match(listing, /^-rw-r--r-- +1 root +root +9 Nov 14 +2023 etc\/motd$/m);
  assert.match(listing, /^-rwxr-xr-x +1 root +root +12 .* usr\/bin\/hello$/m);
  assert.match(listing, /^lrwxrwxrwx .* usr\/bin\/sh -> dash$/m);
  const out = join(dir, 'x');
  mkdirSync(out);
  execFileSync('cpio', ['-id', '--quiet'], { input: a, cwd: out });
  assert.equal(readFileSync(join(out, 'usr/bin/hello'), 'utf8'), 'hello world\n');
  // A header is 110 bytes of hex fields; name and data start on 4-byte boundaries.
  assert.equal(cpioHeader({ ino: 1, mode: 0o100644, nlink: 1, mtime: 0, filesize: 0, name: 'ab' }).length, 112 + 4);
});

test('cpio: a file that changed size while packing fails the build', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'f'), 'longer than it was');
  await assert.rejects(pack([['f', { kind: 'file', mode: 0o644, source: join(dir, 'f'), size: 3, origin: 't' }]]), /changed while the initramfs was packed/);
});

test('installer.json has a fixed length whatever the size, so the first archive never changes length', async () => {
  const small = installerInfoJson({ version: '0.1.0', kernel: '6.1.0-57-amd64', initramfsBytes: 0 });
  const big = installerInfoJson({ version: '0.1.0', kernel: '6.1.0-57-amd64', initramfsBytes: 987654321098 });
  assert.equal(small.length, big.length);
  assert.equal(JSON.parse(big.toString()).initramfsBytes, 987654321098);
  const head = await infoArchive({ version: '0.1.0', kernel: 'k', initramfsBytes: 5 }, 0);
  assert.equal(head.length % 512, 0);
  assert.match(execFileSync('cpio', ['-it', '--quiet'], { input: head, encoding: 'utf8' }), /^etc\/bootline\/installer\.json$/m);
});

test('tree: packages land merged-/usr, documentation is left out, symlinks resolve from the tree root', () => {
  assert.equal(mergedPath('/sbin/sfdisk'), 'usr/sbin/sfdisk');
  assert.equal(mergedPath('lib/x86_64-linux-gnu/libc.so.6'), 'usr/lib/x86_64-linux-gnu/libc.so.6');
  assert.equal(mergedPath('etc/hosts'), 'etc/hosts');
  assert.ok(isExcluded('usr/share/doc/util-linux/copyright') && isExcluded('usr/share/man/man8/sfdisk.8.gz') && isExcluded('usr/lib/x86_64-linux-gnu/libz.a'));
  assert.ok(!isExcluded('usr/share/ca-certificates/mozilla/x.crt') && !isExcluded('usr/sbin/sfdisk'));

  const pkg = tempDir();
  mkdirSync(join(pkg, 'bin'));
  mkdirSync(join(pkg, 'usr/share/doc/x'), { recursive: true });
  mkdirSync(join(pkg, 'lib/x86_64-linux-gnu'), { recursive: true });
  writeFileSync(join(pkg, 'bin/dash'), 'x');
  symlinkSync('dash', join(pkg, 'bin/sh'));
  writeFileSync(join(pkg, 'usr/share/doc/x/README'), 'x');
  writeFileSync(join(pkg, 'lib/x86_64-linux-gnu/libfoo.so.1.2'), 'x');
  symlinkSync('libfoo.so.1.2', join(pkg, 'lib/x86_64-linux-gnu/libfoo.so.1'));
  const tree = new FileTree();
  tree.addTree(pkg, 'dash 1');
  assert.equal(tree.entries.get('usr/bin/dash')?.kind, 'file');
  assert.equal(tree.entries.has('usr/share/doc/x/README'), false);
  assert.deepEqual(tree.entries.get('bin'), { kind: 'symlink', target: 'usr/bin' });
  assert.equal(tree.resolve('/bin/sh')?.path, 'usr/bin/dash');
  assert.equal(tree.resolve('lib/x86_64-linux-gnu/libfoo.so.1')?.path, 'usr/lib/x86_64-linux-gnu/libfoo.so.1.2');
  const paths = tree.paths();
  assert.ok(paths.indexOf('usr') < paths.indexOf('usr/bin') && paths.indexOf('usr/bin') < paths.indexOf('usr/bin/dash'), 'parents first');
});

test('libraries: a program without its libraries fails the check by name; node brings its own from the host', () => {
  const tree = new FileTree();
  tree.set('usr/bin/node', { kind: 'file', mode: 0o755, source: process.execPath, size: 0, origin: 'build host' });
  const before = checkLibraries(tree);
  assert.equal(before.programs, 1);
  assert.ok(before.missing.some((m) => m.library === 'libc.so.6' && m.program === 'usr/bin/node'));
  assert.match(missingLibrariesMessage(before.missing), /\/usr\/bin\/node \(from build host\) needs libc\.so\.6[\s\S]*INSTALLER_PACKAGES/);
  const added = addHostLibraries(tree, ['usr/bin/node']);
  assert.ok(added.some((l) => l.path === 'usr/lib/x86_64-linux-gnu/libc.so.6' && l.for === 'node'));
  assert.ok(added.some((l) => l.path === 'usr/lib64/ld-linux-x86-64.so.2'), 'and the dynamic loader');
  assert.deepEqual(checkLibraries(tree).missing, []);
});

test('tree: a package taken in part gives only its listed files, even under excluded dirs; a file it lacks fails by name', () => {
  const pkg = tempDir();
  mkdirSync(join(pkg, 'lib/systemd/system'), { recursive: true });
  mkdirSync(join(pkg, 'usr/bin'), { recursive: true });
  writeFileSync(join(pkg, 'lib/systemd/systemd-cryptsetup'), 'x');
  writeFileSync(join(pkg, 'lib/systemd/system/cryptsetup.target'), 'x');
  writeFileSync(join(pkg, 'usr/bin/systemd-cryptenroll'), 'x');
  writeFileSync(join(pkg, 'usr/bin/systemctl'), 'x');
  symlinkSync('systemd-cryptenroll', join(pkg, 'usr/bin/enroll'));
  const tree = new FileTree();
  tree.addFiles(pkg, ['lib/systemd/systemd-cryptsetup', 'usr/bin/systemd-cryptenroll', 'usr/bin/enroll'], 'systemd 252');
  assert.ok(isExcluded('lib/systemd/systemd-cryptsetup'), 'a whole-package add would leave it out');
  assert.equal(tree.entries.get('usr/lib/systemd/systemd-cryptsetup')?.kind, 'file');
  assert.deepEqual(tree.entries.get('usr/bin/enroll'), { kind: 'symlink', target: 'systemd-cryptenroll' });
  assert.equal(tree.entries.has('usr/bin/systemctl') || tree.entries.has('usr/lib/systemd/system/cryptsetup.target'), false);
  assert.throws(() => tree.addFiles(pkg, ['usr/bin/systemd-repart'], 'systemd 252'), /systemd 252 has no file \/usr\/bin\/systemd-repart .*INSTALLER_PACKAGE_FILES/);
  // The real list: systemd's TPM2 enrollment tools, each with the TSS2 libraries it loads with dlopen.
  assert.deepEqual(INSTALLER_PACKAGE_FILES.systemd?.files.map(mergedPath).sort(), [
    'usr/bin/systemd-cryptenroll', 'usr/lib/systemd/systemd-cryptsetup', 'usr/lib/x86_64-linux-gnu/cryptsetup/libcryptsetup-token-systemd-tpm2.so',
  ]);
  assert.ok(DLOPENED_LIBRARIES['usr/bin/systemd-cryptenroll']?.includes('libtss2-esys.so.0'));
});

test('libraries: a library loaded with dlopen that the tree lacks fails the check, named as such', () => {
  // Not ELF files (the DT_NEEDED check skips them): only what dlopen loads is checked here.
  const file = (origin: string): Entry => ({ kind: 'file', mode: 0o755, source: '/dev/null', size: 0, origin });
  const tree = new FileTree();
  tree.set('usr/bin/systemd-cryptenroll', file('systemd 252'));
  tree.set('usr/lib/x86_64-linux-gnu/libc.so.6', file('libc6'));
  const dlopened = { 'usr/bin/systemd-cryptenroll': ['libtss2-esys.so.0', 'libc.so.6'], 'usr/bin/absent': ['libnothing.so.1'] };
  const check = checkLibraries(tree, dlopened);
  assert.deepEqual(check.missing, [{ program: 'usr/bin/systemd-cryptenroll', library: 'libtss2-esys.so.0 (loaded with dlopen)', origin: 'systemd 252' }]);
  assert.match(missingLibrariesMessage(check.missing), /\/usr\/bin\/systemd-cryptenroll \(from systemd 252\) needs libtss2-esys\.so\.0 \(loaded with dlopen\)/);
  tree.set('usr/lib/x86_64-linux-gnu/libtss2-esys.so.0', { kind: 'file', mode: 0o644, source: '/dev/null', size: 0, origin: 'libtss2-esys-3.0.2-0' });
  assert.deepEqual(checkLibraries(tree, dlopened).missing, []);
});

/** Runs /init's functions with the host's dash (the installer's /bin/sh), on a given command line. */
function initFn(cmdline: string, call: string): string {
  const dir = tempDir();
  writeFileSync(join(dir, 'init'), initScript());
  writeFileSync(join(dir, 'cmdline'), `${cmdline}\n`);
  const r = spawnSync('dash', ['-c', `. ./init; ${call}`], { cwd: dir, encoding: 'utf8', env: { PATH: process.env.PATH, BOOTLINE_INIT_LIB: '1', BOOTLINE_CMDLINE: join(dir, 'cmdline') } });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('/init reads its kernel parameters: values, flags, the last one wins, globs stay words', () => {
  const line = 'console=ttyS0 bootline.exit=poweroff bootline.shell bootline.modules=a,b quiet bootline.exit=halt installer.image.uri=*.img';
  assert.equal(initFn(line, 'param bootline.exit'), 'halt');
  assert.equal(initFn(line, 'param bootline.shell'), '1');
  assert.equal(initFn(line, 'param bootline.modules'), 'a,b');
  assert.equal(initFn(line, 'param bootline.net'), '');
  assert.equal(initFn(line, 'param installer.image.uri'), '*.img');
  assert.equal(initFn('bootline.exitx=1', 'param bootline.exit'), '', 'a longer name is another parameter');
});

test('/init after the agent: reboot on success, a shell after a failure, bootline.exit= overrides both', () => {
  assert.equal(initFn('console=ttyS0', 'exit_action 0'), 'reboot');
  assert.equal(initFn('console=ttyS0', 'exit_action 1'), 'shell');
  assert.equal(initFn('bootline.exit=poweroff', 'exit_action 1'), 'poweroff');
  assert.equal(initFn('bootline.exit=shell', 'exit_action 0'), 'shell');
  assert.equal(initFn('bootline.exit=bogus', 'exit_action 0'), 'reboot', 'an unknown value is the default');
});

test('/init and the udhcpc script are valid for dash and busybox sh', () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'init'), initScript());
  writeFileSync(join(dir, 'udhcpc'), udhcpcScript());
  for (const sh of [['dash', '-n'], ['busybox', 'sh', '-n']])
    for (const f of ['init', 'udhcpc']) execFileSync(sh[0]!, [...sh.slice(1), join(dir, f)]);
});

test("the agent accepts /init's parameters on the command line and leaves them to /init", () => {
  const line = [...INIT_PARAMS].map((p) => `${p}=1`).join(' ') + ' bootline.unattended';
  assert.deepEqual(parseCmdline(line).layer.data, { unattended: true });
});

test('USB image: systemd-boot boots the installer with the command line; images travel with their bmaps', () => {
  const files = loaderFiles('console=ttyS0,115200 bootline.install=BOOTLINE installer.unattended');
  assert.match(files['loader/entries/bootline.conf']!, /^linux \/vmlinuz\ninitrd \/initrd\.img\noptions console=ttyS0,115200 bootline\.install=BOOTLINE installer\.unattended$/m);
  assert.match(files['loader/loader.conf']!, /^default bootline\.conf$/m);
  // Found as bmaptool finds them: <image>.bmap, then one extension less at a time.
  const have = new Set(['/i/disk.img.bmap', '/i/other.wic.zst.bmap', '/i/other.wic.bmap', '/i/raw.bmap']);
  const data = dataFiles(['/i/disk.img.gz', '/i/other.wic.zst', '/i/raw.img'], '/c/auto.install', (p) => have.has(p));
  assert.deepEqual([...data], [
    ['disk.img.gz', '/i/disk.img.gz'], ['disk.img.bmap', '/i/disk.img.bmap'],
    ['other.wic.zst', '/i/other.wic.zst'], ['other.wic.zst.bmap', '/i/other.wic.zst.bmap'],
    ['raw.img', '/i/raw.img'], ['raw.bmap', '/i/raw.bmap'], ['auto.install', '/c/auto.install'],
  ]);
});

test('build errors say what is wrong before anything is fetched', async () => {
  assert.throws(() => parseBuildOptions({ zstdLevel: '25' }), /--zstd-level must be a whole number from 1 to 19/);
  assert.throws(() => parseBuildOptions({ usbImage: ['x.img'] }), /give --usb <file> too/);
  const o = parseBuildOptions({ out: '/etc/hostname/installer', agent: process.execPath });
  await assert.rejects(buildInstaller({ ...o, log: () => {} }), (e: Error) => e instanceof InstallerBuildError && /cannot write the installer to \/etc\/hostname\/installer: .* choose another --out/.test(e.message));
  const dir = tempDir();
  await assert.rejects(buildInstaller({ ...parseBuildOptions({ out: join(dir, 'out'), agent: join(dir, 'none.mjs') }), log: () => {} }), /the agent bundle .*none\.mjs does not exist .*npm run build/);
  const path = process.env.PATH;
  process.env.PATH = dir;
  try {
    await assert.rejects(buildInstaller({ ...o, usb: join(dir, 'usb.img'), log: () => {} }), /missing tools: zstd \(Debian package zstd\), .*sfdisk \(Debian package fdisk\).* — install them: apt-get install zstd apt dpkg fdisk/);
  } finally {
    process.env.PATH = path;
  }
  await assert.rejects(candidateVersions(['bootline-no-such-package']), /Debian package bootline-no-such-package is not known to apt here: run "apt-get update"/);
  await assert.rejects(
    buildInstaller({ ...parseBuildOptions({ out: join(dir, 'out'), agent: process.execPath, usb: join(dir, 'usb.img'), usbImage: [join(dir, 'gone.img')] }), log: () => {} }),
    /target image .*gone\.img does not exist/,
  );
});
