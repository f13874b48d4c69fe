// The kernel command line (/proc/cmdline) as a config source.
//
// Tokenizing follows the kernel's own next_arg() (kernel/params.c), so that bootline sees
// exactly the parameters the kernel saw:
//   - parameters are separated by whitespace; double quotes protect whitespace anywhere
//     in a parameter (`"a b=c d"`, `a="b c"`);
//   - the name ends at the first "=" (even inside quotes);
//   - a quote opening the value is removed together with the parameter's last character
//     if that is a quote; a parameter that starts with a quote loses it and its final
//     quote; quotes anywhere else stay;
//   - a lone `--` ends the kernel's parameters: the rest belongs to init and is ignored.
// Unlike the kernel, an unbalanced quote in a bootline.* or installer.* parameter is an
// error (the kernel silently lets it swallow the rest of the line); elsewhere it is
// tolerated.
//
// Mapping:
//   installer.*            Isar's installer parameters (see installer-params.ts)
//   bootline.config=P      a config file path or URL, returned as `config`
//   bootline.<key>=V       any scalar key of the schema, dotted: bootline.unattended,
//                          bootline.abort.timeout=10, bootline.onSuccess.action=reboot,
//                          bootline.tasks.<name>.<key>=V, bootline.tasks.<name>.with.<opt>=V,
//                          bootline.tasks.<name>.env.<VAR>=V. A bare boolean key means true.
//                          A task name may contain dots: the longest name followed by a
//                          task key wins. `with` options are strings (the built-in's own
//                          schema converts them); a dotted option name is one key.
//   bootline.shell, .exit, .net, .dhcpTimeout, .hostname, .install, .modules, .debug
//                          are the installer's /init's (INIT_PARAMS): ignored here.
//   anything else          (root=, console=, quiet, BOOT_IMAGE=...) ignored.
// A key given twice: the later one wins, as with most kernel parameters.
import type { TSchema } from '@sinclair/typebox';
import { ConfigError, displayKey, type ConfigIssue, type Layer, type Origin } from './layer.ts';
import { TASK_NAME_PATTERN, TaskSchema } from './schema.ts';
import { LayerBuilder, coerceScalar, describeSchema, didYouMean, isScalarSchema, knownKeys, schemaAt, schemaKind } from './schema-path.ts';
import { applyInstallerValue, parseInstallerValue, type InstallerInput } from './installer-params.ts';

export interface CmdlineParam {
  name: string;
  /** null for a parameter without "=" (a flag). */
  value: string | null;
  /** 1-based column where the parameter starts. */
  column: number;
  /** The parameter as written, quotes included. */
  raw: string;
  /** A double quote is left open: the parameter runs to the end of the line. */
  unbalanced?: boolean;
}

export const CMDLINE_SOURCE = 'kernel command line';

const isSpace = (c: string | undefined): boolean =>
  c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\v' || c === '\f';

/** Read by the installer's /init (see docs/lab.md), not by the agent: accepted and left alone here. */
export const INIT_PARAMS: ReadonlySet<string> = new Set([
  'bootline.shell', 'bootline.exit', 'bootline.net', 'bootline.dhcpTimeout', 'bootline.hostname', 'bootline.install', 'bootline.modules', 'bootline.debug',
]);

const ours = (name: string): boolean => name.startsWith('bootline.') || name.startsWith('installer.');

/** Shortens a long parameter for a message. */
const shown = (raw: string): string => (raw.length > 60 ? `${raw.slice(0, 57)}...` : raw);

