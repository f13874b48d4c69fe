// `bootline image add`: puts an image file into the data dir and describes it.
//
// The file keeps its name: `disk.wic.zst` registered as `line-a` becomes
// `<dataDir>/images/line-a/disk.wic.zst`, served at /images/line-a/disk.wic.zst, with its bmap
// and signature beside it under names the agent (and bmaptool) look for:
// - the bmap: one given (or found beside the file as bmaptool finds it: `<file>.bmap`, then
//   with one extension dropped at a time) keeps its name when it is one of those candidates,
//   else becomes `<file>.bmap`; a raw (uncompressed, by magic bytes) sparse file without one
//   gets `<file>.bmap` created from its allocation map (SEEK_DATA/SEEK_HOLE);
// - the signature, `bootline image sign`'s format: over the bmap as `<bmap>.ed25519.sig`, or,
//   without a bmap, over `sha256:<digest of the decompressed image>` as `<file>.ed25519.sig`.
//   Without a sign key, a signature already beside the given bmap (or file) is carried along.
//
// The file is hard-linked into place when it is on the same file system (a copy otherwise,
// holes kept); with `move`, the original name is removed afterwards. A hard link shares the
// file: rewriting the original in place afterwards changes what is served (and the ETag, so
// resuming clients notice), but not the registered sha256.
//
// Everything is written under temporary names (`.<name>.tmp-<random>`, which are never
// served: names cannot start with a dot) and renamed into place at the end, sidecars first;
// any failure removes what was written, and the image directory when this call created it.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { link, lstat, mkdir, open, readFile, rename, rmdir, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Image } from '../../api/admin.ts';
import { createBmap } from '../../image/create.ts';
import { formatBmap } from '../../image/bmap/write.ts';
import { parseBmap } from '../../image/bmap/parse.ts';
import { dataExtents, type Extent } from '../../image/holes.ts';
import { decompressor, detectCompression } from '../../image/decompress/index.ts';
import { readFileHead } from '../../image/decompress/file-head.ts';
import { bmapCandidates } from '../../image/sources/find-bmap.ts';
import { sha256Payload, sign, SIGNATURE_SUFFIX } from '../../image/signature.ts';
import type { Compression } from '../../image/types.ts';
import { imageDir, imagesRoot, nameProblem } from './paths.ts';

type ImageFile = Image['files'][number];

export interface RegisterImageOptions {
  /** The server's data dir; the image goes to `<dataDir>/images/<name>/`. */
  dataDir: string;
  /** The image file to register. */
  file: string;
  /** Image name (default: the file name without its extensions, `disk.wic.zst` -> `disk`). */
  name?: string;
  version?: string;
  /**
   * A bmap file for the image; default: the one beside it (as bmaptool finds it), else one is
   * created for a raw sparse file. `false`: no bmap at all.
   */
  bmap?: string | false;
  /** An ed25519 private key (a PEM file's path, or the PEM text itself) to sign with. */
  signKey?: string;
  /** Move the file instead of leaving the original in place. */
  move?: boolean;
  /** Overwrite an image file of the same name whose content differs (else refused). */
  replace?: boolean;
  /**
   * The image's current record, when it is registered already: its other files are kept in the
   * returned record (this file's entry is replaced). Without it, the record lists this file only.
   */
  existing?: Image;
  /** Time for `createdAt` (tests); default now. */
  now?: Date;
}

/** A registration that was refused; nothing was written. */
export class RegisterImageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RegisterImageError';
  }
}

const CHUNK = 1024 * 1024;
const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

/** `disk.wic.zst` -> `disk`: the file name up to its first dot. */
export function defaultImageName(file: string): string {
  const base = basename(file);
  const dot = base.indexOf('.', 1);
  return dot === -1 ? base : base.slice(0, dot);
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if (errno(e) === 'ENOENT') return false;
    throw e;
  }
}

