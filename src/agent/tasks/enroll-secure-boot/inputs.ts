// The task's inputs: .auth files by path on the installer (relative: under installData)
// or by URL from the server, read whole (they are small) and checked before anything is
// written: each is a well-formed signed update of its variable, signed by the
// certificate inside it, with a signature list as its value.
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TaskError } from '../builtin.ts';
import { HttpSource, redactUrl } from '../../../image/sources/http.ts';
import type { SourceOptions } from '../../../image/types.ts';
import { decodeAuth, verifyAuth } from '../../../secureboot/auth.ts';
import { decodeEsl } from '../../../secureboot/esl.ts';
import type { KeyVariable } from '../../../secureboot/variables.ts';
import type { Intended } from './plan.ts';

/** Far above any real dbx (tens of KiB): a wrong URL serving an image is refused early. */
export const MAX_AUTH_BYTES = 1024 * 1024;

async function fetchUrl(url: string, opts: SourceOptions, signal: AbortSignal | undefined): Promise<Buffer> {
  const src = new HttpSource({ url, options: { retries: 3, ...opts } });
  try {
    const size = await src.size();
    if (size !== undefined && size > MAX_AUTH_BYTES) throw new TaskError(`${redactUrl(url)} is ${size} bytes: too big for a .auth file (wrong URL?)`);
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of await src.open(0, signal)) {
      n += (c as Buffer).length;
      if (n > MAX_AUTH_BYTES) throw new TaskError(`${redactUrl(url)} is more than ${MAX_AUTH_BYTES} bytes: too big for a .auth file (wrong URL?)`);
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  } catch (e) {
    if (e instanceof TaskError) throw e;
    throw new TaskError(`cannot fetch ${redactUrl(url)}: ${(e as Error).message}`);
  } finally {
    await src.close?.();
  }
}

async function readLocal(name: string, installData: string): Promise<{ path: string; bytes: Buffer }> {
  const tried = name.startsWith('file://') ? [fileURLToPath(name)] : isAbsolute(name) ? [name] : [resolvePath(name), resolvePath(installData, name)];
  const why: string[] = [];
  for (const path of tried) {
    try {
      const bytes = await readFile(path);
      if (bytes.length > MAX_AUTH_BYTES) throw new TaskError(`${path} is ${bytes.length} bytes: too big for a .auth file`);
      return { path, bytes };
    } catch (e) {
      if (e instanceof TaskError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      why.push(`${path} (${code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'a directory' : code === 'EACCES' ? 'permission denied' : (e as Error).message})`);
    }
  }
  throw new TaskError(`cannot read ${name}: tried ${why.join(' and ')}`);
}

/** The bytes of `spec` (path, file://, http(s)://) and how to name it in messages. */
export async function loadInput(spec: string, installData: string, opts: SourceOptions, signal?: AbortSignal): Promise<{ source: string; bytes: Buffer }> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec)?.[1]?.toLowerCase();
  if (scheme === 'http' || scheme === 'https') return { source: redactUrl(spec), bytes: await fetchUrl(spec, opts, signal) };
  if (scheme !== undefined && scheme !== 'file') throw new TaskError(`${spec}: the ${scheme}:// scheme is not supported here; give a path on the installer, file://, http:// or https://`);
  const r = await readLocal(spec, installData);
  return { source: r.path, bytes: r.bytes };
}

/** Decodes and checks one .auth as the signed update of `variable`. */
export function intendedFrom(variable: KeyVariable, source: string, auth: Buffer): Intended {
  let decoded;
  try {
    decoded = decodeAuth(auth, `${variable} update ${source}`);
  } catch (e) {
    throw new TaskError(`${(e as Error).message}. Give the .auth file made by \`bootline secureboot auth --var ${variable}\` (or efitools' sign-efi-sig-list)`);
  }
  const check = verifyAuth(decoded, variable);
  if (!check.ok) throw new TaskError(`${variable} update ${source} cannot be used: ${check.why}`);
  let entries;
  try {
    entries = decodeEsl(decoded.esl, `${variable} update ${source}: its signature list`);
  } catch (e) {
    throw new TaskError((e as Error).message);
  }
  if (variable === 'PK' && entries.length !== 1) throw new TaskError(`${variable} update ${source} holds ${entries.length} entries; PK holds exactly one certificate`);
  return { variable, source, auth, entries, append: check.append, attributes: check.attributes, signer: check.signer };
}