function tokenize(text: string, source: string): { params: CmdlineParam[]; issues: ConfigIssue[] } {
  const params: CmdlineParam[] = [];
  const issues: ConfigIssue[] = [];
  const n = text.length;
  let i = 0;
  while (i < n && isSpace(text[i])) i++;
  while (i < n) {
    const start = i;
    let j = i;
    let inQuote = false;
    let quoted = false;
    let openedAt = -1;
    if (text[j] === '"') {
      openedAt = j;
      j++;
      inQuote = quoted = true;
    }
    const argStart = j;
    let equals = -1;
    for (; j < n; j++) {
      const c = text[j];
      if (isSpace(c) && !inQuote) break;
      if (equals < 0 && c === '=') equals = j;
      if (c === '"') {
        inQuote = !inQuote;
        if (inQuote) openedAt = j;
      }
    }
    const end = j;
    // The kernel drops the parameter's last character when it is a quote closing a quoted
    // parameter or a quoted value.
    const lastIsQuote = end > argStart && text[end - 1] === '"';
    let name: string;
    let value: string | null;
    if (equals < 0) {
      name = text.slice(argStart, quoted && lastIsQuote ? end - 1 : end);
      value = null;
    } else {
      name = text.slice(argStart, equals);
      let vs = equals + 1;
      let ve = end;
      if (text[vs] === '"') {
        vs++;
        if (lastIsQuote) ve = end - 1;
      } else if (quoted && lastIsQuote) {
        ve = end - 1;
      }
      value = ve > vs ? text.slice(vs, ve) : '';
    }
    const raw = text.slice(start, end);
    const column = start + 1;
    if (value === null && name === '--') break;
    if (inQuote && ours(name)) {
      issues.push({
        origin: { source, column },
        key: shown(raw),
        message: `unbalanced double quote (opened at column ${openedAt + 1}): close it, or the parameter takes in the rest of the command line`,
      });
    }
    params.push({ name, value, column, raw, ...(inQuote ? { unbalanced: true } : {}) });
    i = end;
    while (i < n && isSpace(text[i])) i++;
  }
  return { params, issues };
}

/**
 * Splits a kernel command line into parameters the way the kernel does; stops at `--`.
 * Throws a ConfigError for an unbalanced quote in a bootline.* or installer.* parameter.
 */
export function tokenizeCmdline(text: string, source: string): CmdlineParam[] {
  const { params, issues } = tokenize(text, source);
  if (issues.length > 0) throw new ConfigError(issues);
  return params;
}

const INSTALLER_PARAMS: Record<string, InstallerInput> = {
  'installer.unattended': 'unattended',
  'installer.image.uri': 'image',
  'installer.target.dev': 'target',
  'installer.target.overwrite': 'overwrite',
  'installer.unattended.abort.enable': 'abortEnable',
  'installer.unattended.abort.timeout': 'abortTimeout',
};

const TASK_KEYS = Object.keys(TaskSchema.properties);
const taskNameRe = new RegExp(TASK_NAME_PATTERN);
const USE_CONFIG = 'put it in a config file and pass bootline.config=<path or URL>';

type Resolved = { ok: true; path: string[]; schema: TSchema } | { ok: false; message: string };

