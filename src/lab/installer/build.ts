// `bootline lab build-installer`: kernel + one initramfs (+ a USB image) from Debian
// packages, the build host's node and the agent bundle. Every step says what it does on
// stderr; everything is written into a work dir beside --out and renamed into place at the
// end, so that an interrupted build leaves the previous installer intact.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync, constants, copyFileSync, createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync,
  readdirSync, readFileSync, realpathSync, renameSync, rmSync, statSync, utimesSync, writeFileSync,
} from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { DEFAULT_LAB_CACHE, fetchKernel, fetchPackage, fetchPackages } from '../debian-packages.ts';
import { onPath } from '../../which.ts';
import { assembleContents } from './contents.ts';
import { prepareModules } from './kernel-modules.ts';
import { DEFAULT_MODULES } from './modules.ts';
import { DLOPENED_LIBRARIES, INSTALLER_PACKAGES, INSTALLER_PACKAGE_FILES, aptDepends, libraryClosure } from './packages.ts';
import { addHostLibraries, checkLibraries, missingLibrariesMessage, type HostLibrary } from './libraries.ts';
import { infoArchive, packCompressed } from './pack.ts';
import { USB_DATA_LABEL, USB_TOOLS, buildUsbImage, type UsbBoot } from './usb-image.ts';
import { SIGN_TOOLS, STUB_PATH, UKI_TOOLS, buildUki, checkSigningPair, installerOsRelease } from './uki.ts';
import type { FileTree } from './tree.ts';

export class InstallerBuildError extends Error {
  override name = 'InstallerBuildError';
}

export interface BuildOptions {
  out: string;
  cache: string;
  usb?: string;
  usbImages: string[];
  usbAutoInstall?: string;
  /** Extra kernel parameters of the USB image's boot entry. */
  cmdline: string;
  modules: string[];
  agent: string;
  zstdLevel: number;
  force: boolean;
  /** Also (or with `sign`) make the installer a Unified Kernel Image. */
  uki?: boolean;
  /** Sign the UKI (netboot and USB) with this db key and certificate (PEM). */
  sign?: { key: string; cert: string };
  /** Progress lines (stderr by default). */
  log?: (line: string) => void;
}

/** The USB entry's console: serial for the lab and log captures, the screen last (it gets /dev/console). */
export const USB_BASE_CMDLINE = `console=ttyS0,115200 console=tty0 bootline.install=${USB_DATA_LABEL}`;

/** The agent bundle of this bootline: this file when bundled, else the repository's dist/. */
export function defaultAgentBundle(): string {
  const here = fileURLToPath(import.meta.url);
  return basename(here) === 'bootline.mjs' ? here : resolve(dirname(here), '../../../dist/bootline.mjs');
}

/** Commander's option values -> BuildOptions, with the checks that need no I/O. */
export function parseBuildOptions(o: Record<string, string | string[] | boolean | undefined>): BuildOptions {
  const str = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const level = Number(str('zstdLevel') ?? '15');
  if (!Number.isInteger(level) || level < 1 || level > 19) throw new InstallerBuildError(`--zstd-level must be a whole number from 1 to 19, not "${str('zstdLevel')}"`);
  const usbImages = (o.usbImage as string[] | undefined) ?? [];
  const usb = str('usb');
  if (!usb && (usbImages.length > 0 || str('usbAutoInstall'))) throw new InstallerBuildError('--usb-image and --usb-auto-install go on the USB image: give --usb <file> too');
  const [key, cert] = [str('signKey'), str('signCert')];
  if ((key === undefined) !== (cert === undefined)) throw new InstallerBuildError(`--sign-key and --sign-cert go together: give ${key === undefined ? '--sign-key <db.key>' : '--sign-cert <db.crt>'} too`);
  return {
    out: resolve(str('out') ?? 'installer'),
    cache: resolve(str('cache') ?? DEFAULT_LAB_CACHE),
    ...(usb ? { usb: resolve(usb) } : {}),
    usbImages: usbImages.map((p) => resolve(p)),
    ...(str('usbAutoInstall') ? { usbAutoInstall: resolve(str('usbAutoInstall')!) } : {}),
    cmdline: str('cmdline') ?? '',
    modules: (o.module as string[] | undefined) ?? [],
    agent: resolve(str('agent') ?? defaultAgentBundle()),
    zstdLevel: level,
    force: o.force === true,
    uki: o.uki === true || key !== undefined,
    ...(key && cert ? { sign: { key: resolve(key), cert: resolve(cert) } } : {}),
  };
}

