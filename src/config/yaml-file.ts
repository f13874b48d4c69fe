// YAML/JSON config files. JSON is parsed with the YAML parser too (JSON is YAML 1.2),
// so that both give line numbers for every key.
import { LineCounter, parseDocument, isMap, isSeq, isPair, isScalar, type Node } from 'yaml';
import { canonicalPath, pathKey, ConfigError, type Layer, type Origin, type Path } from './layer.ts';

export function parseConfigText(text: string, source: string): Layer {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const pos = lineCounter.linePos(e.pos[0]);
        return {
          origin: { source, line: pos.line, column: pos.col },
          key: '(syntax)',
          message: `${firstLine(e.message)} — fix the YAML/JSON syntax here`,
        };
      }),
    );
  }
  let data: unknown;
  try {
    // The yaml library stops alias expansion that would blow up (a "billion laughs" file).
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigError([
      { origin: { source, line: 1 }, key: '(aliases)', message: `${firstLine((e as Error).message)}: too many YAML aliases (*name) — write the settings out instead` },
    ]);
  }
  if (data === null || data === undefined) return { name: source, data: {}, origins: new Map() };
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new ConfigError([
      { origin: { source, line: 1 }, key: '(top level)', message: 'expected a mapping of settings (unattended:, tasks:, ...)' },
    ]);
  }

  const origins = new Map<string, Origin>();
  const at = (node: Node | null | undefined): Origin => {
    const offset = node?.range?.[0] ?? 0;
    const pos = lineCounter.linePos(offset);
    return { source, line: pos.line, column: pos.col };
  };
  const walk = (node: unknown, path: Path) => {
    if (isMap(node)) {
      for (const item of node.items) {
        if (!isPair(item)) continue;
        const key = isScalar(item.key) ? String(item.key.value) : String(item.key);
        const p = [...path, key];
        origins.set(pathKey(canonicalPath(data, p)), at(item.key as Node));
        walk(item.value, p);
      }
    } else if (isSeq(node)) {
      node.items.forEach((child, i) => {
        const p = [...path, i];
        origins.set(pathKey(canonicalPath(data, p)), at(child as Node));
        walk(child, p);
      });
    }
  };
  walk(doc.contents, []);
  return { name: source, data: data as Record<string, unknown>, origins };
}

const firstLine = (s: string) => s.split('\n')[0] ?? s;
