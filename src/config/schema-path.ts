// Canonical paths into the config schema: what a key means ("abort/timeout" is a
// number), how a text value from a line-oriented source (kernel command line, Isar
// .conf) becomes a typed value, which keys exist near a misspelt one, and how a
// loader writes values into a Layer together with their origins.
import { Kind, type TSchema } from '@sinclair/typebox';
import { ConfigSchema, TaskSchema } from './schema.ts';
import { pathKey, type Layer, type Origin } from './layer.ts';
import { closest } from './suggest.ts';

/** TypeBox's kind of a schema: "Object", "Number", "Union", ... */
export const schemaKind = (s: TSchema): string => String((s as unknown as Record<symbol, unknown>)[Kind]);
const kindOf = schemaKind;
const field = <T>(s: TSchema, key: string): T | undefined => (s as unknown as Record<string, T | undefined>)[key];

function recordValueSchema(s: TSchema): TSchema | undefined {
  const pp = field<Record<string, TSchema>>(s, 'patternProperties');
  return pp ? Object.values(pp)[0] : undefined;
}

function objectProperties(s: TSchema): Record<string, TSchema> | undefined {
  return kindOf(s) === 'Object' ? field<Record<string, TSchema>>(s, 'properties') : undefined;
}

/**
 * The schema of the value at a canonical path, or undefined when there is no such key.
 * Under `tasks/<name>/` the task schema applies whatever the name; record keys (a task's
 * `with` and `env`) accept any name. Other arrays (`reporters/<n>`, `hooks/before/<n>`)
 * are not walked: their entries only come whole, from a file or the server.
 */
export function schemaAt(path: readonly string[]): TSchema | undefined {
  let s: TSchema = ConfigSchema;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const kind = kindOf(s);
    if (kind === 'Object') {
      const props = objectProperties(s)!;
      if (!Object.hasOwn(props, seg)) return undefined;
      s = props[seg]!;
    } else if (kind === 'Array' && i === 1 && path[0] === 'tasks') {
      s = TaskSchema;
    } else if (kind === 'Record') {
      const v = recordValueSchema(s);
      if (!v) return undefined;
      s = v;
    } else {
      return undefined;
    }
  }
  return s;
}

/** The keys an object at `path` can have (empty when it is not an object). */
export function knownKeys(path: readonly string[]): string[] {
  const s = schemaAt(path);
  const props = s && objectProperties(s);
  return props ? Object.keys(props) : [];
}

function literalValues(s: TSchema): string[] | undefined {
  const kind = kindOf(s);
  if (kind === 'Literal') return [String(field<unknown>(s, 'const'))];
  if (kind !== 'Union') return undefined;
  const out: string[] = [];
  for (const m of field<TSchema[]>(s, 'anyOf') ?? []) {
    if (kindOf(m) !== 'Literal') return undefined;
    out.push(String(field<unknown>(m, 'const')));
  }
  return out;
}

/** True for a value one text token can set: boolean, number, string, or one of some literals. */
export function isScalarSchema(s: TSchema): boolean {
  const kind = kindOf(s);
  return ['Boolean', 'Integer', 'Number', 'String', 'Unknown'].includes(kind) || literalValues(s) !== undefined;
}

/** A few words for what a schema expects, e.g. "a number" or "one of none, reboot". */
export function describeSchema(s: TSchema): string {
  const lits = literalValues(s);
  if (lits) return lits.length === 1 ? `"${lits[0]}"` : `one of ${lits.join(', ')}`;
  switch (kindOf(s)) {
    case 'Boolean':
      return 'a boolean (true/false, 1/0, yes/no, on/off)';
    case 'Integer':
      return 'an integer';
    case 'Number':
      return 'a number';
    case 'String':
      return 'a string';
    case 'Unknown':
      return 'a value';
    case 'Array':
      return 'a list';
    default:
      return 'an object';
  }
}

