// The deploy-image built-in: Isar's deploy step (choose the target disk, honour
// the overwrite policy, write the image), streaming instead of bmaptool.
// Order matters: every input is checked before the disk is touched, and the
// HTTP transfer only starts once writing has been allowed.
import { open, realpath, stat } from 'node:fs/promises';
import { Type } from '@sinclair/typebox';
import type { BuiltinTask, TaskContext } from '../builtin.ts';
import { TaskError } from '../builtin.ts';
import { copyImage, detectCompression, preflight } from './copy.ts';
import { openImage, resolveImage } from './source.ts';
import type { ImageLocation } from './source.ts';
import { bootMedia, chooseTarget, deviceSize, isEmpty, overwriteDecision, splitCandidates } from './target.ts';
import { formatBytes } from '../../../format.ts';
import type { TargetChoice } from './target.ts';

export const DeployImageOptions = Type.Object(
  {
    image: Type.String({ minLength: 1, description: 'local path (relative: also looked up in installData), file://, http:// or https:// URL; raw or gzip' }),
    target: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description: 'candidate target devices; the first block device that is not the boot medium is used',
    }),
    overwrite: Type.Optional(
      Type.Union([Type.Literal('OVERWRITE'), Type.Literal('ABORT')], {
        default: 'ABORT',
        description: 'unattended: what to do when the target is not empty (first MiB not all zeros)',
      }),
    ),
    installData: Type.Optional(Type.String({ minLength: 1, default: '/install', description: 'where relative image names are looked up' })),
    sha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'expected sha256 of the decompressed image' })),
    allowFile: Type.Optional(Type.Boolean({ default: false, description: 'accept a regular file (created if missing) as target: tests, dry labs' })),
  },
  { additionalProperties: false },
);

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

/** First bytes of a local image, so a wrong format is refused before anyone is asked anything. */
async function localHead(loc: ImageLocation): Promise<Buffer | undefined> {
  if (loc.kind !== 'file') return undefined;
  const fh = await open(loc.path, 'r');
  try {
    const buf = Buffer.alloc(6);
    const { bytesRead } = await fh.read(buf, 0, 6, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export const deployImage: BuiltinTask<typeof DeployImageOptions> = {
  name: 'deploy-image',
  description: 'Write a raw or gzip disk image (path, file://, http(s)://) to the first usable target disk',
  destructive: true,
  optionsSchema: DeployImageOptions,
  async run(ctx: TaskContext<(typeof DeployImageOptions)['static']>): Promise<void> {
    const o = ctx.options;
    // The loader passes arrays; a hand-written plan may give "/dev/sda,/dev/vda".
    const candidates = splitCandidates(o.target as string | string[]);
    const policy = o.overwrite ?? 'ABORT';
    const allowFile = o.allowFile ?? false;

    const loc = await resolveImage(o.image, o.installData ?? '/install');
    const choice = await chooseFromSystem(candidates, allowFile);
    for (const r of choice.rejected) ctx.log('info', `skipping ${r.path}: ${r.reason}`);
    const dev = choice.target;
    const size = choice.kind === 'new-file' ? 0 : await deviceSize(dev);
    // Files grow; only a device has a hard end.
    const targetSize = choice.kind === 'block' ? size : undefined;
    const head = await localHead(loc);
    if (head && loc.kind === 'file') preflight(detectCompression(head), loc.size, targetSize, dev);

    const empty = await isEmpty(dev);
    const label = `${dev} (${formatBytes(size)})`;
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

    const src = await openImage(loc, { signal: ctx.signal });
    ctx.setOutput('target', dev);
    ctx.log('info', `writing ${src.location}${src.totalBytes === undefined ? '' : ` (${formatBytes(src.totalBytes)})`} to ${label}`);
    const result = await copyImage({
      source: src.stream,
      target: dev,
      signal: ctx.signal,
      create: choice.kind === 'new-file',
      ...(src.totalBytes === undefined ? {} : { totalBytes: src.totalBytes }),
      ...(targetSize === undefined ? {} : { targetSize }),
      ...(o.sha256 === undefined ? {} : { sha256: o.sha256 }),
      onProgress: (p) =>
        ctx.progress({
          taskProgress: p.percent ?? 0,
          bytesDone: p.bytesDone,
          ...(p.bytesTotal === undefined ? {} : { bytesTotal: p.bytesTotal }),
          rate: p.rate,
          ...(p.etaSeconds === undefined ? {} : { etaSeconds: p.etaSeconds }),
          message: `${formatBytes(p.bytesWritten)} written to ${dev}`,
        }),
    });
    ctx.log(
      'info',
      `wrote ${formatBytes(result.bytesWritten)} to ${dev} (${result.compression === 'gzip' ? 'gzip' : 'raw'} image, sha256 ${result.sha256}${o.sha256 ? ', verified' : ''})`,
    );
  },
};
