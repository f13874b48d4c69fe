// Isar's installer inputs, shared by the two places Isar reads them from: the
// /install/auto.install file (one value per line) and the installer.* kernel
// parameters (which overrule it). They configure bootline's built-in deploy-image task
// (which replaces Isar's deploy-image-wic.sh) and the unattended mode:
//
//   image      -> tasks[deploy-image].with.image      (and unattended: true)
//   target     -> tasks[deploy-image].with.target     (a list of candidates; and unattended: true)
//   overwrite  -> tasks[deploy-image].with.overwrite  (OVERWRITE | ABORT; and unattended: true)
//   unattended -> unattended
//   abortEnable  -> abort.enable
//   abortTimeout -> abort.timeout
//
// Which candidate target is used (the first existing block device that is not the boot
// medium) is decided by the task at run time, not here.
import type { Origin } from './layer.ts';
import { parseBoolean, parseNumber, type LayerBuilder } from './schema-path.ts';

export const DEPLOY_IMAGE = 'deploy-image';

export type Overwrite = 'OVERWRITE' | 'ABORT';
export const OVERWRITE_VALUES: readonly Overwrite[] = ['OVERWRITE', 'ABORT'];

export type InstallerInput = 'image' | 'target' | 'overwrite' | 'unattended' | 'abortEnable' | 'abortTimeout';

interface InputSpec {
  path: readonly string[];
  /** Setting it makes the run unattended (as in Isar's handle-config.sh). */
  impliesUnattended: boolean;
  /** Value of a bare kernel parameter without "=" (undefined: a value is required). */
  bare?: unknown;
  /** What is expected, for error messages. */
  expected: string;
  parse(raw: string): unknown;
}

const SPECS: Record<InstallerInput, InputSpec> = {
  image: {
    path: ['tasks', DEPLOY_IMAGE, 'with', 'image'],
    impliesUnattended: true,
    expected: 'the path or URL of the image to install',
    parse: (raw) => (raw.trim() === '' ? undefined : raw.trim()),
  },
  target: {
    path: ['tasks', DEPLOY_IMAGE, 'with', 'target'],
    impliesUnattended: true,
    expected: 'the target block device, or candidates separated by commas or colons (e.g. /dev/sda,/dev/nvme0n1)',
    parse: (raw) => {
      const list = splitTargets(raw);
      return list.length === 0 ? undefined : list;
    },
  },
  overwrite: {
    path: ['tasks', DEPLOY_IMAGE, 'with', 'overwrite'],
    impliesUnattended: true,
    bare: 'OVERWRITE',
    expected: 'OVERWRITE or ABORT',
    parse: (raw) => (OVERWRITE_VALUES.includes(raw.trim() as Overwrite) ? raw.trim() : undefined),
  },
  unattended: {
    path: ['unattended'],
    impliesUnattended: false,
    bare: true,
    expected: 'a boolean (true/false, 1/0, yes/no, on/off)',
    parse: parseBoolean,
  },
  abortEnable: {
    path: ['abort', 'enable'],
    impliesUnattended: false,
    bare: true,
    expected: 'a boolean (true/false, 1/0, yes/no, on/off)',
    parse: parseBoolean,
  },
  abortTimeout: {
    path: ['abort', 'timeout'],
    impliesUnattended: false,
    expected: 'a number of seconds (0 or more)',
    parse: (raw) => {
      const n = parseNumber(raw);
      return n !== undefined && n >= 0 ? n : undefined;
    },
  },
};

/** "/dev/sda,/dev/sdb:/dev/vda" -> ["/dev/sda", "/dev/sdb", "/dev/vda"] (Isar splits on , and :). */
export function splitTargets(raw: string): string[] {
  return raw.split(/[,:\s]+/).filter((s) => s !== '');
}

export type InstallerValue = { ok: true; value: unknown } | { ok: false; expected: string };

/** Parses one installer input; `raw` null is a bare kernel parameter. */
export function parseInstallerValue(input: InstallerInput, raw: string | null): InstallerValue {
  const spec = SPECS[input];
  if (raw === null) return spec.bare === undefined ? { ok: false, expected: spec.expected } : { ok: true, value: spec.bare };
  const value = spec.parse(raw);
  return value === undefined ? { ok: false, expected: spec.expected } : { ok: true, value };
}

/** The canonical config path an installer input sets. */
export function installerPath(input: InstallerInput): readonly string[] {
  return SPECS[input].path;
}

/** Writes a parsed installer value into the layer, with the built-in task and unattended mode it implies. */
export function applyInstallerValue(b: LayerBuilder, input: InstallerInput, value: unknown, origin: Origin): void {
  const spec = SPECS[input];
  if (spec.path[0] === 'tasks' && !b.has(['tasks', DEPLOY_IMAGE, 'builtin'])) {
    b.set(['tasks', DEPLOY_IMAGE, 'builtin'], DEPLOY_IMAGE, origin);
  }
  b.set(spec.path, value, origin);
  if (spec.impliesUnattended) b.set(['unattended'], true, origin);
}