const TRUE_WORDS = new Set(['true', '1', 'yes', 'on']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off']);

/** Parses a boolean word; undefined when it is not one. */
export function parseBoolean(raw: string): boolean | undefined {
  const w = raw.trim().toLowerCase();
  if (TRUE_WORDS.has(w)) return true;
  if (FALSE_WORDS.has(w)) return false;
  return undefined;
}

const INTEGER_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

/** Parses a decimal number (no hex, no "Infinity", no empty string); undefined when it is not one. */
export function parseNumber(raw: string): number | undefined {
  const t = raw.trim();
  return NUMBER_RE.test(t) ? Number(t) : undefined;
}

export type Coerced = { ok: true; value: unknown } | { ok: false; expected: string };

/**
 * Turns the text of a scalar setting into the schema's type. `raw` null means a bare flag
 * (`bootline.unattended`), which only a boolean accepts (as true). Bounds such as
 * `minimum` are not checked here: validation of the merged config reports them.
 * A key whose schema is unknown (a built-in's `with` option) gets the string as written.
 */
export function coerceScalar(schema: TSchema, raw: string | null): Coerced {
  if (!isScalarSchema(schema)) {
    return { ok: false, expected: `${describeSchema(schema)}, which cannot be given as a single value` };
  }
  const kind = kindOf(schema);
  if (kind === 'Boolean') {
    if (raw === null) return { ok: true, value: true };
    const b = parseBoolean(raw);
    return b === undefined ? { ok: false, expected: describeSchema(schema) } : { ok: true, value: b };
  }
  if (raw === null) return { ok: false, expected: `${describeSchema(schema)} (write key=value)` };
  if (kind === 'Integer') {
    const t = raw.trim();
    return INTEGER_RE.test(t) ? { ok: true, value: Number(t) } : { ok: false, expected: 'an integer' };
  }
  if (kind === 'Number') {
    const n = parseNumber(raw);
    return n === undefined ? { ok: false, expected: 'a number' } : { ok: true, value: n };
  }
  const lits = literalValues(schema);
  if (lits) return lits.includes(raw) ? { ok: true, value: raw } : { ok: false, expected: describeSchema(schema) };
  return { ok: true, value: raw };
}

/** " Did you mean "x"?" or "", for appending to a message. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  const n = closest(word, candidates);
  return n === undefined ? '' : ` Did you mean "${n}"?`;
}

/**
 * Builds a Layer: values go in by canonical path (`tasks/<name>/...` addresses the task
 * entry of that name, created on first use in order), each with its origin.
 */
export class LayerBuilder {
  readonly data: Record<string, unknown> = {};
  readonly origins = new Map<string, Origin>();

  constructor(readonly name: string) {}

  /** The entry of task `name`, created (and its origin recorded) if new. */
  task(name: string, origin: Origin): Record<string, unknown> {
    const tasks = (this.data.tasks ??= []) as Record<string, unknown>[];
    let t = tasks.find((x) => x.name === name);
    if (!t) {
      t = { name };
      tasks.push(t);
      this.origins.set(pathKey(['tasks', name]), origin);
    }
    return t;
  }

  /** Sets the value at a canonical path (a later set of the same path wins). */
  set(path: readonly string[], value: unknown, origin: Origin): void {
    if (path.length === 0) throw new Error('LayerBuilder.set: empty path');
    let node: Record<string, unknown>;
    let i: number;
    if (path[0] === 'tasks') {
      if (path.length < 3) throw new Error(`LayerBuilder.set: ${pathKey(path)} does not name a task key`);
      node = this.task(path[1]!, origin);
      i = 2;
    } else {
      node = this.data;
      i = 0;
    }
    for (; i < path.length - 1; i++) {
      const seg = path[i]!;
      const next = node[seg];
      if (next === null || typeof next !== 'object' || Array.isArray(next)) node[seg] = {};
      node = node[seg] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
    this.origins.set(pathKey(path), origin);
  }

  has(path: readonly string[]): boolean {
    return this.origins.has(pathKey(path));
  }

  layer(): Layer {
    return { name: this.name, data: this.data, origins: this.origins };
  }
}
