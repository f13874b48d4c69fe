// Isar's target-bootstrapper settings, read from BitBake configuration syntax (a
// local.conf, or just the TARGET_BOOTSTRAPPER_* lines of one), so that a project moving
// from Isar can keep the lines it has:
//
//   TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES += " device-info-collector"
//   TARGET_BOOTSTRAPPER_TASK_device-info-collector[script] = "device-info-collector.sh"
//   TARGET_BOOTSTRAPPER_TASK_device-info-collector[workdir] = "/usr/bin"
//   TARGET_BOOTSTRAPPER_TASK_device-info-collector[effort] = "1"
//
// ADDITIONAL_PACKAGES is the ordered list of task names; each task's settings are the
// flags of TARGET_BOOTSTRAPPER_TASK_<name>: Isar's script, workdir (default "."),
// effort (default 1), and bootline's additions args (split at white space), timeout,
// retries, optional, rerun.
//
// BitBake semantics, in the subset this needs:
//   - `=` and `:=` set; `?=` sets if unset at that point; `??=` is a weak default used
//     at the end if nothing else set the variable (the last `??=` wins). As in BitBake,
//     `+=`, `=+`, `.=`, `=.` and `?=` do not see a weak default: after
//     `X ??= "a"`, `X += "b"` gives " b";
//   - `+=`/`=+` add with a space, `.=`/`=.` without, in order;
//   - `X:append`, `X:prepend`, `X:remove` apply after everything else, in that order,
//     and do see a weak default. Other overrides (`X:qemuamd64`) depend on OVERRIDES,
//     which bootline can't know: an error;
//   - values are in double or single quotes; a trailing backslash continues a line;
//     `#` starts a comment line; `export`, `unset VAR`, `unset VAR[flag]` work;
//     `include`, `require`, `inherit` lines are skipped (their files are not read);
//   - `${...}` expansion is not done: a TARGET_BOOTSTRAPPER_* value containing it is
//     an error.
// Other variables (MACHINE, DISTRO, IMAGE_INSTALL, ...) are ignored, so a whole
// local.conf can be given.
//
// The deploy-image task (when it has no [script], or its script is Isar's
// deploy-image-wic.sh) becomes bootline's built-in deploy-image; its [workdir], which
// only says where Isar's script is installed, is dropped.
import { ConfigError, type ConfigIssue, type Layer, type Origin } from './layer.ts';
import { TASK_NAME_PATTERN } from './schema.ts';
import { LayerBuilder, didYouMean, parseBoolean, parseNumber } from './schema-path.ts';
import { DEPLOY_IMAGE } from './installer-params.ts';

const PREFIX = 'TARGET_BOOTSTRAPPER';
const PACKAGES = 'TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES';
const TASK_PREFIX = 'TARGET_BOOTSTRAPPER_TASK_';
const ISAR_DEPLOY_SCRIPT = 'deploy-image-wic.sh';

type Op = '=' | ':=' | '?=' | '??=' | '+=' | '=+' | '.=' | '=.';

/** How each flag becomes a task key; `parse` returns undefined for a bad value. */
const FLAGS: Record<string, { key: string; expected: string; parse: (v: string) => unknown }> = {
  script: { key: 'script', expected: 'the script to run', parse: (v) => nonEmpty(v) },
  workdir: { key: 'workdir', expected: 'a directory', parse: (v) => nonEmpty(v) },
  effort: { key: 'effort', expected: 'a positive number', parse: (v) => positive(v) },
  args: { key: 'args', expected: 'arguments separated by spaces', parse: (v) => v.split(/\s+/).filter((a) => a !== '') },
  timeout: { key: 'timeout', expected: 'a positive number of seconds', parse: (v) => positive(v) },
  retries: { key: 'retries', expected: 'a whole number, 0 or more', parse: (v) => (/^\s*\d+\s*$/.test(v) ? Number(v) : undefined) },
  optional: { key: 'optional', expected: 'a boolean (1/0, true/false)', parse: parseBoolean },
  rerun: {
    key: 'rerun',
    expected: 'if-unfinished or always',
    parse: (v) => (['if-unfinished', 'always'].includes(v.trim()) ? v.trim() : undefined),
  },
};
const FLAG_NAMES = Object.keys(FLAGS);

function nonEmpty(v: string): string | undefined {
  const t = v.trim();
  return t === '' ? undefined : t;
}
function positive(v: string): number | undefined {
  const n = parseNumber(v);
  return n !== undefined && n > 0 ? n : undefined;
}

// ---------------------------------------------------------------------------------
// Lines

interface Statement {
  text: string;
  /** First physical line. */
  line: number;
  /** Maps an offset in `text` to the physical line and column. */
  at(offset: number): { line: number; column: number };
}

