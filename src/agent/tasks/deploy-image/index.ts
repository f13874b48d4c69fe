// The deploy-image built-in: Isar's deploy step (choose the target disk, honour
// the overwrite policy, write the image) on bootline's image engine, with the
// options of `bootline image copy` (bmap, checksums, holes, any source).
// Order matters: every input is checked before the disk is touched (the image
// exists, the bmap parses and fits, the target is chosen and may be
// overwritten), the target is published, and only then does copying start.
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Type } from '@sinclair/typebox';
import type { BuiltinTask, TaskContext, TaskProgress } from '../builtin.ts';
import { TaskError } from '../builtin.ts';
import { autoSelect, chooseTarget, gatherDiskFacts, isEmpty, overwriteDecision, splitCandidates } from './target.ts';
import { bootMedia, deviceSize } from '../../../image/block-devices.ts';
import type { TargetChoice } from './target.ts';
import { formatBytes, formatDuration } from '../../../format.ts';
import { copyImageSpec, prepareImage } from '../../../image/image-copy.ts';
import type { ImageCopyOptions, PreparedImage } from '../../../image/image-copy.ts';
import { BmapError } from '../../../image/bmap/parse.ts';
import { findBmap } from '../../../image/sources/find-bmap.ts';
import { detectCompression } from '../../../image/decompress/detect.ts';
import { readFileHead } from '../../../image/decompress/file-head.ts';
import { Value } from '@sinclair/typebox/value';
import { EncryptDiskOptions, type EncryptDiskOptionsT } from '../encrypt-disk/options.ts';
import { preflight, specsOf } from '../encrypt-disk/preflight.ts';
import { openWriteThrough, planFor, readImageHead, type OpenedWriteThrough, type WriteThroughPlan } from '../../../crypt/write-through.ts';

export const DeployImageOptions = Type.Object(
  {
    image: Type.String({
      minLength: 1,
      description: 'local path (relative: also looked up in installData), file://, http(s)://, ftp:// or s3:// URL; raw, gzip, xz, zstd, bzip2 or lz4',
    }),
    target: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description: 'candidate target devices (the first block device that is not the boot medium is used), or the single value `auto` (see targetRules)',
    }),
    targetRules: Type.Optional(
      Type.Object(
        {
          minSize: Type.Optional(Type.Integer({ minimum: 0, description: 'smallest acceptable disk, in bytes' })),
          removable: Type.Optional(Type.Boolean({ default: false, description: 'also consider removable disks (USB sticks, SD cards)' })),
          byId: Type.Optional(Type.String({ minLength: 1, description: 'a glob, or a /regex/, matched against the /dev/disk/by-id names of the disk' })),
        },
        { additionalProperties: false, description: 'with target: [auto]: which disk may be chosen; exactly one disk must qualify' },
      ),
    ),
    overwrite: Type.Optional(
      Type.Union([Type.Literal('OVERWRITE'), Type.Literal('ABORT')], {
        default: 'ABORT',
        description: 'unattended: what to do when the target is not empty (first MiB not all zeros)',
      }),
    ),
    installData: Type.Optional(Type.String({ minLength: 1, default: '/install', description: 'where relative image and bmap names are looked up' })),
    bmap: Type.Optional(Type.String({ minLength: 1, description: 'the bmap (path or URL); default: looked for beside the image, like bmaptool' })),
    nobmap: Type.Optional(Type.Boolean({ default: false, description: 'do not use a bmap: write every byte of the image' })),
    verify: Type.Optional(Type.Boolean({ default: true, description: "check the bmap's range checksums while writing (re-reads a bad range once)" })),
    sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'expected sha256 of the decompressed image' })),
    holes: Type.Optional(
      Type.Union([Type.Literal('skip'), Type.Literal('discard'), Type.Literal('zero')], {
        default: 'skip',
        description: 'blocks the bmap does not map: left as they are, discarded (TRIM), or zeroed',
      }),
    ),
    ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA bundle file for https' })),
    token: Type.Optional(Type.String({ minLength: 1, description: 'bearer token for http(s) (Authorization: Bearer)' })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra HTTP request headers' })),
    skipIdentical: Type.Optional(Type.Boolean({ default: false, description: 'read the target first and write only ranges that differ' })),
    trustedKeys: Type.Optional(Type.String({ minLength: 1, description: 'file of trusted ed25519 public keys: unsigned images are refused' })),
    keyring: Type.Optional(Type.String({ minLength: 1, description: 'GPG keyring: the bmap must carry a valid GPG signature' })),
    allowFile: Type.Optional(Type.Boolean({ default: false, description: 'accept a regular file (created if missing) as target: tests, dry labs' })),
  },
  { additionalProperties: false },
);

type Options = (typeof DeployImageOptions)['static'];

// ---------------------------------------------------------------- the image and its bmap

