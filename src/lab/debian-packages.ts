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

/**
 * Runs apt-cache with its binary package cache kept in the lab cache. Debian's container images
 * turn that cache off (Dir::Cache::pkgcache ""), and then every apt-cache call parses all the
 * package lists again: 1.1-1.7 s each here, about ten of them per installer build. apt checks
 * the kept cache against the lists itself and rebuilds it when they change.
 */
export async function aptCache(args: string[], maxBuffer = 64 << 20): Promise<string> {
  const dir = join(DEFAULT_LAB_CACHE, 'apt');
  let keep: string[] = [];
  try {
    mkdirSync(dir, { recursive: true });
    keep = ['-o', `Dir::Cache::pkgcache=${join(dir, 'pkgcache.bin')}`, '-o', `Dir::Cache::srcpkgcache=${join(dir, 'srcpkgcache.bin')}`];
  } catch {
    // not writable here: apt-cache as configured, only slower
  }
  const { stdout } = await execFile('apt-cache', [...keep, ...args], { encoding: 'utf8', maxBuffer });
  return stdout;
}

function requireTools(): void {
  for (const tool of ['apt-get', 'apt-cache', 'dpkg-deb'])
    if (!onPath(tool)) throw new DebianPackageError(`${tool} is not installed: the lab builds from Debian packages and needs apt and dpkg (a Debian system)`);
}

/** The version of `name` that apt would install (its candidate), from the local package lists. */
export async function candidateVersion(name: string): Promise<string> {
  requireTools();
  const stdout = await aptCache(['policy', name]);
  const m = /^\s*Candidate:\s*(\S+)/m.exec(stdout);
  if (!m || m[1] === '(none)')
    throw new DebianPackageError(`Debian package ${name} is not known to apt here: run "apt-get update" (as root) and check the name`);
  return m[1]!;
}

/** `apt-cache policy` output for several packages -> each one's candidate version. */
export function parseCandidates(text: string): Map<string, string> {
  const out = new Map<string, string>();
  let pkg: string | undefined;
  for (const line of text.split('\n')) {
    const head = /^(\S+):$/.exec(line);
    if (head) pkg = head[1];
    const m = /^\s*Candidate:\s*(\S+)/.exec(line);
    if (m && pkg && m[1] !== '(none)') out.set(pkg, m[1]!);
  }
  return out;
}

/** Candidate versions of many packages in one call (apt-cache takes about a second to start). */
export async function candidateVersions(names: string[]): Promise<Map<string, string>> {
  requireTools();
  const stdout = await aptCache(['policy', ...names]);
  const versions = parseCandidates(stdout);
  const unknown = names.filter((n) => !versions.has(n));
  if (unknown.length > 0)
    throw new DebianPackageError(`Debian package${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} ${unknown.length > 1 ? 'are' : 'is'} not known to apt here: run "apt-get update" (as root) and check the name`);
  return versions;
}

/** The package a virtual package or metapackage (e.g. linux-image-amd64) depends on first, matching `pattern`. */
export async function resolveDependency(name: string, pattern: RegExp): Promise<string> {
  requireTools();
  const stdout = await aptCache(['depends', name]);
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
export async function fetchPackage(name: string, cache = DEFAULT_LAB_CACHE, version?: string): Promise<UnpackedPackage> {
  version ??= await candidateVersion(name);
  const { debDir, treeDir } = cacheDirs(cache);
  const key = `${name}_${safeVersion(version)}`;
  const deb = join(debDir, `${key}.deb`);
  if (!existsSync(deb)) await download([{ name, version }], debDir);
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

/**
 * Several packages at apt's candidate versions: one apt-cache call for the versions, one
 * apt-get call for the downloads missing from the cache, then each is unpacked (once).
 */
export async function fetchPackages(names: string[], cache = DEFAULT_LAB_CACHE): Promise<UnpackedPackage[]> {
  const versions = await candidateVersions(names);
  const { debDir } = cacheDirs(cache);
  const missing = names.map((name) => ({ name, version: versions.get(name)! })).filter((p) => !existsSync(join(debDir, `${p.name}_${safeVersion(p.version)}.deb`)));
  if (missing.length > 0) await download(missing, debDir);
  const out: UnpackedPackage[] = [];
  for (const name of names) out.push(await fetchPackage(name, cache, versions.get(name)!));
  return out;
}

function cacheDirs(cache: string): { debDir: string; treeDir: string } {
  const debDir = join(cache, 'debs');
  const treeDir = join(cache, 'trees');
  mkdirSync(debDir, { recursive: true });
  mkdirSync(treeDir, { recursive: true });
  return { debDir, treeDir };
}

/** Downloads packages with one apt-get call into a temp dir, then renames each .deb into the cache. */
async function download(pkgs: { name: string; version: string }[], debDir: string): Promise<void> {
  const tmp = join(debDir, `.download-${process.pid}-${Date.now()}`);
  mkdirSync(tmp);
  try {
    await execFile('apt-get', ['download', '-q', ...pkgs.map((p) => `${p.name}=${p.version}`)], { cwd: tmp, encoding: 'utf8', maxBuffer: 16 << 20 });
    const got = readdirSync(tmp).filter((f) => f.endsWith('.deb'));
    for (const p of pkgs) {
      // apt names the file <name>_<version, ":" as %3a>_<arch>.deb
      const file = got.find((f) => f.startsWith(`${p.name}_`));
      if (!file) throw new DebianPackageError(`apt-get download ${p.name}=${p.version} left no .deb in ${tmp}`);
      renameSync(join(tmp, file), join(debDir, `${p.name}_${safeVersion(p.version)}.deb`));
    }
  } catch (e) {
    if (e instanceof DebianPackageError) throw e;
    const err = e as { stderr?: string; message: string };
    const what = pkgs.length === 1 ? `Debian package ${pkgs[0]!.name} ${pkgs[0]!.version}` : `${pkgs.length} Debian packages`;
    throw new DebianPackageError(
      `could not download ${what}: ${(err.stderr ?? err.message).trim().split('\n').pop()} — check that the Debian mirror is reachable and run "apt-get update"`,
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
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
