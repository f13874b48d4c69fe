// From "an image spec and a target" to a written, verified disk: finds and checks the
// bmap, opens the source and the target, and runs the copy engine. Shared by
// `bootline image copy` and the deploy-image task.
import { openSource } from './sources/open.ts';
import { findBmap } from './sources/find-bmap.ts';
import { parseBmap } from './bmap/parse.ts';
import { openTarget } from './target.ts';
import { copyImage } from './copy.ts';
import type { Bmap, SourceOptions } from './types.ts';
import type { Target } from './target.ts';
import { checkBmapTrust, checkImageTrust, readSmall, type TrustOptions } from './trust.ts';
import { MAX_BMAP_BYTES } from './bmap/parse.ts';
import { findSha256Sidecar } from './sources/find-sidecar.ts';

export interface ImageCopyOptions {
  image: string;
  target: string;
  /** A bmap path/URL; false: do not use one (--nobmap); undefined: look for one like bmaptool. */
  bmap?: string | false;
  /** sha256 of the decompressed image (used when there is no bmap). */
  sha256?: string;
  /** sha256 of the image file as stored; found in a .sha256sum/SHA256SUMS sidecar when not given. */
  sourceSha256?: string;
  /** false: do not look for a sha256 sidecar. */
  sidecar?: boolean;
  /** Read the target first and write only the ranges that differ. */
  skipIdentical?: boolean;
  verify?: boolean;
  holes?: 'skip' | 'discard' | 'zero';
  /** Allow a regular file as target (created if missing), as bmaptool does. */
  allowFile?: boolean;
  /** Opens the target instead of `target` (write-through encryption routes partitions into dm-crypt volumes). */
  openTarget?: () => Promise<Target>;
  source?: SourceOptions;
  trust?: TrustOptions;
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
  skippedRanges: number;
  skippedBytes: number;
  seconds: number;
  sha256From?: string;
}

/** Everything known about an image before its target is opened: the checks that can fail early. */
export interface PreparedImage {
  bmapSpec?: string;
  bmap?: Bmap;
  sha256?: string;
  sourceSha256?: string;
  sha256From?: string;
}

/**
 * Finds the bmap, checks its signatures on its exact bytes, parses it, and finds what
 * the whole image must hash to. Callers that must fail before touching or asking about a
 * disk (the deploy-image task) call this first and hand the result to copyImageSpec.
 */
export async function prepareImage(o: Omit<ImageCopyOptions, 'target'>): Promise<PreparedImage> {
  const log = o.onLog ?? (() => {});
  const bmapSpec = o.bmap === false ? undefined : (o.bmap ?? (await findBmap(o.image, o.source)));
  if (bmapSpec) {
    const bytes = await readSmall(bmapSpec, MAX_BMAP_BYTES, o.source, o.signal);
    const bmap = parseBmap(await checkBmapTrust(bmapSpec, bytes, o.trust ?? {}, o.source, log), bmapSpec);
    log(`using bmap ${bmapSpec}: ${bmap.ranges.length} ranges, ${bmap.mappedBlocksCount * bmap.blockSize} of ${bmap.imageSize} bytes mapped`);
    return { bmapSpec, bmap, ...(o.sha256 ? { sha256: o.sha256 } : {}), ...(o.sourceSha256 ? { sourceSha256: o.sourceSha256 } : {}) };
  }
  if (o.bmap !== false) log(`no bmap found for ${o.image}: writing every byte`);
  const sha256 = await checkImageTrust(o.image, o.trust ?? {}, o.sha256, o.source, log);
  const prepared: PreparedImage = { ...(sha256 ? { sha256 } : {}), ...(o.sourceSha256 ? { sourceSha256: o.sourceSha256 } : {}) };
  if (!sha256 && !o.sourceSha256 && o.sidecar !== false) {
    const sc = await findSha256Sidecar(o.image, o.source);
    if (sc) {
      prepared.sourceSha256 = sc.sha256;
      prepared.sha256From = sc.from;
      log(`checking the image file against sha256 ${sc.sha256} from ${sc.from}`);
    }
  }
  return prepared;
}

export async function copyImageSpec(o: ImageCopyOptions, prepared?: PreparedImage): Promise<ImageCopyResult> {
  const log = o.onLog ?? (() => {});
  const { bmapSpec, bmap, sha256, sourceSha256, sha256From } = prepared ?? (await prepareImage(o));
  // Everything that can be checked is checked before the target is opened for writing.
  const source = await openSource(o.image, o.source);
  const target = o.openTarget ? await o.openTarget() : await openTarget(o.target, { allowFile: o.allowFile === true, create: o.allowFile === true });
  try {
    const r = await copyImage({
      source,
      target,
      ...(bmap ? { bmap } : {}),
      ...(o.holes ? { holes: o.holes } : {}),
      ...(o.verify !== undefined ? { verify: o.verify } : {}),
      ...(sha256 ? { sha256 } : {}),
      ...(sourceSha256 ? { sourceSha256 } : {}),
      ...(o.skipIdentical ? { skipIdentical: true } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      onLog: log,
    });
    return { ...(bmapSpec ? { bmap: bmapSpec } : {}), ...(sha256From ? { sha256From } : {}), ...r };
  } finally {
    await target.close();
    await source.close?.();
  }
}
