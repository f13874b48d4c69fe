// Checks the merged configuration against the schema and turns it into the typed
// Config with every default applied. Pure: the built-in task catalogue is passed in.
import { Value } from '@sinclair/typebox/value';
import { ValueErrorType, type ValueError } from '@sinclair/typebox/errors';
import type { TObject, TSchema } from '@sinclair/typebox';
import { ConfigSchema, REPORTER_TYPES, ReporterSchemas, type Config, type RawConfig, type ReporterConfig, type Task } from './schema.ts';
import { ConfigError, canonicalPath, displayKey, findOrigin, type ConfigIssue, type Layer } from './layer.ts';
import { EVENT_TYPES } from '../events.ts';
import { closest } from './suggest.ts';

export interface BuiltinCatalogue {
  [name: string]: { optionsSchema: TObject } | undefined;
}

type Obj = Record<string, unknown>;

export function validateConfig(merged: Layer, builtins: BuiltinCatalogue): Config {
  const data = merged.data;
  const issues: ConfigIssue[] = [];
  const issue = (path: (string | number)[], message: string, root: unknown = data) => {
    const segs = canonicalPath(root, path);
    issues.push({ origin: findOrigin(merged.origins, segs), key: displayKey(segs), message });
  };

  // Reporters are checked on their own, against the schema their `type` names, so that
  // an error says "url: expected a string" rather than "matches none of 6 schemas".
  const { reporters, ...rest } = data;
  const withoutReporters = { ...rest, tasks: rest.tasks ?? [] };
  for (const e of Value.Errors(ConfigSchema, withoutReporters)) {
    if (e.path === '/reporters') continue;
    issue(pointer(e.path), describe(e), withoutReporters);
  }
  if (!Array.isArray(data.tasks) || data.tasks.length === 0) {
    issues.push({
      origin: findOrigin(merged.origins, ['tasks']),
      key: 'tasks',
      message: 'no tasks to run — give a task list (tasks: in the config file, TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES, or installer.image.uri=)',
    });
  }
  if (reporters !== undefined) checkReporters(reporters, issue);

  const tasks = Array.isArray(data.tasks) ? (data.tasks as unknown[]) : [];
  tasks.forEach((t, i) => {
    if (t === null || typeof t !== 'object') return;
    const task = t as Obj;
    const hasBuiltin = typeof task.builtin === 'string';
    const hasScript = typeof task.script === 'string';
    if (hasBuiltin && hasScript) issue(['tasks', i], 'has both builtin: and script: — a task is either a built-in or a script; remove one');
    else if (!hasBuiltin && !hasScript) issue(['tasks', i], 'has neither builtin: nor script: — say what the task runs');
    if (hasBuiltin) {
      const b = builtins[task.builtin as string];
      if (!b) {
        const known = Object.keys(builtins).sort();
        const hint = closest(task.builtin as string, known);
        issue(['tasks', i, 'builtin'], `unknown built-in "${String(task.builtin)}"${hint ? ` (did you mean "${hint}"?)` : ''} — known: ${known.join(', ')}`);
      } else {
        // Options set on the kernel command line arrive as strings: convert "1" to true etc.
        const opts = convertOptions(b.optionsSchema, task.with);
        for (const e of Value.Errors(b.optionsSchema, opts)) issue(['tasks', i, 'with', ...pointer(e.path)], describe(e));
      }
    }
    if (hasScript) {
      if (task.with !== undefined) issue(['tasks', i, 'with'], 'is only for built-in tasks — pass options to a script with args: or env:');
      if (/^\s|\s$/.test(task.script as string)) issue(['tasks', i, 'script'], 'has leading or trailing white space');
    }
  });

  if (issues.length > 0) throw new ConfigError(issues);
  return normalize(data as RawConfig, builtins);
}

function checkReporters(reporters: unknown, issue: (path: (string | number)[], message: string) => void) {
  if (!Array.isArray(reporters)) {
    issue(['reporters'], 'expected a list of reporters (- type: console, ...)');
    return;
  }
  reporters.forEach((r, i) => {
    const type = r !== null && typeof r === 'object' ? (r as Obj).type : undefined;
    if (typeof type !== 'string' || !(REPORTER_TYPES as string[]).includes(type)) {
      const hint = typeof type === 'string' ? closest(type, REPORTER_TYPES) : undefined;
      issue(['reporters', i, 'type'], `expected one of ${REPORTER_TYPES.join(', ')}${typeof type === 'string' ? `, got "${type}"` : ''}${hint ? ` (did you mean "${hint}"?)` : ''}`);
      return;
    }
    const schema = ReporterSchemas[type as keyof typeof ReporterSchemas];
    for (const e of Value.Errors(schema, r)) issue(['reporters', i, ...pointer(e.path)], describe(e));
    const events = (r as Obj).events;
    if (Array.isArray(events)) {
      events.forEach((ev, j) => {
        if (typeof ev === 'string' && !(EVENT_TYPES as string[]).includes(ev)) issue(['reporters', i, 'events', j], `unknown event type "${ev}" — known: ${EVENT_TYPES.join(', ')}`);
      });
    }
  });
}

