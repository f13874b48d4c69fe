// A configuration layer: the partial config one source contributes, and where each
// value came from, so that an error or `--dry-run` can name the file and line or the
// kernel parameter behind any setting.

/** Where a value came from. */
export interface Origin {
  /** The source: a file path, "kernel command line", "server plan", "command line". */
  source: string;
  line?: number;
  column?: number;
  /** The kernel parameter or Isar variable that set it. */
  param?: string;
}

export type Path = readonly (string | number)[];

export interface Layer {
  /** Human name of the source, e.g. "/etc/bootline/config.yaml". */
  name: string;
  data: Record<string, unknown>;
  /** Keyed by pathKey() of the canonical path. */
  origins: Map<string, Origin>;
}

/**
 * A path whose task indices are replaced by task names, so that a key means the same
 * in every layer and in the merged result ("tasks/deploy-image/effort").
 */
export function canonicalPath(root: unknown, path: Path): string[] {
  const out: string[] = [];
  let node: unknown = root;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const parentIsTasks = i === 1 && out[0] === 'tasks';
    let next: unknown = undefined;
    if (node !== null && typeof node === 'object') next = (node as Record<string | number, unknown>)[seg];
    if (parentIsTasks && next && typeof next === 'object' && typeof (next as { name?: unknown }).name === 'string') {
      out.push((next as { name: string }).name);
    } else {
      out.push(String(seg));
    }
    node = next;
  }
  return out;
}

export const pathKey = (segments: readonly string[]): string => segments.join('/');

/** "tasks[deploy-image].effort", the way a user would name a key. */
export function displayKey(segments: readonly string[]): string {
  let s = '';
  segments.forEach((seg, i) => {
    if (i === 1 && segments[0] === 'tasks') s += `[${seg}]`;
    else if (/^\d+$/.test(seg)) s += `[${seg}]`;
    else s += s === '' ? seg : `.${seg}`;
  });
  return s === '' ? '(top level)' : s;
}

export function describeOrigin(o: Origin | undefined): string {
  if (!o) return 'defaults';
  if (o.param) return `${o.source}: ${o.param}`;
  if (o.line !== undefined) return `${o.source}:${o.line}${o.column !== undefined ? `:${o.column}` : ''}`;
  return o.source;
}

/** The origin of the nearest path at or above `segments` that has one. */
export function findOrigin(origins: Map<string, Origin>, segments: readonly string[]): Origin | undefined {
  for (let n = segments.length; n >= 0; n--) {
    const o = origins.get(pathKey(segments.slice(0, n)));
    if (o) return o;
  }
  return undefined;
}

export interface ConfigIssue {
  origin?: Origin;
  /** Display form of the key, e.g. "tasks[deploy-image].effort". */
  key: string;
  message: string;
}

/** A configuration that cannot be used. Nothing runs when one is thrown. */
export class ConfigError extends Error {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(i: ConfigIssue): string {
  return `${describeOrigin(i.origin)}: ${i.key}: ${i.message}`;
}

export function configError(origin: Origin | undefined, key: string, message: string): ConfigError {
  return new ConfigError([{ origin, key, message }]);
}