export type ResolvedImage = { kind: 'local'; path: string; size: number } | { kind: 'remote'; spec: string };

const REMOTE_SCHEMES = new Set(['http', 'https', 'ftp', 's3']);
const SUPPORTED = 'a local path, file://, http://, https://, ftp:// or s3://';

/** The paths a local name is looked up at, in order: as given, then under the install data dir (Isar). */
export function localCandidates(name: string, installData: string): string[] {
  if (isAbsolute(name)) return [name];
  return [resolvePath(name), resolvePath(installData, name)];
}

async function regularFile(path: string): Promise<{ ok: true; size: number } | { ok: false; why: string }> {
  try {
    const st = await stat(path);
    if (!st.isFile()) return { ok: false, why: 'not a regular file' };
    return { ok: true, size: st.size };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, why: code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'permission denied' : (e as Error).message };
  }
}

/**
 * Where an image (or bmap) named in the options really is: a local file that
 * exists (as given, then under installData), or a URL of a supported scheme.
 * No network traffic: a remote source is only contacted once writing is allowed.
 */
export async function resolveInput(name: string, installData: string, what: 'image' | 'bmap'): Promise<ResolvedImage> {
  if (name === '-') throw new TaskError(`${what} "-" (standard input) cannot be used by a task; give ${SUPPORTED}`);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(name)?.[1]?.toLowerCase();
  if (scheme !== undefined && REMOTE_SCHEMES.has(scheme)) {
    try {
      new URL(name);
    } catch {
      throw new TaskError(`${what} ${name} is not a valid URL`);
    }
    return { kind: 'remote', spec: name };
  }
  let tried: string[];
  if (scheme === 'file') {
    try {
      tried = [fileURLToPath(name)];
    } catch (e) {
      throw new TaskError(`${what} ${name} is not a usable file:// URL: ${(e as Error).message}`);
    }
  } else if (scheme !== undefined) {
    throw new TaskError(`${what} ${name}: the ${scheme}:// scheme is not supported; use ${SUPPORTED}`);
  } else {
    tried = localCandidates(name, installData);
  }
  const why: string[] = [];
  for (const path of tried) {
    const r = await regularFile(path);
    if (r.ok) return { kind: 'local', path, size: r.size };
    why.push(`${path} (${r.why})`);
  }
  throw new TaskError(
    `${what} ${name} not found: tried ${why.join(' and ')}. ` +
      `Put the ${what} there, or give an absolute path or a URL in the task option \`${what}\`.`,
  );
}

const specOf = (r: ResolvedImage) => (r.kind === 'local' ? r.path : r.spec);

/** The bmap copyImageSpec gets: a spec, false (no bmap), or undefined (look beside a remote image). */
async function planBmap(o: Options, image: ResolvedImage, installData: string, log: TaskContext['log']): Promise<string | false | undefined> {
  if (o.nobmap && o.bmap !== undefined) throw new TaskError('the options bmap and nobmap contradict each other: give one of them');
  if (o.nobmap) return false;
  let found: ResolvedImage | undefined;
  if (o.bmap !== undefined) found = await resolveInput(o.bmap, installData, 'bmap');
  else if (image.kind === 'local') {
    const beside = await findBmap(image.path);
    if (beside === undefined) {
      log('info', `no bmap beside ${image.path}: writing every byte of the image`);
      return false;
    }
    found = await resolveInput(beside, installData, 'bmap');
  }
  return found ? specOf(found) : undefined;
}

// ---------------------------------------------------------------- the target

type Facts = { block: boolean; file: boolean; exists: boolean; real: string };

async function probe(path: string): Promise<Facts> {
  try {
    const st = await stat(path);
    return { block: st.isBlockDevice(), file: st.isFile(), exists: true, real: await realpath(path) };
  } catch {
    return { block: false, file: false, exists: false, real: path };
  }
}

async function chooseFromSystem(candidates: string[], allowFile: boolean): Promise<TargetChoice> {
  const facts = new Map<string, Facts>();
  for (const c of candidates) facts.set(c, await probe(c));
  const f = (p: string) => facts.get(p) ?? { block: false, file: false, exists: false, real: p };
  return chooseTarget(candidates, {
    isBlockDevice: (p) => f(p).block,
    exists: (p) => f(p).exists,
    isFile: (p) => f(p).file,
    resolve: (p) => f(p).real,
    bootDisks: await bootMedia(),
    allowFile,
  });
}