const pointer = (p: string): string[] =>
  p === '' ? [] : p.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));

/** A message a person can act on, with a did-you-mean for misspelt keys. */
function describe(e: ValueError): string {
  const got = e.value === undefined ? '' : `, got ${JSON.stringify(e.value)}`;
  switch (e.type) {
    case ValueErrorType.ObjectAdditionalProperties: {
      // For this error TypeBox reports the object's own schema: its properties are the known keys.
      const known = Object.keys((e.schema as Partial<TObject>).properties ?? {});
      const hint = closest(pointer(e.path).at(-1) ?? '', known);
      return `unknown key${hint ? ` (did you mean "${hint}"?)` : ''}${known.length ? ` — known keys here: ${known.join(', ')}` : ''}`;
    }
    case ValueErrorType.ObjectRequiredProperty:
      return 'is required';
    case ValueErrorType.Union: {
      const lits = literals(e.schema);
      return lits.length ? `expected one of ${lits.join(', ')}${got}` : `${e.message}${got}`;
    }
    case ValueErrorType.NumberExclusiveMinimum:
      return `expected a positive number${got}`;
    default:
      return `${e.message.replace(/^Expected/, 'expected')}${got}`;
  }
}

function literals(s: TSchema): string[] {
  const anyOf = (s as { anyOf?: TSchema[] }).anyOf ?? [];
  return anyOf.map((x) => (x as { const?: unknown }).const).filter((c): c is string => typeof c === 'string');
}

/** Options set on the kernel command line arrive as strings: "1" becomes true, "3" becomes 3. */
function convertOptions(schema: TObject, options: unknown): Obj {
  return Value.Convert(schema, structuredClone(options ?? {})) as Obj;
}

function normalize(raw: RawConfig, builtins: BuiltinCatalogue): Config {
  const tasks: Task[] = raw.tasks.map((t) => {
    const b = t.builtin ? builtins[t.builtin] : undefined;
    const options = b ? (Value.Default(b.optionsSchema, convertOptions(b.optionsSchema, t.with)) as Record<string, unknown>) : {};
    return {
      name: t.name,
      kind: t.builtin ? 'builtin' : 'script',
      ...(t.builtin ? { builtin: t.builtin } : {}),
      ...(t.script ? { script: t.script } : {}),
      with: options,
      workdir: t.workdir ?? '.',
      args: t.args ?? [],
      env: t.env ?? {},
      effort: t.effort ?? 1,
      ...(t.timeout !== undefined ? { timeout: t.timeout } : {}),
      retries: t.retries ?? 0,
      retryDelay: t.retryDelay ?? 2,
      optional: t.optional ?? false,
      rerun: t.rerun ?? 'if-unfinished',
    };
  });
  const action = (a: RawConfig['onSuccess']) => ({
    action: a?.action ?? 'none',
    delay: a?.delay ?? 0,
    ...(a?.command ? { command: a.command } : {}),
  });
  return {
    unattended: raw.unattended ?? false,
    abort: { enable: raw.abort?.enable ?? false, timeout: raw.abort?.timeout ?? 5 },
    ...(raw.deviceId ? { deviceId: raw.deviceId } : {}),
    ...(raw.server ? { server: raw.server } : {}),
    ...(raw.token ? { token: raw.token } : {}),
    ...(raw.serverCa ? { serverCa: raw.serverCa } : {}),
    ...(raw.stateDir ? { stateDir: raw.stateDir } : {}),
    logs: {
      eventsPerTask: raw.logs?.eventsPerTask ?? 500,
      lineLength: raw.logs?.lineLength ?? 2000,
      reportLines: raw.logs?.reportLines ?? 20,
    },
    tasks,
    hooks: {
      before: raw.hooks?.before ?? [],
      after: raw.hooks?.after ?? [],
      failRun: raw.hooks?.failRun ?? false,
      timeout: raw.hooks?.timeout ?? 60,
    },
    reporters: (raw.reporters ?? [{ type: 'console' }]) as ReporterConfig[],
    onSuccess: action(raw.onSuccess),
    onFailure: action(raw.onFailure),
  };
}