/** Resolves the dotted key of a bootline.<key> parameter to a canonical path and its scalar schema. */
export function resolveCmdlineKey(dotted: string): Resolved {
  const segs = dotted.split('.');
  if (segs.some((s) => s === '')) return { ok: false, message: `"${dotted}" is not a key: it has an empty part between dots` };
  const path: string[] = [];
  let node: TSchema | undefined = schemaAt([]);
  let i = 0;
  while (i < segs.length) {
    const seg = segs[i]!;
    if (path.length === 0 && seg === 'tasks') {
      const rest = segs.slice(i + 1);
      if (rest.length < 2) {
        return {
          ok: false,
          message:
            rest.length === 0
              ? `the task list can't be set from the kernel command line: ${USE_CONFIG}; single task keys can be set with bootline.tasks.<name>.<key>=<value>`
              : `missing the task key: write bootline.tasks.${rest[0]}.<key>=<value>, where <key> is one of ${TASK_KEYS.filter((k) => k !== 'name').join(', ')}`,
        };
      }
      let k = rest.length - 1;
      while (k >= 1 && !TASK_KEYS.includes(rest[k]!)) k--;
      if (k < 1) {
        const name = rest.slice(0, -1).join('.');
        const key = rest[rest.length - 1]!;
        return { ok: false, message: `unknown key "${key}" for task "${name}".${didYouMean(key, TASK_KEYS)} A task's keys are ${TASK_KEYS.filter((k) => k !== 'name').join(', ')}` };
      }
      const name = rest.slice(0, k).join('.');
      if (!taskNameRe.test(name)) {
        return { ok: false, message: `"${name}" is not a valid task name (letters, digits, ".", "_", "-"; starting with a letter or digit)` };
      }
      if (rest[k] === 'name') {
        return { ok: false, message: `a task's name can't be set: it is the <name> in bootline.tasks.<name>.<key>` };
      }
      path.push('tasks', name);
      node = TaskSchema;
      i += 1 + k;
      continue;
    }
    if (!node) break;
    const kind = schemaKind(node);
    if (kind === 'Object') {
      const keys = knownKeys(path);
      if (!keys.includes(seg)) {
        const where = path.length === 0 ? '' : ` in ${displayKey(path)}`;
        return { ok: false, message: `unknown key "${seg}"${where}.${didYouMean(seg, keys)} Known keys: ${keys.join(', ')}` };
      }
      path.push(seg);
      node = schemaAt(path);
      i++;
    } else if (kind === 'Record') {
      path.push(segs.slice(i).join('.'));
      node = schemaAt(path);
      i = segs.length;
    } else if (isScalarSchema(node)) {
      return { ok: false, message: `${displayKey(path)} is ${describeSchema(node)}: it has no key "${seg}"` };
    } else {
      break;
    }
  }
  if (!node || !isScalarSchema(node)) {
    const what = node ? describeSchema(node) : 'not a single value';
    return { ok: false, message: `${displayKey(path)} is ${what}, which can't be set from the kernel command line: ${USE_CONFIG}` };
  }
  return { ok: true, path, schema: node };
}

/**
 * Reads the bootline.* and installer.* parameters of a kernel command line into a layer.
 * `config` is the bootline.config= parameter (a file path or URL to load as well).
 */
export function parseCmdline(text: string, source: string = CMDLINE_SOURCE): { layer: Layer; config?: { value: string; origin: Origin } } {
  const { params, issues } = tokenize(text, source);
  const b = new LayerBuilder(source);
  let config: { value: string; origin: Origin } | undefined;

  for (const p of params) {
    if ((!ours(p.name) && p.name !== 'bootline' && p.name !== 'installer') || INIT_PARAMS.has(p.name)) continue;
    if (p.unbalanced) continue; // already reported
    const origin: Origin = { source, param: p.raw, column: p.column };
    const fail = (message: string) => issues.push({ origin: { source, column: p.column }, key: shown(p.raw), message });

    if (p.name === 'bootline' || p.name === 'installer') {
      fail(`missing the key: write ${p.name}.<key>=<value>`);
    } else if (p.name.startsWith('installer.')) {
      const input = INSTALLER_PARAMS[p.name];
      if (!input) {
        const known = Object.keys(INSTALLER_PARAMS);
        fail(`unknown installer parameter "${p.name}".${didYouMean(p.name, known)} Known ones: ${known.join(', ')}`);
        continue;
      }
      const parsed = parseInstallerValue(input, p.value);
      if (!parsed.ok) fail(`expected ${parsed.expected}`);
      else applyInstallerValue(b, input, parsed.value, origin);
    } else if (p.name === 'bootline.config') {
      if (p.value === null || p.value.trim() === '') fail('expected the path or URL of a config file (bootline.config=<path or URL>)');
      else config = { value: p.value, origin };
    } else {
      const r = resolveCmdlineKey(p.name.slice('bootline.'.length));
      if (!r.ok) {
        fail(r.message);
        continue;
      }
      const c = coerceScalar(r.schema, p.value);
      if (!c.ok) fail(`expected ${c.expected}`);
      else b.set(r.path, c.value, origin);
    }
  }

  if (issues.length > 0) throw new ConfigError(issues.sort((a, z) => (a.origin?.column ?? 0) - (z.origin?.column ?? 0)));
  return config ? { layer: b.layer(), config } : { layer: b.layer() };
}