async function selectTarget(o: Options, ctx: TaskContext<Options>): Promise<TargetChoice> {
  // The loader passes arrays; a hand-written plan may give "/dev/sda,/dev/vda".
  const candidates = splitCandidates(o.target as string | string[]);
  if (candidates.includes('auto')) {
    if (candidates.length > 1) {
      throw new TaskError(`target "auto" cannot be combined with other candidates (${candidates.filter((c) => c !== 'auto').join(', ')}): give either auto or a list of disks`);
    }
    const choice = autoSelect(await gatherDiskFacts(), o.targetRules ?? {}, await bootMedia());
    for (const r of choice.rejected) ctx.log('info', `auto target: not /dev/${r.name}: ${r.reason}`);
    const id = choice.disk.byId[0] ? ` (${choice.disk.byId[0]})` : '';
    ctx.log('info', `auto target: chose ${choice.target}${id}, the only disk that qualifies`);
    return { target: choice.target, kind: 'block', rejected: [] };
  }
  if (o.targetRules !== undefined) ctx.log('warn', 'targetRules only apply to target: [auto]; ignored for an explicit target list');
  const choice = await chooseFromSystem(candidates, o.allowFile ?? false);
  for (const r of choice.rejected) ctx.log('info', `skipping ${r.path}: ${r.reason}`);
  return choice;
}

// ---------------------------------------------------------------- progress

type EngineProgress = Parameters<NonNullable<ImageCopyOptions['onProgress']>>[0];

/**
 * The engine's progress as the agent's task progress. Without a known total
 * (a compressed image without a bmap) the percentage comes from the engine's
 * ETA, which it derives from the compressed bytes read: elapsed / (elapsed + eta).
 */
export function taskProgressOf(p: EngineProgress, elapsedSeconds: number, target: string): TaskProgress {
  let pct = 0;
  if (p.bytesTotal !== undefined && p.bytesTotal > 0) pct = (p.bytesDone / p.bytesTotal) * 100;
  else if (p.bytesTotal === 0) pct = 100;
  else if (p.etaSeconds !== undefined && elapsedSeconds > 0) pct = (elapsedSeconds / (elapsedSeconds + p.etaSeconds)) * 100;
  return {
    taskProgress: Math.min(100, Math.max(0, pct)),
    bytesDone: p.bytesDone,
    ...(p.bytesTotal !== undefined ? { bytesTotal: p.bytesTotal } : {}),
    rate: p.rate,
    ...(p.etaSeconds !== undefined ? { etaSeconds: p.etaSeconds } : {}),
    // Bytes and rate travel in their own fields; reporters format them (no duplicate here).
    message: `${p.phase} ${target}`,
  };
}

function asTaskError(e: unknown): TaskError {
  if (e instanceof TaskError) return e;
  const t = new TaskError(e instanceof Error ? e.message : String(e));
  t.cause = e;
  return t;
}

// ---------------------------------------------------------------- write-through encryption

/** A later encrypt-disk task that wants this image's partitions written through dm-crypt. */
export function writeThroughTask(ctx: Pick<TaskContext, 'following'>, dev: string): EncryptDiskOptionsT | undefined {
  const t = ctx.following?.find((f) => f.builtin === 'encrypt-disk');
  if (!t) return undefined;
  const o = Value.Default(EncryptDiskOptions, structuredClone(t.options)) as EncryptDiskOptionsT;
  if (o.method === 'in-place') return undefined;
  if (o.target !== undefined && o.target !== dev) return undefined;
  return o;
}

// ---------------------------------------------------------------- the task

