// Gathers every configuration source, merges them (file < auto.install < server plan <
// kernel command line < agent options) and validates the result. The only module of
// config/ that does I/O.
import { readFile, access, constants, stat } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { parseConfigText } from './yaml-file.ts';
import { parseIsarConf } from './isar-conf.ts';
import { parseAutoInstall } from './auto-install.ts';
import { parseCmdline } from './cmdline.ts';
import { mergeLayers } from './merge.ts';
import { validateConfig, type BuiltinCatalogue } from './validate.ts';
import { ConfigError, configError, findOrigin, pathKey, type Layer, type Origin, type ConfigIssue } from './layer.ts';
import type { Config } from './schema.ts';

export const DEFAULT_CONFIG = '/etc/bootline/config.yaml';
export const DEFAULT_CMDLINE = '/proc/cmdline';
export const DEFAULT_AUTO_INSTALL = '/install/auto.install';

export interface LoadOptions {
  /** --config: explicit file or URL; missing is an error. */
  config?: string;
  /** --cmdline: file holding the kernel command line. */
  cmdline?: string;
  /** --auto-install: Isar's 5-line file. */
  autoInstall?: string;
  /**
   * A plan received from the server, or a function that fetches it: it is given the
   * merge of every other source (so it sees bootline.server=, bootline.token= and the
   * state dir wherever they were set) and returns the plan's layer.
   */
  plan?: Layer | PlanSource;
  /** Settings given as agent options, highest precedence. */
  overrides?: Record<string, unknown>;
  builtins: BuiltinCatalogue;
  /** Skip the check that script files exist (for --dry-run on another machine). */
  skipScriptCheck?: boolean;
}

/** Fetches the server plan, knowing every other source's settings; undefined: no plan. */
export type PlanSource = (settings: Layer) => Promise<Layer | undefined>;

export interface Loaded {
  config: Config;
  /** The merged layer: data and where every value came from (for --dry-run). */
  merged: Layer;
  sources: string[];
}

export async function loadConfig(opts: LoadOptions): Promise<Loaded> {
  const layers: Layer[] = [];

  const cmdlinePath = opts.cmdline ?? DEFAULT_CMDLINE;
  const cmdlineText = await readOptional(cmdlinePath, opts.cmdline !== undefined, 'kernel command line file (--cmdline)');
  const cmdline = cmdlineText === undefined ? undefined : parseCmdline(cmdlineText, cmdlinePath === DEFAULT_CMDLINE ? 'kernel command line' : cmdlinePath);

  const location = opts.config
    ? { value: opts.config, origin: { source: 'command line', param: `--config ${opts.config}` } as Origin, explicit: true }
    : cmdline?.config
      ? { ...cmdline.config, explicit: true }
      : { value: DEFAULT_CONFIG, origin: { source: 'default' } as Origin, explicit: false };
  const fileLayer = await loadConfigSource(location.value, location.origin, location.explicit);
  if (fileLayer) layers.push(fileLayer);

  const autoPath = opts.autoInstall ?? DEFAULT_AUTO_INSTALL;
  const autoText = await readOptional(autoPath, opts.autoInstall !== undefined, 'auto.install file (--auto-install)');
  if (autoText !== undefined) layers.push(parseAutoInstall(autoText, autoPath));

  const above: Layer[] = [];
  if (cmdline) above.push(cmdline.layer);
  if (opts.overrides && Object.keys(opts.overrides).length > 0) above.push(overridesLayer(opts.overrides));
  const plan = typeof opts.plan === 'function' ? await opts.plan(mergeLayers([...layers, ...above])) : opts.plan;
  if (plan) layers.push(plan);
  layers.push(...above);

  const merged = mergeLayers(layers);
  const config = validateConfig(merged, opts.builtins);
  if (!opts.skipScriptCheck) await checkScripts(config, merged);
  return { config, merged, sources: layers.map((l) => l.name) };
}

/** Reads a config file or URL; `.conf` files are Isar local.conf syntax. */
export async function loadConfigSource(where: string, origin: Origin, explicit: boolean): Promise<Layer | undefined> {
  let text: string;
  if (/^https?:\/\//i.test(where)) {
    text = await fetchText(where, origin);
  } else {
    const path = where.startsWith('file://') ? new URL(where).pathname : where;
    const t = await readOptional(path, explicit, 'config file');
    if (t === undefined) return undefined;
    text = t;
  }
  const name = where;
  return /\.conf$/i.test(new URL(where, 'file:///').pathname) ? parseIsarConf(text, name) : parseConfigText(text, name);
}

async function fetchText(url: string, origin: Origin): Promise<string> {
  // The network may come up a little after the agent starts: retry a few times.
  let lastError = '';
  for (let attempt = 1; attempt <= 5; attempt++) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
      if (res.ok) return await res.text();
      lastError = `HTTP ${res.status} ${res.statusText}`;
      if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) break;
    } catch (e) {
      lastError = (e as Error).cause ? String((e as Error & { cause: Error }).cause.message) : (e as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
  }
  throw configError(origin, 'bootline.config', `cannot fetch ${url}: ${lastError} — check the URL and that the server is reachable`);
}

async function readOptional(path: string, required: boolean, what: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!required && code === 'ENOENT') return undefined;
    throw configError({ source: path }, what, code === 'ENOENT' ? 'file not found — check the path' : `cannot read: ${(e as Error).message}`);
  }
}

function overridesLayer(overrides: Record<string, unknown>): Layer {
  const origins = new Map<string, Origin>();
  const walk = (v: unknown, path: string[]) => {
    origins.set(pathKey(path), { source: 'command line' });
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k, c] of Object.entries(v)) walk(c, [...path, k]);
  };
  for (const [k, v] of Object.entries(overrides)) walk(v, [k]);
  return { name: 'command line', data: overrides, origins };
}

/** Isar runs `./script` from the workdir: check now, so that nothing runs if one is missing. */
async function checkScripts(config: Config, merged: Layer): Promise<void> {
  const issues: ConfigIssue[] = [];
  for (const t of config.tasks) {
    if (t.kind !== 'script' || !t.script) continue;
    const file = isAbsolute(t.script) ? t.script : resolve(t.workdir, t.script);
    const origin = findOrigin(merged.origins, ['tasks', t.name, 'script']);
    try {
      const s = await stat(file);
      if (!s.isFile()) throw Object.assign(new Error('not a file'), { code: 'ENOTFILE' });
      await access(file, constants.X_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'is not executable (chmod +x it)' : code === 'ENOTFILE' ? 'is not a regular file' : (e as Error).message;
      issues.push({ origin, key: `tasks[${t.name}].script`, message: `${file} ${why} (workdir ${join(t.workdir)})` });
    }
  }
  if (issues.length > 0) throw new ConfigError(issues);
}