async function regularFile(path: string, what: string): Promise<{ size: number; dev: number; ino: number }> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') throw new RegisterImageError(`${what} not found: ${path}`);
    throw e;
  }
  if (!st.isFile()) throw new RegisterImageError(`${what} ${path} is not a regular file`);
  return { size: st.size, dev: st.dev, ino: st.ino };
}

/** sha256 (hex) of a whole file, read in 1 MiB chunks. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path, { highWaterMark: CHUNK }), new Writable({ write: (c: Buffer, _e, cb) => (h.update(c), cb()) }));
  return h.digest('hex');
}

/** sha256 (hex) of the decompressed content of a compressed file. */
async function sha256Decompressed(path: string, kind: Compression): Promise<string> {
  const h = createHash('sha256');
  const d = decompressor(kind);
  await pipeline(createReadStream(path, { highWaterMark: CHUNK }), d.stream, new Writable({ write: (c: Buffer, _e, cb) => (h.update(c), cb()) }));
  return h.digest('hex');
}

async function extentsOf(path: string, size: number): Promise<{ extents: Extent[]; exact: boolean }> {
  try {
    return { extents: await dataExtents(path), exact: true };
  } catch {
    // No seek-data addon: copy every byte (a bmap cannot be created then either; createBmap says why).
    return { extents: size > 0 ? [{ start: 0, end: size }] : [], exact: false };
  }
}

/**
 * Copies `src` to the new file `dst`, writing only the data extents (holes stay holes) and
 * hashing the whole content (holes as zeros) in the same pass; fsyncs `dst`.
 */
async function copySparse(src: string, dst: string, size: number): Promise<string> {
  const { extents } = await extentsOf(src, size);
  const h = createHash('sha256');
  const zeros = Buffer.alloc(CHUNK);
  const hashZeros = (n: number) => {
    for (; n > 0; n -= CHUNK) h.update(n >= CHUNK ? zeros : zeros.subarray(0, n));
  };
  const buf = Buffer.allocUnsafe(CHUNK);
  let input: FileHandle | undefined;
  let output: FileHandle | undefined;
  try {
    input = await open(src, 'r');
    output = await open(dst, 'wx', 0o644);
    let pos = 0;
    for (const e of extents) {
      hashZeros(e.start - pos);
      pos = e.start;
      while (pos < e.end) {
        const { bytesRead } = await input.read(buf, 0, Math.min(CHUNK, e.end - pos), pos);
        if (bytesRead === 0) throw new Error(`${src} shrank while it was being copied (no data at byte ${pos}); is something writing to it?`);
        h.update(buf.subarray(0, bytesRead));
        let written = 0;
        while (written < bytesRead) written += (await output.write(buf, written, bytesRead - written, pos + written)).bytesWritten;
        pos += bytesRead;
      }
    }
    hashZeros(size - pos);
    await output.truncate(size);
    await output.sync();
  } finally {
    await input?.close();
    await output?.close();
  }
  return h.digest('hex');
}

async function writeSynced(path: string, data: Buffer | string): Promise<void> {
  const fh = await open(path, 'wx', 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the renames are still atomic.
  } finally {
    await fh.close();
  }
}

/**
 * Registers `file` under `<dataDir>/images/<name>/` (see the top of this file) and returns the
 * image's record; the caller stores it (`store.putImage`). Throws RegisterImageError for what
 * the operator must fix (bad name, missing file, different content without `replace`).
 */
