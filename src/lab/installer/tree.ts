// The initramfs as a map of paths to entries, built in memory and packed at the end: files
// stay where they are (in the package cache) until the packer reads them, and nothing is
// staged on disk. Paths are relative ("usr/bin/sfdisk"); the layout is merged-/usr, with
// /bin, /sbin, /lib and /lib64 as symlinks, so that packages' /bin/x and /usr/bin/y meet.
import { lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join, posix } from 'node:path';

export type Entry =
  | { kind: 'dir'; mode: number }
  | { kind: 'file'; mode: number; source: string; size: number; origin: string }
  | { kind: 'data'; mode: number; data: Buffer }
  | { kind: 'symlink'; target: string }
  | { kind: 'chardev'; mode: number; major: number; minor: number };

const MERGED: Record<string, string> = { bin: 'usr/bin', sbin: 'usr/sbin', lib: 'usr/lib', lib64: 'usr/lib64' };

/** Where a package's path lands in the merged-/usr layout. */
export function mergedPath(path: string): string {
  const p = path.replace(/^\/+|\/+$/g, '');
  const top = p.split('/')[0]!;
  return MERGED[top] ? MERGED[top] + p.slice(top.length) : p;
}

/** What an initramfs does without: documentation, translations, headers, static libraries, service files. */
const EXCLUDED = [
  /^usr\/share\/(doc|man|info|locale|lintian|bash-completion|zsh|bug|menu|pkgconfig|i18n|apport)(\/|$)/,
  /^usr\/include(\/|$)/,
  /^usr\/lib\/[^/]+\/pkgconfig(\/|$)/,
  /^usr\/lib\/[^/]+\/gconv(\/|$)/,
  /^(etc\/(init\.d|cron\.\w+|logrotate\.d|systemd)|usr\/lib\/systemd|lib\/systemd)(\/|$)/,
  /\.a$/,
];

export const isExcluded = (path: string): boolean => EXCLUDED.some((re) => re.test(path));

export class FileTree {
  readonly entries = new Map<string, Entry>();

  constructor() {
    for (const [link, target] of Object.entries(MERGED)) {
      this.dir(target);
      this.entries.set(link, { kind: 'symlink', target });
    }
  }

  /** A directory and its parents. */
  dir(path: string, mode = 0o755): void {
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      const e = this.entries.get(p);
      if (!e) this.entries.set(p, { kind: 'dir', mode: i === parts.length ? mode : 0o755 });
    }
  }

  set(path: string, entry: Entry): void {
    const parent = posix.dirname(path);
    if (parent !== '.') this.dir(parent);
    this.entries.set(path, entry);
  }

  data(path: string, data: string | Buffer, mode = 0o644): void {
    this.set(path, { kind: 'data', mode, data: Buffer.from(data) });
  }

  /** Adds a package's unpacked tree (files, symlinks, dirs), merged-/usr, without the excluded parts. */
  addTree(root: string, origin: string, filter: (path: string) => boolean = () => true): void {
    const walk = (rel: string) => {
      for (const name of readdirSync(join(root, rel)).sort()) {
        const src = rel ? `${rel}/${name}` : name;
        if (isExcluded(src) || isExcluded(mergedPath(src))) continue;
        const st = lstatSync(join(root, src));
        const dest = mergedPath(src);
        if (st.isDirectory()) walk(src);
        else if (!filter(src)) continue;
        else if (st.isSymbolicLink()) this.set(dest, { kind: 'symlink', target: readlinkSync(join(root, src)) });
        else if (st.isFile()) this.set(dest, { kind: 'file', mode: st.mode & 0o7777, source: join(root, src), size: st.size, origin });
      }
    };
    walk('');
  }

  /**
   * Adds only `paths` (as in the package: "lib/systemd/x") of a package's unpacked tree,
   * merged-/usr, whatever the exclusions say. A path the package lacks is an error.
   */
  addFiles(root: string, paths: readonly string[], origin: string): void {
    for (const src of paths) {
      let st;
      try {
        st = lstatSync(join(root, src));
      } catch {
        throw new Error(`${origin} has no file /${src} (unpacked in ${root}): the list of files taken from it (INSTALLER_PACKAGE_FILES in src/lab/installer/packages.ts) does not match this version`);
      }
      const dest = mergedPath(src);
      if (st.isSymbolicLink()) this.set(dest, { kind: 'symlink', target: readlinkSync(join(root, src)) });
      else if (st.isFile()) this.set(dest, { kind: 'file', mode: st.mode & 0o7777, source: join(root, src), size: st.size, origin });
      else throw new Error(`${origin}: /${src} is neither a file nor a symlink; INSTALLER_PACKAGE_FILES in src/lab/installer/packages.ts takes files only`);
    }
  }

  /** The entry at `path`, following symlinks (absolute ones from the tree's root). */
  resolve(path: string, depth = 0): { path: string; entry: Entry } | undefined {
    if (depth > 20) return undefined;
    const parts = path.split('/').filter(Boolean);
    let cur = '';
    for (let i = 0; i < parts.length; i++) {
      const next = cur ? `${cur}/${parts[i]}` : parts[i]!;
      const e = this.entries.get(next);
      if (!e) return undefined;
      if (e.kind === 'symlink') {
        const target = e.target.startsWith('/') ? e.target.slice(1) : posix.join(cur, e.target);
        return this.resolve([posix.normalize(target), ...parts.slice(i + 1)].join('/'), depth + 1);
      }
      cur = next;
    }
    const entry = this.entries.get(cur);
    return entry ? { path: cur, entry } : undefined;
  }

  /** Sorted paths: a parent sorts before its children, and the same tree packs to the same bytes. */
  paths(): string[] {
    return [...this.entries.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }
}
