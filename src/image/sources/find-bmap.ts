// Finds the bmap next to an image the way bmaptool does (bmaptools/CLI.py,
// find_and_open_bmap): try "<image>.bmap", then drop one extension at a time and try
// "<rest>.bmap" again, until the name has no extension left. a.wic.zst tries
// a.wic.zst.bmap, a.wic.bmap, a.bmap.
import type { SourceOptions } from '../types.ts';
import { openSource } from './open.ts';

/** Python's os.path.splitext on the last path segment (leading dots are not extensions). */
function splitext(path: string): [string, string] {
  const slash = path.lastIndexOf('/');
  const base = path.slice(slash + 1);
  const dot = base.lastIndexOf('.');
  if (dot <= 0 || /^\.+$/.test(base.slice(0, dot + 1))) return [path, ''];
  return [path.slice(0, slash + 1 + dot), base.slice(dot)];
}

/** The candidate bmap specs for an image spec, in the order bmaptool tries them. */
export function bmapCandidates(imageSpec: string): string[] {
  if (imageSpec === '-') return [];
  // For URLs only the path changes; the query (e.g. a token) stays.
  let url: URL | undefined;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(imageSpec) && !/^s3:/i.test(imageSpec)) url = new URL(imageSpec);
  let path = url ? url.pathname : imageSpec;
  const out: string[] = [];
  for (;;) {
    const candidate = `${path}.bmap`;
    if (url) {
      const u = new URL(url);
      u.pathname = candidate;
      out.push(u.toString());
    } else {
      out.push(candidate);
    }
    const [rest, ext] = splitext(path);
    if (ext === '') return out;
    path = rest;
  }
}

/** The spec of the bmap found next to `imageSpec`, or undefined (stdin has none). */
export async function findBmap(imageSpec: string, opts: SourceOptions = {}): Promise<string | undefined> {
  for (const candidate of bmapCandidates(imageSpec)) {
    let found = false;
    try {
      const source = await openSource(candidate, opts);
      found = await source.exists();
    } catch (e) {
      // A local candidate that does not exist fails in openSource; that is the normal "no".
      if (!/^image not found:/.test((e as Error).message)) throw e;
    }
    if (found) return candidate;
  }
  return undefined;
}
