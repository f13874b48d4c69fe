// Merges configuration layers, later wins: file < server plan < kernel command line.
// Objects merge key by key, tasks merge by name (a later layer can change one option of
// one task, or add a task at the end), every other array is replaced whole.
import { ConfigError, pathKey, type Layer, type Origin, type ConfigIssue } from './layer.ts';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

export function mergeLayers(layers: readonly Layer[]): Layer {
  const issues: ConfigIssue[] = [];
  for (const l of layers) issues.push(...duplicateTasks(l));
  if (issues.length > 0) throw new ConfigError(issues);

  let data: Obj = {};
  const origins = new Map<string, Origin>();
  for (const layer of layers) {
    data = mergeObj(data, layer.data, []);
    for (const [key, origin] of layer.origins) {
      // A value replaced whole takes the origins of everything below it along.
      if (replacesWhole(layer.data, key)) {
        for (const k of [...origins.keys()]) if (k.startsWith(`${key}/`)) origins.delete(k);
      }
      origins.set(key, origin);
    }
  }
  return { name: layers.map((l) => l.name).join(' < '), data, origins };
}

function mergeObj(base: Obj, over: Obj, path: string[]): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const prev = out[k];
    if (path.length === 0 && k === 'tasks' && Array.isArray(v) && Array.isArray(prev)) out[k] = mergeTasks(prev, v);
    else if (isObj(prev) && isObj(v)) out[k] = mergeObj(prev, v, [...path, k]);
    else out[k] = structuredClone(v);
  }
  return out;
}

function mergeTasks(base: unknown[], over: unknown[]): unknown[] {
  const out = base.map((t) => structuredClone(t));
  for (const t of over) {
    const name = isObj(t) ? t.name : undefined;
    const i = typeof name === 'string' ? out.findIndex((b) => isObj(b) && b.name === name) : -1;
    if (i >= 0) out[i] = mergeObj(out[i] as Obj, t as Obj, ['tasks', String(i)]);
    else out.push(structuredClone(t));
  }
  return out;
}

/** True when the layer's value at `key` is not merged into (a scalar or a non-task array). */
function replacesWhole(data: Obj, key: string): boolean {
  const segs = key.split('/');
  let node: unknown = data;
  for (let i = 0; i < segs.length; i++) {
    if (i === 1 && segs[0] === 'tasks' && Array.isArray(node)) node = node.find((t) => isObj(t) && t.name === segs[1]);
    else node = isObj(node) || Array.isArray(node) ? (node as Obj)[segs[i]!] : undefined;
  }
  return Array.isArray(node) ? key !== 'tasks' : !isObj(node);
}

function duplicateTasks(layer: Layer): ConfigIssue[] {
  const tasks = layer.data.tasks;
  if (!Array.isArray(tasks)) return [];
  const seen = new Set<string>();
  const issues: ConfigIssue[] = [];
  for (const t of tasks) {
    const name = isObj(t) ? t.name : undefined;
    if (typeof name !== 'string') continue;
    if (seen.has(name)) {
      issues.push({
        origin: layer.origins.get(pathKey(['tasks', name])) ?? { source: layer.name },
        key: `tasks[${name}]`,
        message: `task name "${name}" is used twice — task names must be unique; rename one of them`,
      });
    }
    seen.add(name);
  }
  return issues;
}
