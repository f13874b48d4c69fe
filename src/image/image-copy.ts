// From "an image spec and a target" to a written, verified disk: finds and checks the
// bmap, opens the source and the target, and runs the copy engine. Shared by
// `bootline image copy` and the deploy-image task.
import type { Readable } from 'node:stream';
import { openSource } from './sources/open.ts';
import { findBmap } from './sources/find-bmap.ts';
import { parseBmap } from './bmap/parse.ts';
import { openTarget } from './target.ts';
import { copyImage } from './copy.ts';
import type { Bmap, SourceOptions } from './types.ts';

export interface ImageCopyOptions {
  image: string;
  target: string;
  /** A bmap path/URL; false: do not use one (--nobmap); undefined: look for one like bmaptool. */
  bmap?: string | false;
  sha256?: string;
  verify?: boolean;
  holes?: 'skip' | 'discard' | 'zero';
  /** Allow a regular file as target (created if missing), as bmaptool does. */
  allowFile?: boolean;
  source?: SourceOptions;
  signal?: AbortSignal;
  onProgress?: (p: { bytesDone: number; bytesTotal?: number; rate: number; etaSeconds?: number; phase: string }) => void;
  onLog?: (message: string) => void;
}

export interface ImageCopyResult {
  bmap?: string;
  bytesWritten: number;
  mappedBytes: number;
  compression: string;
  repairedRanges: number;
  seconds: number;
}

/** The most a bmap may weigh: a huge one is a mistake or an attack, not an image map. */
const MAX_BMAP_BYTES = 64 * 1024 * 1024;

export async function copyImageSpec(o: ImageCopyOptions): Promise<ImageCopyResult> {
  const log = o.onLog ?? (() => {});
  const bmapSpec = o.bmap === false ? undefined : (o.bmap ?? (await findBmap(o.image, o.source)));
  let bmap: Bmap | undefined;
  if (bmapSpec) {
    bmap = parseBmap(await readAll(bmapSpec, o.source, o.signal), bmapSpec);
    log(`using bmap ${bmapSpec}: ${bmap.ranges.length} ranges, ${bmap.mappedBlocksCount * bmap.blockSize} of ${bmap.imageSize} bytes mapped`);
  } else if (o.bmap !== false) {
    log(`no bmap found for ${o.image}: writing every byte`);
  }
  // Everything that can be checked is checked before the target is opened for writing.
  const source = await openSource(o.image, o.source);
  const target = await openTarget(o.target, { allowFile: o.allowFile === true, create: o.allowFile === true });
  try {
    const r = await copyImage({
      source,
      target,
      ...(bmap ? { bmap } : {}),
      ...(o.holes ? { holes: o.holes } : {}),
      ...(o.verify !== undefined ? { verify: o.verify } : {}),
      ...(o.sha256 ? { sha256: o.sha256 } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      onLog: log,
    });
    return { ...(bmapSpec ? { bmap: bmapSpec } : {}), ...r };
  } finally {
    await target.close();
    await source.close?.();
  }
}

async function readAll(spec: string, opts: SourceOptions | undefined, signal?: AbortSignal): Promise<string> {
  const src = await openSource(spec, opts);
  const stream: Readable = await src.open(0, signal);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream) {
    size += (c as Buffer).length;
    if (size > MAX_BMAP_BYTES) {
      stream.destroy();
      throw new Error(`${spec}: larger than ${MAX_BMAP_BYTES / 1024 / 1024} MiB — not a bmap`);
    }
    chunks.push(c as Buffer);
  }
  await src.close?.();
  return Buffer.concat(chunks).toString('utf8');
}