export interface Manifest {
  format: 1;
  bootline: string;
  inputsHash: string;
  /** The part of inputsHash that decides the initramfs: a build that differs only in the USB image, the UKI or its signature reuses it. */
  initramfsHash?: string;
  kernel: { release: string; package: string; version: string };
  files: Record<'vmlinuz' | 'initrd.img', { bytes: number; sha256: string }>;
  initramfs: { archiveBytes: number; compressedBytes: number; zstdLevel: number; entries: number; largest: { path: string; bytes: number; origin: string }[] };
  packages: { name: string; version: string }[];
  node: { version: string; note: string; from: string; sha256: string; stripped: boolean; libraries: HostLibrary[] };
  modules: { load: string[]; builtin: string[]; files: number };
  sourceDateEpoch: number;
  usb?: { file: string; bytes: number; images: string[]; autoInstall: boolean; cmdline: string; boot: UsbBoot['kind'] };
  /** The netboot UKI (no built-in command line: the server's reaches the kernel). */
  uki?: { file: typeof UKI_FILE; bytes: number; sha256: string; stub: string; signed: boolean; signer?: string; sections: { name: string; virtualAddress: number; bytes: number }[] };
}

/** The netboot installer as one signed EFI image, beside vmlinuz and initrd.img in --out. */
export const UKI_FILE = 'bootline-installer.efi';

const MANIFEST = 'installer.json';

function requireTools(tools: Record<string, string>): void {
  const missing = Object.entries(tools).filter(([t]) => !onPath(t));
  if (missing.length > 0)
    throw new InstallerBuildError(`missing tools: ${missing.map(([t, p]) => `${t} (Debian package ${p})`).join(', ')} — install them: apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}`);
}