function statements(text: string, source: string, issues: ConfigIssue[]): Statement[] {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n|\r/);
  const out: Statement[] = [];
  for (let i = 0; i < lines.length; i++) {
    let s = lines[i]!.trimEnd();
    if (s.trim() === '') continue;
    const first = i + 1;
    const pieces = [{ offset: 0, line: first }];
    const isComment = s.trimStart().startsWith('#');
    while (s.endsWith('\\') && i + 1 < lines.length) {
      i++;
      const next = lines[i]!.trimEnd();
      const nextIsComment = next.trimStart().startsWith('#');
      if (isComment !== nextIsComment && next.trim() !== '') {
        issues.push({
          origin: { source, line: i + 1 },
          key: 'syntax',
          message: isComment
            ? `the comment on line ${first} ends with a backslash, which continues it onto this line — remove the backslash`
            : `a comment inside a value continued with backslashes — move the comment out of the value`,
        });
      }
      s = s.slice(0, -1);
      pieces.push({ offset: s.length, line: i + 1 });
      s += next;
    }
    if (isComment) continue;
    out.push({
      text: s,
      line: first,
      at(offset) {
        let p = pieces[0]!;
        for (const q of pieces) if (q.offset <= offset) p = q;
        return { line: p.line, column: offset - p.offset + 1 };
      },
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------
// Variables

interface Change {
  kind: Op | 'append' | 'prepend' | 'remove' | 'unset';
  value: string;
  line: number;
}

/** Everything done to one variable or one flag, in order. */
class Variable {
  readonly changes: Change[] = [];

  /** The final value as BitBake computes it, or undefined when unset. */
  resolve(): { value: string; line: number } | undefined {
    let value: string | undefined;
    let line = 0;
    let weak: { value: string; line: number } | undefined;
    const appends: Change[] = [];
    const prepends: Change[] = [];
    const removes: Change[] = [];
    for (const c of this.changes) {
      switch (c.kind) {
        case '=':
        case ':=':
          value = c.value;
          break;
        case '?=':
          if (value !== undefined) continue;
          value = c.value;
          break;
        case '??=':
          weak = { value: c.value, line: c.line };
          continue;
        case '+=':
          value = `${value ?? ''} ${c.value}`;
          break;
        case '=+':
          value = `${c.value} ${value ?? ''}`;
          break;
        case '.=':
          value = `${value ?? ''}${c.value}`;
          break;
        case '=.':
          value = `${c.value}${value ?? ''}`;
          break;
        case 'append':
          appends.push(c);
          continue;
        case 'prepend':
          prepends.push(c);
          continue;
        case 'remove':
          removes.push(c);
          continue;
        case 'unset':
          value = undefined;
          weak = undefined;
          appends.length = prepends.length = removes.length = 0;
          continue;
      }
      line = c.line;
    }
    if (value === undefined && weak) ({ value, line } = weak);
    if (value === undefined && appends.length + prepends.length === 0) return undefined;
    for (const c of appends) [value, line] = [(value ?? '') + c.value, c.line];
    for (const c of prepends) [value, line] = [c.value + (value ?? ''), c.line];
    if (removes.length > 0) {
      const gone = new Set(removes.flatMap((c) => c.value.split(/\s+/)));
      value = (value ?? '')
        .split(/\s+/)
        .filter((w) => w !== '' && !gone.has(w))
        .join(' ');
      line = removes[removes.length - 1]!.line;
    }
    return { value: value ?? '', line };
  }

  /** Only weak defaults (`??=`), as a recipe's defaults are: no statement of the user's. */
  weakOnly(): boolean {
    return this.changes.every((c) => c.kind === '??=');
  }

  /** The line of the last statement whose value names `word`. */
  lineOf(word: string): number | undefined {
    let line: number | undefined;
    for (const c of this.changes) if (c.kind !== 'remove' && c.value.split(/\s+/).includes(word)) line = c.line;
    return line;
  }
}

// ---------------------------------------------------------------------------------
// Parsing

const ASSIGN_RE = /^(export\s+)?([A-Za-z0-9\-_+.${}/~:]+?)(\[([^\]]*)\])?\s*(:=|\?\?=|\?=|\+=|=\+|=\.|\.=|=)\s*/;
const UNSET_RE = /^unset\s+(?:-f\s+)?([A-Za-z0-9\-_+.${}/~:]+)(\[([^\]]*)\])?\s*$/;
const DIRECTIVE_RE = /^(include|require|inherit|include_all|inherit_defer|addfragments|addpylib|export|unset)(\s|$)/;

interface Target {
  /** The variable as written, for messages: TARGET_BOOTSTRAPPER_TASK_x[effort]. */
  display: string;
  variable: Variable;
}

export function parseIsarConf(text: string, source: string): Layer {
  const issues: ConfigIssue[] = [];
  const packages = new Variable();
  /** task name -> flag -> variable */
  const flags = new Map<string, Map<string, Variable>>();
  const fail = (origin: Origin, key: string, message: string) => issues.push({ origin, key, message });

  /** Which variable a TARGET_BOOTSTRAPPER_* name (and flag) addresses; undefined after reporting why not. */
  const target = (name: string, flag: string | undefined, origin: Origin): { t: Target; override?: string } | undefined => {
    const [base, ...overrides] = name.split(':');
    const display = `${base}${flag === undefined ? '' : `[${flag}]`}`;
    if (name.includes('$')) {
      fail(origin, display, 'variable expansion (${...}) in a TARGET_BOOTSTRAPPER_* name is not supported — write the name itself');
      return undefined;
    }
    let override: string | undefined;
    if (overrides.length > 0) {
      const o = overrides.join(':');
      if (!['append', 'prepend', 'remove'].includes(o)) {
        fail(
          origin,
          name,
          `the override ":${o}" depends on OVERRIDES (machine, distro, ...), which bootline can't know — write the value for this device without it`,
        );
        return undefined;
      }
      override = o;
    }
    if (base === PACKAGES) {
      if (flag !== undefined) {
        fail(origin, display, `${PACKAGES} takes no [flag]: it is the space-separated list of task names`);
        return undefined;
      }
      return { t: { display, variable: packages }, override };
    }
    if (base!.startsWith(TASK_PREFIX)) {
      const task = base!.slice(TASK_PREFIX.length);
      if (!new RegExp(TASK_NAME_PATTERN).test(task)) {
        fail(origin, display, `"${task}" is not a valid task name (letters, digits, ".", "_", "-"; starting with a letter or digit)`);
        return undefined;
      }
      if (flag === undefined) {
        fail(origin, display, `set a flag of it, e.g. ${base}[script] = "my-script.sh"; valid flags: ${FLAG_NAMES.join(', ')}`);
        return undefined;
      }
      if (!FLAGS[flag]) {
        fail(origin, display, `unknown flag [${flag}].${didYouMean(flag, FLAG_NAMES)} Valid flags: ${FLAG_NAMES.join(', ')}`);
        return undefined;
      }
      if (override !== undefined) {
        fail(origin, `${name}[${flag}]`, `:${override} is not supported on a flag — assign the flag with = or +=`);
        return undefined;
      }
      let m = flags.get(task);
      if (!m) flags.set(task, (m = new Map()));
      let v = m.get(flag);
      if (!v) m.set(flag, (v = new Variable()));
      return { t: { display, variable: v } };
    }
    const legacy = /_(append|prepend|remove)$/.exec(base!);
    const hint = legacy
      ? ` (BitBake spells it ${base!.slice(0, legacy.index)}:${legacy[1]} since 4.0)`
      : didYouMean(base!, [PACKAGES, `${TASK_PREFIX}<name>`]);
    fail(origin, display, `unknown variable.${hint} bootline reads ${PACKAGES} and ${TASK_PREFIX}<name>[flag]`);
    return undefined;
  };

  for (const st of statements(text, source, issues)) {
    const lead = st.text.length - st.text.trimStart().length;
    const s = st.text.slice(lead);
    const originAt = (offset: number): Origin => ({ source, ...st.at(lead + offset) });
    const lineOrigin: Origin = { source, line: st.line };

    const m = ASSIGN_RE.exec(s);
    if (m) {
      const name = m[2]!;
      const flag = m[4];
      const op = m[5] as Op;
      if (!name.startsWith(PREFIX)) continue;
      const t = target(name, flag, lineOrigin);
      if (!t) continue;
      const rest = s.slice(m[0].length);
      const restAt = m[0].length;
      const q = rest[0];
      if (q !== '"' && q !== "'") {
        fail(originAt(restAt), t.t.display, `the value must be in double quotes: ${name}${flag === undefined ? '' : `[${flag}]`} ${op} "..."`);
        continue;
      }
      const close = rest.lastIndexOf(q);
      if (close === 0) {
        fail(originAt(restAt), t.t.display, `unbalanced ${q === '"' ? 'double' : 'single'} quote — close the value with ${q}, or end the line with \\ to continue it`);
        continue;
      }
      if (rest.slice(close + 1).trim() !== '') {
        fail(originAt(restAt + close + 1), t.t.display, `unexpected text after the closing quote — BitBake allows comments only on lines of their own`);
        continue;
      }
      const value = rest.slice(1, close);
      if (value.includes('${')) {
        fail(originAt(restAt + 1 + value.indexOf('${')), t.t.display, 'variable expansion (${...}) is not supported by bootline — write the value itself');
        continue;
      }
      if (t.override !== undefined) {
        if (op !== '=' && op !== '+=' && op !== '.=') {
          fail(lineOrigin, name, `"${op}" can't be used with :${t.override} — use =`);
          continue;
        }
        t.t.variable.changes.push({ kind: t.override as Change['kind'], value: op === '+=' ? ` ${value}` : value, line: st.line });
      } else {
        t.t.variable.changes.push({ kind: op, value, line: st.line });
      }
      continue;
    }

    const u = UNSET_RE.exec(s);
    if (u) {
      if (!u[1]!.startsWith(PREFIX)) continue;
      const t = target(u[1]!, u[3], lineOrigin);
      if (t) t.t.variable.changes.push({ kind: 'unset', value: '', line: st.line });
      continue;
    }

    // include/require/inherit (their files are not read), a bare `export VAR`.
    if (DIRECTIVE_RE.test(s)) continue;

    if (s.startsWith(PREFIX)) {
      const key = /^[^\s=]+/.exec(s)![0];
      fail(originAt(0), key, `not a BitBake assignment — write ${key} = "value"`);
    } else {
      fail(originAt(0), 'syntax', `not a BitBake assignment (VAR = "value") or directive (include, require, inherit, export, unset) — fix or remove this line`);
    }
  }

  const b = new LayerBuilder(source);
  const list = packages.resolve();
  const names = list ? list.value.split(/\s+/).filter((n) => n !== '') : [];
  const listed = new Set<string>();
  const nameRe = new RegExp(TASK_NAME_PATTERN);
  for (const name of names) {
    const origin: Origin = { source, line: packages.lineOf(name) ?? list!.line };
    if (listed.has(name)) {
      fail(origin, PACKAGES, `"${name}" is listed twice — task names must be unique; remove one`);
      continue;
    }
    listed.add(name);
    if (!nameRe.test(name)) {
      fail(origin, PACKAGES, `"${name}" is not a valid task name (letters, digits, ".", "_", "-"; starting with a letter or digit)`);
      continue;
    }
    addTask(b, name, origin, flags.get(name), source, fail);
  }
  if (list) b.origins.set('tasks', { source, line: list.line });

  for (const [name, m] of flags) {
    if (listed.has(name)) continue;
    for (const [flag, v] of m) {
      if (v.weakOnly()) continue;
      const line = v.changes.find((c) => c.kind !== '??=')!.line;
      fail(
        { source, line },
        `${TASK_PREFIX}${name}[${flag}]`,
        `"${name}" is not listed in ${PACKAGES} — add it there (${PACKAGES} += " ${name}") or remove this line`,
      );
      break;
    }
  }

  if (issues.length > 0) throw new ConfigError(issues.sort((a, z) => (a.origin?.line ?? 0) - (z.origin?.line ?? 0)));
  return b.layer();
}

function addTask(
  b: LayerBuilder,
  name: string,
  origin: Origin,
  flags: Map<string, Variable> | undefined,
  source: string,
  fail: (origin: Origin, key: string, message: string) => void,
): void {
  const values = new Map<string, { value: string; line: number }>();
  for (const [flag, v] of flags ?? []) {
    const r = v.resolve();
    if (r) values.set(flag, r);
  }
  const script = values.get('script');
  const scriptValue = script?.value.trim() ?? '';
  const isarDeploy = scriptValue === ISAR_DEPLOY_SCRIPT || scriptValue.endsWith(`/${ISAR_DEPLOY_SCRIPT}`);
  const builtin = (name === DEPLOY_IMAGE && scriptValue === '') || isarDeploy;
  const missingScript = !builtin && scriptValue === '';
  if (missingScript) {
    fail(origin, `${TASK_PREFIX}${name}[script]`, `not set — set it to the script to run: ${TASK_PREFIX}${name}[script] = "my-script.sh"`);
  } else {
    b.task(name, origin);
    if (builtin) b.set(['tasks', name, 'builtin'], DEPLOY_IMAGE, script ? { source, line: script.line } : origin);
  }
  for (const [flag, { value, line }] of values) {
    if (builtin && (flag === 'script' || flag === 'workdir')) continue;
    if (missingScript && flag === 'script') continue;
    const spec = FLAGS[flag]!;
    const parsed = spec.parse(value);
    const at: Origin = { source, line };
    if (parsed === undefined) {
      fail(at, `${TASK_PREFIX}${name}[${flag}]`, `expected ${spec.expected}, got "${value}"`);
      continue;
    }
    if (!missingScript) b.set(['tasks', name, spec.key], parsed, at);
  }
}