export const deployImage: BuiltinTask<typeof DeployImageOptions> = {
  name: 'deploy-image',
  description: 'Write a disk image (path or URL; compressed or not; with a bmap when there is one) to the chosen target disk',
  destructive: true,
  optionsSchema: DeployImageOptions,
  async run(ctx: TaskContext<Options>): Promise<void> {
    const o = ctx.options;
    const policy = o.overwrite ?? 'ABORT';
    const installData = o.installData ?? '/install';

    // 1. Inputs: the image and its bmap, read, signature-checked and parsed once, here,
    //    so that a bad or unsigned one fails before anyone is asked anything.
    const image = await resolveInput(o.image, installData, 'image');
    const copy: Omit<ImageCopyOptions, 'target'> = {
      image: specOf(image),
      ...(await planBmap(o, image, installData, ctx.log).then((b) => (b !== undefined ? { bmap: b } : {}))),
      ...(o.sha256 !== undefined ? { sha256: o.sha256 } : {}),
      verify: o.verify ?? true,
      holes: o.holes ?? 'skip',
      skipIdentical: o.skipIdentical ?? false,
      trust: { ...(o.trustedKeys ? { trustedKeys: o.trustedKeys } : {}), ...(o.keyring ? { keyring: o.keyring } : {}) },
      source: {
        ...(o.ca !== undefined ? { ca: o.ca } : {}),
        ...(o.token !== undefined ? { token: o.token } : {}),
        ...(o.headers !== undefined ? { headers: o.headers } : {}),
        onRetry: (m) => ctx.log('warn', m),
      },
      signal: ctx.signal,
      onLog: (m) => ctx.log('info', m),
    };
    let prepared: PreparedImage;
    try {
      prepared = await prepareImage(copy);
    } catch (e) {
      if (e instanceof BmapError) throw new TaskError(`bmap ${e.source} cannot be used: ${e.message}. Fix or remove it, or set nobmap: true`);
      throw asTaskError(e);
    }

    // 2. The target, and whether the image fits on it.
    const choice = await selectTarget(o, ctx);
    const dev = choice.target;
    const size = choice.kind === 'new-file' ? 0 : await deviceSize(dev);
    const label = `${dev} (${formatBytes(size)})`;
    if (choice.kind === 'block') {
      const needs = prepared.bmap
        ? prepared.bmap.imageSize
        : image.kind === 'local' && detectCompression(await readFileHead(image.path)) === 'none'
          ? image.size
          : undefined;
      if (needs !== undefined && needs > size) {
        throw new TaskError(`the image (${formatBytes(needs)}) does not fit on ${label}; nothing was written. Use a bigger disk or a smaller image`);
      }
    }

    // 3. The overwrite policy (Isar's): a target with data in its first MiB is only written when allowed.
    const empty = await isEmpty(dev);
    switch (overwriteDecision({ empty, policy, unattended: ctx.unattended })) {
      case 'abort':
        throw new TaskError(
          `target ${label} is not empty (its first MiB holds data) and the overwrite policy is ABORT; nothing was written. ` +
            'To overwrite it, set installer.target.overwrite=OVERWRITE on the kernel command line or in auto.install (task option overwrite: OVERWRITE)',
        );
      case 'ask':
        if (!(await ctx.confirm(`Target ${label} is not empty. Overwrite?`))) {
          throw new TaskError(`cancelled at the console: target ${label} is not empty and was not overwritten`);
        }
        break;
      case 'write':
        if (!empty) ctx.log('warn', `target ${label} is not empty; overwriting it (installer.target.overwrite=OVERWRITE)`);
        break;
    }

    // 4. Write-through encryption, when a later encrypt-disk task asks for it: planned and
    //    checked (names, room for the headers, TPM, server) before the first write.
    let crypt: WriteThroughPlan | undefined;
    const enc = choice.kind === 'block' ? writeThroughTask(ctx, dev) : undefined;
    if (enc && (await preflight(enc, { hasServer: ctx.server !== undefined, log: ctx.log })) === 'encrypt') {
      try {
        crypt = planFor(dev, size, await readImageHead(copy.image, copy.source ?? {}, ctx.signal), specsOf(enc));
      } catch (e) {
        throw new TaskError(`encrypt-disk cannot write through this image: ${(e as Error).message}; nothing was written`);
      }
      ctx.log('info', `write-through encryption of ${crypt.layout.encrypted.map((e) => `partition ${e.number}${e.name ? ` "${e.name}"` : ''}`).join(', ')} (for task encrypt-disk)`);
    }

    // 5. Publish the target, then write.
    ctx.setOutput('target', dev);
    ctx.log('info', `writing ${specOf(image)}${image.kind === 'local' ? ` (${formatBytes(image.size)})` : ''} to ${label}`);
    const started = performance.now();
    let last = 0;
    let result;
    let volumes: OpenedWriteThrough | undefined;
    try {
      if (crypt) volumes = await openWriteThrough(crypt, ctx.stateDir, (m) => ctx.log('info', m), ctx.signal);
      const routed = volumes?.target;
      result = await copyImageSpec(
        {
          ...copy,
          target: dev,
          allowFile: choice.kind !== 'block',
          ...(routed ? { openTarget: () => Promise.resolve(routed) } : {}),
        onProgress: (p) => {
          const tp = taskProgressOf(p, (performance.now() - started) / 1000, dev);
          // Never backwards (a repair pass restarts the engine's count).
          last = Math.max(last, tp.taskProgress);
          ctx.progress({ ...tp, taskProgress: last });
          },
        },
        prepared,
      );
      await volumes?.finish(true);
    } catch (e) {
      await volumes?.finish(false);
      throw asTaskError(e);
    }
    const extras = [
      result.compression === 'none' ? 'raw image' : `${result.compression} image`,
      result.bmap ? `bmap ${result.bmap}, ${formatBytes(result.mappedBytes)} mapped` : 'no bmap',
      ...(result.repairedRanges > 0 ? [`${result.repairedRanges} range(s) repaired`] : []),
      ...(result.skippedRanges > 0 ? [`${result.skippedRanges} range(s) already on the target`] : []),
      ...(o.sha256 ? ['sha256 verified'] : []),
    ];
    ctx.log('info', `wrote ${formatBytes(result.bytesWritten)} to ${dev} in ${formatDuration(result.seconds * 1000)} (${extras.join(', ')})`);
  },
};
