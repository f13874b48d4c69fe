// Finds the sha256 published next to an image: "<image>.sha256sum", "<image>.sha256", then a
// "SHA256SUMS" in the same directory, locally or remotely (http(s), ftp, s3). The digest is of
// the file as stored (`sha256sum product.wic.zst > product.wic.zst.sha256sum`), so the engine
// checks it against the source bytes before decompression (copyImage's `sourceSha256`).
import type { Readable } from 'node:stream';
import type { SourceOptions } from '../types.ts';
import { openSource } from './open.ts';

/** A checksum file is small; anything bigger is a mistake (or not a checksum file). */
export const MAX_SIDECAR_BYTES = 1024 * 1024;

export interface Sha256Sidecar {
  /** Lower-case hex. */
  sha256: string;
  /** The sidecar it came from, for messages (credentials removed). */
  from: string;
}

/** One entry of a checksum file: the digest and the name it is for (undefined on a bare-hex line). */
export interface Sha256Entry {
  sha256: string;
  name: string | undefined;
  line: number;
}

const HEX64 = /^[0-9a-fA-F]{64}$/;

/** GNU sha256sum escapes "\\" and "\n" (and, since coreutils 9, "\r") in names, marking the line with a leading "\". */
function unescapeName(name: string): string {
  return name.replace(/\\(.)/g, (_m, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
}

/**
 * Parses `sha256sum` output: `<hex>  <name>` (text mode), `<hex> *<name>` (binary mode), the BSD
 * form `SHA256 (<name>) = <hex>` (`sha256sum --tag`) and, where `bareHex` is allowed, a line holding
 * only the digest. Blank lines and `#` comments are ignored; anything else is an error naming
 * `file` and the line.
 */
export function parseSha256Sums(text: string, file: string, bareHex = false): Sha256Entry[] {
  const out: Sha256Entry[] = [];
  const lines = text.replace(/^\uFEFF/, '').split('\n');
  lines.forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    const no = i + 1;
    if (line.trim() === '' || line.trimStart().startsWith('#')) return;
    const escaped = line.startsWith('\\');
    const body = escaped ? line.slice(1) : line;
    let m = /^([0-9a-fA-F]{64}) [ *](.+)$/.exec(body);
    if (m) {
      const name = m[2] as string;
      out.push({ sha256: (m[1] as string).toLowerCase(), name: escaped ? unescapeName(name) : name, line: no });
      return;
    }
    m = /^SHA256 \((.+)\) = ([0-9a-fA-F]{64})$/.exec(body);
    if (m) {
      const name = m[1] as string;
      out.push({ sha256: (m[2] as string).toLowerCase(), name: escaped ? unescapeName(name) : name, line: no });
      return;
    }
    if (bareHex && HEX64.test(line.trim())) {
      out.push({ sha256: line.trim().toLowerCase(), name: undefined, line: no });
      return;
    }
    const shown = line.length > 80 ? `${line.slice(0, 80)}...` : line;
    throw new Error(
      `${file}: line ${no} is not a sha256sum line ("${shown}"); expected "<64 hex digits>  <file name>"${bareHex ? ' or the 64 hex digits alone' : ''}`,
    );
  });
  return out;
}

/** The last path segment of a local path or URL path. */
const baseName = (p: string) => p.slice(p.lastIndexOf('/') + 1);

interface Candidate {
  spec: string;
  /** One file's checksum (named after the image) rather than a directory's list. */
  single: boolean;
}

/** The image's file name (URL-decoded for URLs) and the sidecar specs to try, in order. */
export function sidecarCandidates(imageSpec: string): { name: string; candidates: Candidate[] } | undefined {
  if (imageSpec === '-') return undefined;
  // For URLs only the path changes; the query (e.g. a token or a signature) stays. s3:// is kept
  // as a string: its key is not URL-encoded.
  const isUrl = /^[a-z][a-z0-9+.-]*:\/\//i.test(imageSpec) && !/^s3:/i.test(imageSpec);
  const url = isUrl ? new URL(imageSpec) : undefined;
  const path = url ? url.pathname : imageSpec;
  const rawName = baseName(path);
  if (rawName === '') return undefined;
  let name = rawName;
  if (url) {
    try {
      name = decodeURIComponent(rawName);
    } catch {
      // not valid percent-encoding: compare as it is
    }
  }
  const withPath = (p: string): string => {
    if (!url) return p;
    const u = new URL(url);
    u.pathname = p;
    return u.toString();
  };
  const dir = path.slice(0, path.length - rawName.length);
  return {
    name,
    candidates: [
      { spec: withPath(`${path}.sha256sum`), single: true },
      { spec: withPath(`${path}.sha256`), single: true },
      { spec: withPath(`${dir}SHA256SUMS`), single: false },
    ],
  };
}

/** Reads a sidecar, refusing one over MAX_SIDECAR_BYTES. */
async function readSmall(stream: Readable, display: string): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const c of stream) {
      const b = typeof c === 'string' ? Buffer.from(c) : (c as Buffer);
      size += b.length;
      if (size > MAX_SIDECAR_BYTES) {
        throw new Error(`${display}: larger than ${MAX_SIDECAR_BYTES / 1024 / 1024} MiB, not a checksum file`);
      }
      chunks.push(b);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** The entry for `name`: by exact name, else by the last path segment of the listed name. */
function entryFor(entries: Sha256Entry[], name: string, display: string): Sha256Entry | undefined {
  const exact = entries.filter((e) => e.name === name || e.name === `./${name}`);
  const found = exact.length > 0 ? exact : entries.filter((e) => e.name !== undefined && baseName(e.name) === name);
  const digests = new Set(found.map((e) => e.sha256));
  if (digests.size > 1) {
    throw new Error(`${display}: lines ${found.map((e) => e.line).join(', ')} give different sha256 digests for ${name}; which one is meant is unclear`);
  }
  return found[0];
}

/**
 * The sha256 published beside `imageSpec` (of the file as stored), or undefined when there is
 * none, or when a SHA256SUMS there does not list the image. A sidecar that cannot be parsed, or
 * that names only other files, is an error: a checksum that was meant to be checked must not be
 * silently dropped.
 */
export async function findSha256Sidecar(imageSpec: string, opts: SourceOptions = {}): Promise<Sha256Sidecar | undefined> {
  const c = sidecarCandidates(imageSpec);
  if (!c) return undefined;
  for (const { spec, single } of c.candidates) {
    let source;
    try {
      source = await openSource(spec, opts);
    } catch (e) {
      // A local candidate that does not exist fails in openSource; that is the normal "no".
      if (/^image not found:/.test((e as Error).message)) continue;
      throw e;
    }
    try {
      if (!(await source.exists())) continue;
      const text = await readSmall(await source.open(0), source.display);
      const entries = parseSha256Sums(text, source.display, single);
      if (single) {
        const named = entryFor(entries, c.name, source.display);
        // Named after the image: its one entry is the image's, whatever name it was made under.
        const only = entries.length === 1 ? entries[0] : undefined;
        const entry = named ?? only;
        if (!entry) {
          throw new Error(
            entries.length === 0
              ? `${source.display}: holds no sha256`
              : `${source.display}: lists ${entries.length} files but not ${c.name}; cannot tell which sha256 is the image's`,
          );
        }
        return { sha256: entry.sha256, from: source.display };
      }
      const entry = entryFor(entries, c.name, source.display);
      return entry ? { sha256: entry.sha256, from: source.display } : undefined;
    } finally {
      await source.close?.();
    }
  }
  return undefined;
}
