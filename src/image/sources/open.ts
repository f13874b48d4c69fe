// One entry point from a user's image argument to a Source, chosen by scheme.
import { stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Source, SourceOptions } from '../types.ts';
import { FileSource } from './file.ts';
import { FtpSource } from './ftp.ts';
import { HttpSource, redactUrl } from './http.ts';
import { s3Source } from './s3.ts';
import { StdinSource } from './stdin.ts';

/** A Source that can also tell whether it exists (used to look for a bmap beside an image). */
export type ProbeableSource = Source & { exists(): Promise<boolean> };

export const SUPPORTED_SOURCES = '- (stdin), a local path, file://, http://, https://, ftp://, s3://';

export async function openSource(spec: string, opts: SourceOptions = {}): Promise<ProbeableSource> {
  if (spec === '-') return new StdinSource();
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec)?.[1]?.toLowerCase();
  switch (scheme) {
    case undefined:
      await mustExist(spec, spec);
      return new FileSource(spec);
    case 'file': {
      const path = fileURLToPath(spec);
      await mustExist(path, spec);
      return new FileSource(path);
    }
    case 'http':
    case 'https':
      return new HttpSource({ url: spec, options: opts });
    case 'ftp':
      return new FtpSource(spec, opts);
    case 's3':
      return s3Source(spec, opts);
    default:
      throw new Error(`unsupported image source ${redactUrl(spec)} (scheme ${scheme}://); supported: ${SUPPORTED_SOURCES}`);
  }
}

async function mustExist(path: string, spec: string): Promise<void> {
  try {
    await stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new Error(`image not found: ${spec} (${why})`, { cause: e });
  }
}
