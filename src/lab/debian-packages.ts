// Debian packages as the lab's building material: `apt-get download` one package at the
// version apt would install, unpack it with `dpkg-deb -x`, and keep both in a cache keyed
// by name and version — nothing is installed on the build machine, and a second build
// with the same package lists reuses what it has.
import { execFile as execFileCb } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { onPath } from '../which.ts';

const execFile = promisify(execFileCb);

/** Where the lab keeps downloaded .debs and their unpacked trees, unless told otherwise. */
export const DEFAULT_LAB_CACHE = process.env.BOOTLINE_LAB_CACHE ?? '/var/cache/bootline-lab';

export class DebianPackageError extends Error {
  override name = 'DebianPackageError';
}

export interface UnpackedPackage {
  name: string;
  version: string;
  /** The .deb file in the cache. */
  deb: string;
  /** The package's files, unpacked (dpkg-deb -x) into this directory. */
  root: string;
}

function requireTools(): void {
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb'])
    if (!onPath(tool)) throw new DebianPackageError(`${tool} is not installed: the lab builds from Debian packages and needs apt and dpkg (a Debian system)`);
}

/** The version of `name` that apt would install (its candidate), from the local package lists. */
export async function candidateVersion(name: string): Promise<string> {
  requireTools();
  const { stdout } = await execFile('apt-cache', ['policy', name], { encoding: 'utf8' });
  const m = /^\s*Candidate:\s*(\S+)/m.exec(stdout);
  if (!m || m[1] === '(none)')
    throw new DebianPackageError(`Debian package ${name} is not known to apt here: run "apt-get update" (as root) and check the name`);
  return m[1]!;
}

/** The package a virtual package or metapackage (e.g. linux-image-amd64) depends on first, matching `pattern`. */
export async function resolveDependency(name: string, pattern: RegExp): Promise<string> {
  requireTools();
  const { stdout } = await execFile('apt-cache', ['depends', name], { encoding: 'utf8' });
  for (const line of stdout.split('\n')) {
    const m = /^\s*Depends:\s*(\S+)/.exec(line);
    if (m && pattern.test(m[1]!)) return m[1]!;
  }
  throw new DebianPackageError(`${name} depends on no package matching ${pattern}: run "apt-get update" (as root) and check the name`);
}

/** The path-safe form of a version (epochs have ":"). */
const safeVersion = (v: string) => v.replace(/[^A-Za-z0-9.+~-]/g, '_');

/**
 * Downloads (once) and unpacks (once) `name` at apt's candidate version into `cache`.
 * Each step writes into a temp name and renames, so an interrupted build leaves no
 * half-unpacked tree that a later build would trust.
 */
export async function fetchPackage(name: string, cache = DEFAULT_LAB_CACHE): Promise<UnpackedPackage> {
  const version = await candidateVersion(name);
  const debDir = join(cache, 'debs');
  const treeDir = join(cache, 'trees');
  mkdirSync(debDir, { recursive: true });
  mkdirSync(treeDir, { recursive: true });
  const key = `${name}_${safeVersion(version)}`;
  const deb = join(debDir, `${key}.deb`);
  if (!existsSync(deb)) {
    const tmp = join(debDir, `.download-${key}-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp);
    try {
      await execFile('apt-get', ['download', '-q', `${name}=${version}`], { cwd: tmp, encoding: 'utf8', maxBuffer: 16 << 20 });
      const got = readdirSync(tmp).filter((f) => f.endsWith('.deb'));
      if (got.length !== 1) throw new DebianPackageError(`apt-get download ${name}=${version} left ${got.length} .deb files in ${tmp}`);
      renameSync(join(tmp, got[0]!), deb);
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new DebianPackageError(
        `could not download Debian package ${name} ${version}: ${(err.stderr ?? err.message).trim().split('\n').pop()} — check that the Debian mirror is reachable and run "apt-get update"`,
      );
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  const root = join(treeDir, key);
  if (!existsSync(root)) {
    const tmp = `${root}.unpacking-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    try {
      await execFile('dpkg-deb', ['-x', deb, tmp]);
      renameSync(tmp, root);
    } catch (e) {
      rmSync(tmp, { recursive: true, force: true });
      throw new DebianPackageError(`could not unpack ${deb}: ${(e as Error).message.split('\n')[0]} — delete it to download it again`);
    }
  }
  return { name, version, deb, root };
}

export interface DebianKernel {
  package: UnpackedPackage;
  /** e.g. 6.1.0-41-amd64 */
  release: string;
  /** The kernel image (bzImage with EFI stub). */
  vmlinuz: string;
  /** /lib/modules/<release> in the unpacked package. */
  modules: string;
}

/** Debian's current amd64 kernel (what linux-image-amd64 points at), unpacked. */
export async function fetchKernel(cache = DEFAULT_LAB_CACHE): Promise<DebianKernel> {
  const name = await resolveDependency('linux-image-amd64', /^linux-image-\d/);
  const pkg = await fetchPackage(name, cache);
  const boot = join(pkg.root, 'boot');
  const image = readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
  if (!image) throw new DebianPackageError(`${pkg.deb} holds no /boot/vmlinuz-*: is ${name} a kernel package?`);
  const release = image.slice('vmlinuz-'.length);
  return { package: pkg, release, vmlinuz: join(boot, image), modules: join(pkg.root, 'lib', 'modules', release) };
}
