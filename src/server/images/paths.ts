// Image names and file names from URLs (`/images/<image-name>/<file-name>`) and from the
// command line, and where they live: `<dataDir>/images/<name>/<file>`.
//
// A name is one path segment of plain characters (NAME_PATTERN: letters, digits, `.`, `-`,
// `_`, starting with a letter or digit), never `..`, a slash, a NUL or a percent-encoding:
// valid names consist of RFC 3986 unreserved characters only, so a conforming client never
// encodes them, and anything encoded in the raw URL (`%2e%2e`, `%2f`, `%00`) is refused
// before decoding can turn it into something else. On disk, the file's real path (symlinks
// resolved) must stay inside its image's directory, itself inside `<dataDir>/images`.
import { realpath, stat } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { NAME_PATTERN } from '../../api/admin.ts';

const NAME_RE = new RegExp(NAME_PATTERN);

export type NameKind = 'image name' | 'file name';

/** A refused or unresolvable image path; `statusCode` is what the HTTP answer should be. */
export class ImagePathError extends Error {
  readonly statusCode: 400 | 403 | 404;
  constructor(statusCode: 400 | 403 | 404, message: string) {
    super(message);
    this.name = 'ImagePathError';
    this.statusCode = statusCode;
  }
}

const show = (s: string): string => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);

/** Why `value` is not a valid name, or undefined when it is. */
export function nameProblem(value: string, what: NameKind = 'file name'): string | undefined {
  const hint = 'names are letters, digits, ".", "-" and "_", starting with a letter or digit, at most 128 characters';
  if (value === '') return `the ${what} is empty`;
  if (value.includes('\0')) return `the ${what} ${show(value)} contains a NUL byte`;
  if (value.includes('/') || value.includes('\\')) return `the ${what} ${show(value)} contains a slash: it must be a single path segment`;
  if (value.includes('..')) return `the ${what} ${show(value)} contains "..": path traversal is not allowed`;
  if (value.includes('%')) return `the ${what} ${show(value)} contains "%": percent-encoded characters are not allowed (${hint})`;
  if (!NAME_RE.test(value)) return `the ${what} ${show(value)} is not valid: ${hint}`;
  return undefined;
}

/** `value` when it is a valid name; else an ImagePathError (400) saying why. */
export function checkName(value: string, what: NameKind = 'file name'): string {
  const problem = nameProblem(value, what);
  if (problem) throw new ImagePathError(400, problem);
  return value;
}

/**
 * The image and file names of a raw request URL `.../images/<name>/<file>[?query]` (the last two
 * path segments, so a mount prefix does not matter), checked before any decoding.
 */
export function parseImageUrl(rawUrl: string): { name: string; file: string } {
  const q = rawUrl.search(/[?#]/);
  const path = q === -1 ? rawUrl : rawUrl.slice(0, q);
  const segs = path.split('/');
  if (segs.length < 3 || segs[segs.length - 3] !== 'images') {
    throw new ImagePathError(400, `${show(path)} is not an image path: expected /images/<image-name>/<file-name>`);
  }
  const name = segs[segs.length - 2] as string;
  const file = segs[segs.length - 1] as string;
  return { name: checkName(name, 'image name'), file: checkName(file, 'file name') };
}

/** `<dataDir>/images`: every image's directory is in here. */
export function imagesRoot(dataDir: string): string {
  return join(dataDir, 'images');
}

/** `<dataDir>/images/<name>` (the name checked). */
export function imageDir(dataDir: string, name: string): string {
  return join(imagesRoot(dataDir), checkName(name, 'image name'));
}

/** `<dataDir>/images/<name>/<file>` (both names checked); nothing on disk is looked at. */
export function imageFilePath(dataDir: string, name: string, file: string): string {
  return join(imageDir(dataDir, name), checkName(file, 'file name'));
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

/**
 * The real path of `<dataDir>/images/<name>/<file>`: symlinks resolved, and refused (403) when
 * the result leaves the image's directory (a symlinked file or image directory pointing
 * elsewhere), 404 when it does not exist or is not a regular file. A symlink to another file in
 * the same image directory is allowed.
 */
export async function resolveImageFile(dataDir: string, name: string, file: string): Promise<string> {
  checkName(name, 'image name');
  checkName(file, 'file name');
  let root: string;
  try {
    root = await realpath(imagesRoot(dataDir));
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') throw new ImagePathError(404, `image "${name}" has no file "${file}"`);
    throw e;
  }
  const dir = join(root, name);
  let real: string;
  try {
    real = await realpath(join(dir, file));
  } catch (e) {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new ImagePathError(404, `image "${name}" has no file "${file}"`);
    if (code === 'ELOOP') throw new ImagePathError(403, `image "${name}" file "${file}" is a symlink loop: refused`);
    throw e;
  }
  if (!real.startsWith(dir + sep)) {
    throw new ImagePathError(403, `image "${name}" file "${file}" resolves outside the image's directory (a symlink): refused`);
  }
  const st = await stat(real);
  if (!st.isFile()) throw new ImagePathError(404, `image "${name}" file "${file}" is not a regular file`);
  return real;
}
