// Every program in the initramfs must find its shared libraries there: read each ELF's
// interpreter and DT_NEEDED names and look them up in the tree's library directories. A
// missing one fails the build, naming the program and the library, instead of a device
// failing later with "error while loading shared libraries".
//
// Programs copied from the build host (node) bring the libraries they need from the host,
// for those the Debian packages do not already provide.
import { closeSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import { elfNeeds, isElf, type ElfNeeds } from './elf.ts';
import { mergedPath, type FileTree } from './tree.ts';

/** Where the dynamic loader looks, in the merged-/usr tree (Debian's multiarch first). */
const LIB_DIRS = ['usr/lib/x86_64-linux-gnu', 'usr/lib64', 'usr/lib'];
/** Where the host's libraries are. */
const HOST_LIB_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib'];

export class MissingLibraryError extends Error {
  override name = 'MissingLibraryError';
}

function readNeeds(source: string): ElfNeeds | undefined {
  const fd = openSync(source, 'r');
  try {
    const head = Buffer.alloc(4);
    if (readSync(fd, head, 0, 4, 0) < 4 || !isElf(head)) return undefined;
  } finally {
    closeSync(fd);
  }
  return elfNeeds(readFileSync(source));
}

/** The library's path in the tree: in the program's RUNPATH directories first, then where the loader looks. */
const findLibrary = (tree: FileTree, soname: string, runpath: readonly string[] = []): string | undefined =>
  [...runpath.map(mergedPath), ...LIB_DIRS].map((d) => `${d}/${soname}`).find((p) => tree.resolve(p)?.entry.kind === 'file');

export interface HostLibrary {
  /** Path in the initramfs. */
  path: string;
  /** The host file it was copied from. */
  from: string;
  /** The host program that needed it. */
  for: string;
}

/**
 * Adds to the tree the host libraries (and dynamic loader) that `programPaths` (already in
 * the tree, copied from the host) need and the tree lacks, transitively. Returns what was added.
 */
export function addHostLibraries(tree: FileTree, programPaths: string[]): HostLibrary[] {
  const added: HostLibrary[] = [];
  const todo = programPaths.map((p) => ({ path: p, program: p }));
  while (todo.length > 0) {
    const { path, program } = todo.pop()!;
    const e = tree.resolve(path)?.entry;
    if (e?.kind !== 'file') continue;
    const needs = readNeeds(e.source);
    if (needs?.interpreter && tree.resolve(needs.interpreter)?.entry.kind !== 'file') {
      const real = realpathSync(needs.interpreter);
      const dest = mergedPath(needs.interpreter);
      tree.set(dest, { kind: 'file', mode: 0o755, source: real, size: statSync(real).size, origin: 'build host' });
      added.push({ path: dest, from: real, for: basename(program) });
    }
    for (const soname of needs?.needed ?? []) {
      if (findLibrary(tree, soname, needs?.runpath)) continue;
      const host = HOST_LIB_DIRS.map((d) => `${d}/${soname}`).find((p) => {
        try {
          return statSync(p).isFile();
        } catch {
          return false;
        }
      });
      if (!host) throw new MissingLibraryError(`${program} needs ${soname}, which neither the installer's packages nor this host (${HOST_LIB_DIRS.join(', ')}) have`);
      const real = realpathSync(host);
      const dest = `${LIB_DIRS[0]}/${soname}`;
      tree.set(dest, { kind: 'file', mode: 0o644, source: real, size: statSync(real).size, origin: 'build host' });
      added.push({ path: dest, from: real, for: basename(program) });
      todo.push({ path: dest, program });
    }
  }
  return added.sort((a, b) => a.path.localeCompare(b.path));
}

export interface LibraryCheck {
  /** ELF files examined. */
  programs: number;
  missing: { program: string; library: string; origin: string }[];
}

/**
 * Checks every ELF file of the tree (kernel modules aside) against the tree's libraries,
 * and the programs of `dlopened` that are in the tree for the libraries they load with dlopen.
 */
export function checkLibraries(tree: FileTree, dlopened: Record<string, readonly string[]> = {}): LibraryCheck {
  const result: LibraryCheck = { programs: 0, missing: [] };
  for (const [path, e] of tree.entries) {
    if (e.kind !== 'file' || path.startsWith('usr/lib/modules/')) continue;
    const needs = readNeeds(e.source);
    if (!needs) continue;
    result.programs++;
    if (needs.interpreter && tree.resolve(needs.interpreter)?.entry.kind !== 'file')
      result.missing.push({ program: path, library: needs.interpreter, origin: e.origin });
    for (const soname of needs.needed)
      if (!findLibrary(tree, soname, needs.runpath)) result.missing.push({ program: path, library: soname, origin: e.origin });
  }
  for (const [program, sonames] of Object.entries(dlopened)) {
    const e = tree.entries.get(program);
    if (e?.kind !== 'file') continue;
    for (const soname of sonames)
      if (!findLibrary(tree, soname)) result.missing.push({ program, library: `${soname} (loaded with dlopen)`, origin: e.origin });
  }
  return result;
}

/** The build error for a failed check: what is missing, where, and what to do. */
export function missingLibrariesMessage(missing: LibraryCheck['missing']): string {
  const lines = missing.slice(0, 20).map((m) => `  /${m.program} (from ${m.origin}) needs ${m.library}`);
  if (missing.length > 20) lines.push(`  ... and ${missing.length - 20} more`);
  return (
    `the installer would not run: ${missing.length} shared librar${missing.length === 1 ? 'y is' : 'ies are'} missing from it:\n${lines.join('\n')}\n` +
    'add the Debian package that ships each library (apt-file search <library>) to INSTALLER_PACKAGES in src/lab/installer/packages.ts'
  );
}