function requireFile(path: string, what: string, hint: string): void {
  try {
    if (statSync(path).isFile()) return;
  } catch {
    // reported below
  }
  throw new InstallerBuildError(`${what} ${path} does not exist or is not a file: ${hint}`);
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

export async function buildInstaller(o: BuildOptions): Promise<Manifest> {
  // Signing is for the UKI: a signing key alone asks for one.
  const wantUki = o.uki === true || o.sign !== undefined;
  const started = Date.now();
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const steps = 7 + (o.usb ? 1 : 0) + (wantUki ? 1 : 0);
  let n = 0;
  const step = (what: string) => log(`build-installer: [${++n}/${steps}] ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);

  requireTools({ zstd: 'zstd', 'apt-get': 'apt', 'dpkg-deb': 'dpkg', ...(o.usb ? USB_TOOLS : {}), ...(wantUki ? UKI_TOOLS : {}), ...(o.sign ? { ...SIGN_TOOLS, openssl: 'openssl' } : {}) });
  requireFile(o.agent, 'the agent bundle', 'run "npm run build" (it makes dist/bootline.mjs), or give --agent <file>');
  for (const img of o.usbImages) requireFile(img, 'the USB image\'s target image', 'check the --usb-image path');
  if (o.usbAutoInstall) requireFile(o.usbAutoInstall, 'the auto.install file', 'check the --usb-auto-install path');
  if (o.sign) await checkSigningPair(o.sign.key, o.sign.cert).catch((e: Error) => Promise.reject(new InstallerBuildError(e.message)));
  const work = workDir(o.out);
  const forgetSignals = removeOnSignal(work);
  try {
    step(`kernel: Debian's current amd64 kernel (cache ${o.cache})`);
    const kernel = await fetchKernel(o.cache);
    log(`  ${kernel.package.name} ${kernel.package.version} (${kernel.release})`);

    step('packages: the tools and the libraries they depend on');
    // Packages taken in part (systemd) that are not in INSTALLER_PACKAGES bring no dependencies: what their files need is there.
    const closure = await libraryClosure(Object.keys(INSTALLER_PACKAGES), aptDepends);
    const names = [...closure, ...Object.keys(INSTALLER_PACKAGE_FILES).filter((n) => !closure.includes(n))];
    const packages = await fetchPackages(names, o.cache);
    log(`  ${packages.length} packages: ${packages.map((p) => (INSTALLER_PACKAGE_FILES[p.name] ? `${p.name} (${INSTALLER_PACKAGE_FILES[p.name]!.files.length} files)` : p.name)).join(' ')}`);

    step('kernel modules');
    const modules = await prepareModules(kernel, [...DEFAULT_MODULES, ...o.modules], work);
    log(`  ${modules.load.length} to load (${modules.selection.files.length} files with their dependencies); built in: ${modules.selection.builtin.join(' ') || 'none'}`);

    step(`node runtime copied from the build host (${process.execPath}, ${process.version})`);
    const node = await nodeRuntime(o.cache);
    log(`  ${node.stripped ? 'stripped copy' : 'as is'}: ${(statSync(node.path).size / 1e6).toFixed(1)} MB`);

    step('contents: assembling the tree and checking every program\'s shared libraries');
    const tree = assembleContents({ packages, modules, node: node.path, agent: o.agent });
    const hostLibs = addHostLibraries(tree, ['usr/bin/node']);
    const check = checkLibraries(tree, DLOPENED_LIBRARIES);
    if (check.missing.length > 0) throw new InstallerBuildError(missingLibrariesMessage(check.missing));
    log(`  ${tree.entries.size} entries; ${check.programs} ELF files, all libraries present; from the host: ${hostLibs.map((l) => basename(l.path)).join(' ') || 'none'}`);

    const bootline = execFileSync(process.execPath, [o.agent, '--version'], { encoding: 'utf8' }).trim();
    const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? 0) || 0;
    const initramfsHash = hashInputs(tree, { bootline, node: node.sha256, agent: await sha256(o.agent), epoch, level: o.zstdLevel });
    const signer = o.sign ? { key: await sha256(o.sign.key), cert: await sha256(o.sign.cert) } : null;
    const inputsHash = createHash('sha256')
      .update(JSON.stringify({ initramfsHash, usb: o.usb ?? null, usbImages: o.usbImages, auto: o.usbAutoInstall ?? null, cmdline: o.cmdline, uki: wantUki, signer }))
      .digest('hex');
    const current = upToDate(o, inputsHash);
    if (current) {
      log(`build-installer: ${o.out} is up to date (same inputs, ${inputsHash.slice(0, 12)}); --force rebuilds`);
      return current;
    }

    const initrd = join(work, 'initrd.img');
    const vmlinuz = join(work, 'vmlinuz');
    const reuse = reusableInitramfs(o, initramfsHash);
    let packedFigures: Manifest['initramfs'];
    const info = { version: bootline, kernel: kernel.release, initramfsBytes: 0 };
    if (reuse) {
      step(`initramfs: the one in ${o.out} was built from the same inputs (${initramfsHash.slice(0, 12)}), reused`);
      copyFileSync(join(o.out, 'initrd.img'), initrd);
      copyFileSync(join(o.out, 'vmlinuz'), vmlinuz);
      packedFigures = reuse.initramfs;
      info.initramfsBytes = reuse.files['initrd.img'].bytes;
    } else {
      step(`packing the initramfs (cpio, zstd -${o.zstdLevel})`);
      const main = join(work, 'initrd.main');
      const packed = await packCompressed(tree, epoch, o.zstdLevel, main, (b) => log(`  ${(b / 1e6).toFixed(0)} MB packed`));
      const headLength = (await infoArchive(info, epoch)).length;
      info.initramfsBytes = headLength + packed.compressedBytes;
      const head = await infoArchive(info, epoch);
      if (head.length !== headLength) throw new Error('installer.json changed length with its size field');
      await pipeline(async function* () {
        yield head;
        yield* createReadStream(main);
      }, createWriteStream(initrd));
      rmSync(main);
      copyFileSync(kernel.vmlinuz, vmlinuz);
      packedFigures = { archiveBytes: packed.archiveBytes, compressedBytes: packed.compressedBytes, zstdLevel: o.zstdLevel, entries: tree.entries.size, largest: largest(tree, 10) };
    }
    for (const f of [initrd, vmlinuz]) utimesSync(f, epoch, epoch);
    log(`  initrd.img ${(info.initramfsBytes / 1e6).toFixed(1)} MB (${(packedFigures.archiveBytes / 1e6).toFixed(1)} MB unpacked), vmlinuz ${(statSync(vmlinuz).size / 1e6).toFixed(1)} MB`);

    const manifest: Manifest = {
      format: 1,
      bootline,
      inputsHash,
      initramfsHash,
      kernel: { release: kernel.release, package: kernel.package.name, version: kernel.package.version },
      files: {
        vmlinuz: { bytes: statSync(vmlinuz).size, sha256: await sha256(vmlinuz) },
        'initrd.img': { bytes: info.initramfsBytes, sha256: await sha256(initrd) },
      },
      initramfs: packedFigures,
      packages: packages.map((p) => ({ name: p.name, version: p.version })),
      node: { version: process.version, note: 'node runtime copied from the build host', from: node.from, sha256: node.sha256, stripped: node.stripped, libraries: hostLibs },
      modules: { load: modules.load, builtin: modules.selection.builtin, files: modules.selection.files.length },
      sourceDateEpoch: epoch,
    };

    const systemdBoot = o.usb || wantUki ? await fetchPackage('systemd-boot-efi', o.cache) : undefined;
    const ukiInput = (cmdline?: string) => {
      const stub = join(systemdBoot!.root, STUB_PATH);
      requireFile(stub, 'systemd\'s EFI stub', `${systemdBoot!.name} ${systemdBoot!.version} no longer ships it there`);
      return { stub, vmlinuz, initrd, uname: kernel.release, osrel: installerOsRelease(bootline, kernel.release), ...(cmdline !== undefined ? { cmdline } : {}), work: join(work, 'uki-'), ...(o.sign ? { sign: o.sign } : {}) };
    };
    if (wantUki) {
      step(`UKI ${UKI_FILE}: systemd-stub ${systemdBoot!.version} + kernel + initramfs${o.sign ? `, signed with ${o.sign.cert}` : ' (unsigned)'}`);
      const uki = await buildUki({ ...ukiInput(), out: join(work, UKI_FILE) });
      utimesSync(join(work, UKI_FILE), epoch, epoch);
      const subject = o.sign ? execFileSync('openssl', ['x509', '-in', o.sign.cert, '-noout', '-subject', '-nameopt', 'RFC2253'], { encoding: 'utf8' }).trim().replace(/^subject=/, '') : undefined;
      manifest.uki = { file: UKI_FILE, bytes: uki.bytes, sha256: await sha256(join(work, UKI_FILE)), stub: `${systemdBoot!.name} ${systemdBoot!.version}`, signed: uki.signed, ...(subject ? { signer: subject } : {}), sections: uki.sections };
      log(`  ${(uki.bytes / 1e6).toFixed(1)} MB, sections ${uki.sections.map((s) => `${s.name}@0x${s.virtualAddress.toString(16)}`).join(' ')}${subject ? `; signed by ${subject}` : ''}`);
    }

    if (o.usb) {
      step(`USB image ${o.usb}${wantUki ? ` (the UKI as EFI/BOOT/BOOTX64.EFI${o.sign ? ', signed' : ''})` : ''}`);
      const cmdline = [USB_BASE_CMDLINE, o.cmdline].filter(Boolean).join(' ');
      let boot: UsbBoot;
      if (wantUki) {
        // The USB form carries its command line inside the signed image: the firmware passes none.
        const file = join(work, 'usb-bootx64.efi');
        await buildUki({ ...ukiInput(cmdline), out: file });
        boot = { kind: 'uki', uki: file };
      } else {
        const bootloader = join(systemdBoot!.root, 'usr/lib/systemd/boot/efi/systemd-bootx64.efi');
        requireFile(bootloader, 'systemd-boot', `${systemdBoot!.name} ${systemdBoot!.version} no longer ships it there`);
        boot = { kind: 'systemd-boot', vmlinuz, initrd, bootloader, cmdline };
      }
      const partial = `${o.usb}.partial-${process.pid}`;
      try {
        const usb = await buildUsbImage({ file: partial, boot, images: o.usbImages, ...(o.usbAutoInstall ? { autoInstall: o.usbAutoInstall } : {}), work: join(work, 'usb'), mtime: epoch });
        renameSync(partial, o.usb);
        manifest.usb = { file: o.usb, bytes: usb.bytes, images: o.usbImages.map((p) => basename(p)), autoInstall: o.usbAutoInstall !== undefined, cmdline, boot: boot.kind };
        log(`  ${(usb.bytes / 1e6).toFixed(1)} MB: ESP ${(usb.espBytes / 1e6).toFixed(0)} MB, ${USB_DATA_LABEL} ${(usb.dataBytes / 1e6).toFixed(0)} MB`);
      } finally {
        rmSync(partial, { force: true });
      }
    }

    step(`writing ${o.out}`);
    const json = join(work, MANIFEST);
    writeJson(json, manifest);
    mkdirSync(o.out, { recursive: true });
    // A UKI left from an earlier build would be served instead of this build's kernel.
    if (!wantUki) rmSync(join(o.out, UKI_FILE), { force: true });
    // The manifest last: it says the files beside it are complete.
    for (const f of ['initrd.img', 'vmlinuz', ...(wantUki ? [UKI_FILE] : []), MANIFEST]) renameSync(join(work, f), join(o.out, f));
    log(`build-installer: done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${o.out}/vmlinuz, initrd.img (${(info.initramfsBytes / 1e6).toFixed(1)} MB)${wantUki ? `, ${UKI_FILE}` : ''}, ${MANIFEST}`);
    return manifest;
  } finally {
    forgetSignals();
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * A fresh work dir beside --out (same filesystem, so the results can be renamed into place),
 * named with this process's pid: work dirs of builds that were killed are removed here.
 */
function workDir(out: string): string {
  const parent = dirname(out);
  const prefix = `.${basename(out)}.building-`;
  try {
    mkdirSync(parent, { recursive: true });
    accessSync(parent, constants.W_OK);
    if (existsSync(out)) accessSync(out, constants.W_OK);
    for (const stale of readdirSync(parent).filter((f) => f.startsWith(prefix))) {
      const pid = Number(/^(\d+)-/.exec(stale.slice(prefix.length))?.[1]);
      if (pid && !alive(pid)) rmSync(join(parent, stale), { recursive: true, force: true });
    }
    return mkdtempSync(join(parent, `${prefix}${process.pid}-`));
  } catch (e) {
    throw new InstallerBuildError(`cannot write the installer to ${out}: ${(e as Error).message} — choose another --out or fix the permissions of ${parent}`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the work dir when the build is interrupted (Ctrl-C, SIGTERM), then ends as the signal would. */
function removeOnSignal(work: string): () => void {
  const handler = (sig: NodeJS.Signals) => {
    rmSync(work, { recursive: true, force: true });
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', handler).once('SIGTERM', handler);
  return () => process.off('SIGINT', handler).off('SIGTERM', handler);
}

/** The node binary for the installer: the build host's, stripped of its symbols when `strip` is there (cached). */
async function nodeRuntime(cache: string): Promise<{ path: string; from: string; sha256: string; stripped: boolean }> {
  const from = realpathSync(process.execPath);
  const hash = await sha256(from);
  if (!onPath('strip')) return { path: from, from, sha256: hash, stripped: false };
  const dir = join(cache, 'node');
  const path = join(dir, `node-${hash.slice(0, 16)}`);
  if (!existsSync(path)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    try {
      execFileSync('strip', ['-o', tmp, from]);
      renameSync(tmp, path);
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  return { path, from, sha256: hash, stripped: true };
}

/** A digest of everything the output depends on: the tree's listing (package files by package version) and the options. */
function hashInputs(tree: FileTree, extra: Record<string, unknown>): string {
  const h = createHash('sha256').update(JSON.stringify(extra));
  for (const p of tree.paths()) {
    const e = tree.entries.get(p)!;
    if (e.kind === 'file') h.update(`${p} file ${e.mode} ${e.size} ${e.origin}\n`);
    else if (e.kind === 'data') h.update(`${p} data ${e.mode} ${createHash('sha256').update(e.data).digest('hex')}\n`);
    else h.update(`${p} ${JSON.stringify(e)}\n`);
  }
  return h.digest('hex');
}

/** The manifest of --out when its initramfs was built from the same inputs and is there, whole. */
function reusableInitramfs(o: BuildOptions, initramfsHash: string): Manifest | undefined {
  if (o.force) return undefined;
  try {
    const m = JSON.parse(readFileSync(join(o.out, MANIFEST), 'utf8')) as Manifest;
    if (m.initramfsHash !== initramfsHash) return undefined;
    for (const f of ['vmlinuz', 'initrd.img'] as const) if (statSync(join(o.out, f)).size !== m.files[f].bytes) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

/** The manifest of --out when it was built from the same inputs and its files are there. */
function upToDate(o: BuildOptions, inputsHash: string): Manifest | undefined {
  if (o.force) return undefined;
  try {
    const m = JSON.parse(readFileSync(join(o.out, MANIFEST), 'utf8')) as Manifest;
    if (m.inputsHash !== inputsHash) return undefined;
    for (const [f, { bytes }] of Object.entries(m.files)) if (statSync(join(o.out, f)).size !== bytes) return undefined;
    if (o.usb && !existsSync(o.usb)) return undefined;
    if (m.uki && statSync(join(o.out, m.uki.file)).size !== m.uki.bytes) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function largest(tree: FileTree, count: number): Manifest['initramfs']['largest'] {
  const files: Manifest['initramfs']['largest'] = [];
  for (const [path, e] of tree.entries) if (e.kind === 'file') files.push({ path: `/${path}`, bytes: e.size, origin: e.origin });
  return files.sort((a, b) => b.bytes - a.bytes || a.path.localeCompare(b.path)).slice(0, count);
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, JSON.stringify(value, null, 2) + '\n');
}
