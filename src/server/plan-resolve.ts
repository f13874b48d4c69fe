// Which plan a device gets, and the plan as the device receives it. Pure.
import type { Device, Image, Rule } from '../api/admin.ts';

/** Serial-number globs: `*` any run, `?` one character, everything else literal. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

export function ruleMatches(rule: Rule, device: Pick<Device, 'serial' | 'macs'>): boolean {
  switch (rule.match) {
    case 'default':
      return true;
    case 'mac':
      return rule.pattern !== undefined && device.macs.includes(rule.pattern.toLowerCase());
    case 'serial':
      return rule.pattern !== undefined && device.serial !== null && globToRegExp(rule.pattern).test(device.serial);
  }
}

/** The first rule (by priority, then age) that matches; undefined when none does. */
export function chooseRule(rules: readonly Rule[], device: Pick<Device, 'serial' | 'macs'>): Rule | undefined {
  const ordered = [...rules].sort((a, b) => a.priority - b.priority || (a.id ?? 0) - (b.id ?? 0));
  return ordered.find((r) => ruleMatches(r, device));
}

export class PlanResolveError extends Error {
  override name = 'PlanResolveError';
}

/** An image reference in a plan: `image:NAME` (its main file) or `image:NAME/FILE`. */
const IMAGE_REF = /^image:([^/]+)(?:\/([^/]+))?$/;

/** The file a bare `image:NAME` means: the one that is not a bmap, signature or checksum. */
export function mainFile(image: Image): string | undefined {
  const sidecar = /\.(bmap|sig|asc|sha256|sha256sum)$|^SHA256SUMS$/;
  return image.files.find((f) => !sidecar.test(f.name))?.name;
}

/**
 * The plan's configuration with every deploy-image `image: image:NAME[/FILE]` turned into
 * the URL this server serves it at, so a plan names images, not hosts.
 */
export function resolveImages(config: Record<string, unknown>, images: ReadonlyMap<string, Image>, baseUrl: string): Record<string, unknown> {
  const out = structuredClone(config);
  const tasks = Array.isArray(out.tasks) ? (out.tasks as Record<string, unknown>[]) : [];
  for (const task of tasks) {
    const opts = task?.with as Record<string, unknown> | undefined;
    const ref = typeof opts?.image === 'string' ? IMAGE_REF.exec(opts.image) : null;
    if (!opts || !ref) continue;
    const [, name, file] = ref as unknown as [string, string, string | undefined];
    const image = images.get(name);
    if (!image) throw new PlanResolveError(`task ${String(task.name)}: image "${name}" is not registered on this server (bootline image add …)`);
    const chosen = file ?? mainFile(image);
    if (!chosen || !image.files.some((f) => f.name === chosen)) {
      throw new PlanResolveError(`task ${String(task.name)}: image "${name}" has no file "${chosen ?? '(any)'}"`);
    }
    opts.image = `${baseUrl}/images/${encodeURIComponent(name)}/${encodeURIComponent(chosen)}`;
  }
  return out;
}

/** Names of images a plan refers to (to check them when the plan is saved). */
export function imageRefs(config: Record<string, unknown>): string[] {
  const tasks = Array.isArray(config.tasks) ? (config.tasks as Record<string, unknown>[]) : [];
  return tasks.flatMap((t) => {
    const v = (t?.with as Record<string, unknown> | undefined)?.image;
    const m = typeof v === 'string' ? IMAGE_REF.exec(v) : null;
    return m ? [m[1] as string] : [];
  });
}