export async function registerImage(opts: RegisterImageOptions): Promise<Image> {
  const src = opts.file;
  const base = basename(src);
  const name = opts.name ?? defaultImageName(src);
  const nameIssue = nameProblem(name, 'image name');
  if (nameIssue) throw new RegisterImageError(`${nameIssue}${opts.name === undefined ? ` (taken from the file name; pass a name)` : ''}`);
  const fileIssue = nameProblem(base, 'file name');
  if (fileIssue) throw new RegisterImageError(`${fileIssue}: files keep their names when served, so rename the file`);
  const source = await regularFile(src, 'image file');
  if (opts.existing && opts.existing.name !== name) {
    throw new RegisterImageError(`the existing record given is image "${opts.existing.name}", not "${name}"`);
  }

  const compression = detectCompression(await readFileHead(src));

  // The bmap to take along, if any, and the name it gets beside the image.
  let bmapSource: string | undefined;
  if (typeof opts.bmap === 'string') {
    await regularFile(opts.bmap, 'bmap file');
    bmapSource = opts.bmap;
  } else if (opts.bmap !== false) {
    for (const c of bmapCandidates(src)) {
      if (await stat(c).then((s) => s.isFile(), () => false)) {
        bmapSource = c;
        break;
      }
    }
  }
  let bmapBytes: Buffer | undefined;
  let bmapName: string | undefined;
  if (bmapSource) {
    bmapBytes = await readFile(bmapSource);
    let parsed;
    try {
      parsed = parseBmap(bmapBytes.toString('utf8'), bmapSource);
    } catch (e) {
      throw new RegisterImageError(`${bmapSource} is not a usable bmap: ${(e as Error).message}`);
    }
    if (compression === 'none' && parsed.imageSize !== source.size) {
      throw new RegisterImageError(`the bmap ${bmapSource} describes an image of ${parsed.imageSize} bytes, but ${src} has ${source.size}: it belongs to another image`);
    }
    const own = basename(bmapSource);
    bmapName = bmapCandidates(base).includes(own) ? own : `${base}.bmap`;
  }

  const dir = imageDir(opts.dataDir, name);
  const target = join(dir, base);
  const targetExisted = await exists(target);
  if (targetExisted && !opts.replace) {
    const old = await stat(target);
    if (old.isFile() && old.size !== source.size) {
      throw new RegisterImageError(`image "${name}" already has a file ${base} with different content (${old.size} bytes, this one ${source.size}); pass replace to overwrite it`);
    }
  }

  await mkdir(imagesRoot(opts.dataDir), { recursive: true });
  let createdDir = false;
  try {
    await mkdir(dir);
    createdDir = true;
  } catch (e) {
    if (errno(e) !== 'EEXIST') throw e;
  }

  const tag = randomBytes(6).toString('hex');
  const temp = (file: string) => join(dir, `.${file}.tmp-${tag}`);
  const temps: string[] = [];
  /** [temporary, final] in the order they are renamed. */
  const commits: [string, string][] = [];
  /** Final names renamed into place that did not exist before: removed again if a later step fails. */
  const placed: string[] = [];
  let committed = false;
  try {
    // The image: a hard link when the file system allows it, else a sparse copy.
    const imageTemp = temp(base);
    temps.push(imageTemp);
    let linked = false;
    try {
      await link(src, imageTemp);
      linked = true;
    } catch (e) {
      if (!['EXDEV', 'EPERM', 'EACCES', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes(errno(e) ?? '')) throw e;
    }
    const sha256 = linked ? await sha256File(imageTemp) : await copySparse(src, imageTemp, source.size);

    if (targetExisted && !opts.replace) {
      const old = await stat(target);
      const same = (old.dev === source.dev && old.ino === source.ino) || (await sha256File(target)) === sha256;
      if (!same) throw new RegisterImageError(`image "${name}" already has a file ${base} with different content; pass replace to overwrite it`);
    }

    // A bmap for a raw sparse file that came without one.
    let created = false;
    if (!bmapBytes && opts.bmap !== false && compression === 'none' && source.size > 0) {
      const { extents, exact } = await extentsOf(imageTemp, source.size);
      const mapped = extents.reduce((n, e) => n + (e.end - e.start), 0);
      if (exact && mapped < source.size) {
        bmapBytes = Buffer.from(formatBmap(await createBmap(imageTemp)), 'utf8');
        bmapName = `${base}.bmap`;
        created = true;
      }
    }
    if (bmapBytes && bmapName) {
      const t = temp(bmapName);
      temps.push(t);
      await writeSynced(t, bmapBytes);
      commits.push([t, join(dir, bmapName)]);
    }

    // The signature: made with the key, or carried along from beside the (unchanged) bmap or file.
    let signatureName: string | undefined;
    let signatureText: Buffer | string | undefined;
    if (opts.signKey) {
      const pem = opts.signKey.includes('-----BEGIN') ? opts.signKey : await readFile(opts.signKey, 'utf8').catch((e: unknown) => {
        throw new RegisterImageError(`cannot read the sign key ${opts.signKey}: ${(e as Error).message}`);
      });
      if (bmapBytes && bmapName) {
        signatureText = sign(bmapBytes, pem, 'bmap');
        signatureName = `${bmapName}${SIGNATURE_SUFFIX}`;
      } else {
        const digest = compression === 'none' ? sha256 : await sha256Decompressed(imageTemp, compression);
        signatureText = sign(sha256Payload(digest), pem, 'sha256');
        signatureName = `${base}${SIGNATURE_SUFFIX}`;
      }
    } else if (!created) {
      const beside = bmapSource ? `${bmapSource}${SIGNATURE_SUFFIX}` : `${src}${SIGNATURE_SUFFIX}`;
      if (await stat(beside).then((s) => s.isFile(), () => false)) {
        signatureText = await readFile(beside);
        signatureName = bmapName ? `${bmapName}${SIGNATURE_SUFFIX}` : `${base}${SIGNATURE_SUFFIX}`;
      }
    }
    if (signatureText !== undefined && signatureName) {
      const t = temp(signatureName);
      temps.push(t);
      await writeSynced(t, signatureText);
      commits.push([t, join(dir, signatureName)]);
    }
    // The image last: once it is there under its name, so are its sidecars.
    commits.push([imageTemp, target]);

    // Sidecars a previous registration of this file left, which would now be stale.
    const stale = new Set<string>();
    if (targetExisted) {
      for (const f of [`${base}.bmap`, `${base}.bmap${SIGNATURE_SUFFIX}`, `${base}${SIGNATURE_SUFFIX}`]) stale.add(f);
      const old = opts.existing?.files.find((f) => f.name === base);
      if (old?.bmap) stale.add(old.bmap);
      if (old?.signature) stale.add(old.signature);
      for (const [, final] of commits) stale.delete(basename(final));
      // A sidecar another file of the image still uses stays.
      for (const f of opts.existing?.files ?? []) {
        if (f.name === base) continue;
        if (f.bmap) stale.delete(f.bmap);
        if (f.signature) stale.delete(f.signature);
      }
    }

    for (const [t, final] of commits) {
      const fresh = !(await exists(final));
      await rename(t, final);
      temps.splice(temps.indexOf(t), 1);
      if (fresh) placed.push(final);
      // rename() onto another link of the same file does nothing and leaves `t`.
      await unlink(t).catch(() => undefined);
    }
    committed = true;
    for (const f of stale) {
      if (nameProblem(f) === undefined) await unlink(join(dir, f)).catch(() => undefined);
    }
    await syncDir(dir);
    if (opts.move) await unlink(src);

    const entry: ImageFile = {
      name: base,
      size: source.size,
      sha256,
      ...(bmapName ? { bmap: bmapName } : {}),
      ...(signatureName ? { signature: signatureName } : {}),
    };
    const others = (opts.existing?.files ?? []).filter((f) => f.name !== base);
    const version = opts.version ?? opts.existing?.version;
    return {
      name,
      ...(version !== undefined ? { version } : {}),
      files: [...others, entry],
      location: 'local',
      createdAt: opts.existing?.createdAt ?? (opts.now ?? new Date()).toISOString(),
    };
  } catch (e) {
    if (!committed) {
      for (const t of [...temps, ...placed]) await unlink(t).catch(() => undefined);
      if (createdDir) await rmdir(dir).catch(() => undefined);
    }
    throw e;
  }
}
