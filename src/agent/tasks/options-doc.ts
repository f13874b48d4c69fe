// The options table of a built-in's docs page (docs/tasks/<name>.md), from its option
// schema: the page cannot list an option the agent does not accept, or miss one.
import type { TObject, TSchema } from '@sinclair/typebox';

function typeOf(s: TSchema): string {
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (Array.isArray(s.anyOf)) return (s.anyOf as TSchema[]).map(typeOf).join(' or ');
  if (s.type === 'array') return `list of ${typeOf(s.items as TSchema)}`;
  if (s.type === 'object') return s.properties ? 'object' : 'map of strings';
  return String(s.type ?? 'any');
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A Markdown table: option, type, default (or "required"), meaning. Nested objects' fields follow as `parent.field`. */
export function optionsTable(schema: TObject): string {
  const rows: string[] = ['| option | type | default | meaning |', '|---|---|---|---|'];
  const add = (prefix: string, obj: TObject) => {
    const required = new Set(obj.required ?? []);
    for (const [key, raw] of Object.entries(obj.properties)) {
      const s = raw as TSchema;
      const name = `${prefix}${key}`;
      const def = required.has(key) ? 'required' : s.default !== undefined ? `\`${JSON.stringify(s.default)}\`` : '';
      rows.push(`| \`${name}\` | ${cell(typeOf(s))} | ${cell(def)} | ${cell(String(s.description ?? ''))} |`);
      if (s.type === 'object' && s.properties) add(`${name}.`, s as TObject);
      if (s.type === 'array' && (s.items as TSchema).type === 'object') add(`${name}[].`, s.items as TObject);
    }
  };
  add('', schema);
  return `${rows.join('\n')}\n`;
}

export const TABLE_BEGIN = '<!-- options: generated from the task\'s schema by `npm run docs:tasks` -->';
export const TABLE_END = '<!-- options end -->';

/** The page with its generated table replaced by `table`. */
export function withTable(page: string, table: string): string {
  const a = page.indexOf(TABLE_BEGIN);
  const b = page.indexOf(TABLE_END);
  if (a < 0 || b < a) throw new Error(`the page has no ${TABLE_BEGIN} ... ${TABLE_END} block`);
  return `${page.slice(0, a + TABLE_BEGIN.length)}\n${table}${page.slice(b)}`;
}
