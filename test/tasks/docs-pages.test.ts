// Every built-in has its docs page (docs/tasks/<name>.md) with the options table its schema
// gives (npm run docs:tasks) and an example whose options the task accepts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { Value } from '@sinclair/typebox/value';
import { builtins } from '../../src/agent/tasks/registry.ts';
import { optionsTable, withTable } from '../../src/agent/tasks/options-doc.ts';

const DOCS = join(import.meta.dirname, '..', '..', 'docs', 'tasks');

test('each built-in task has a docs page whose options table matches its schema, and whose example it accepts', () => {
  assert.ok(Object.keys(builtins).length >= 2);
  for (const b of Object.values(builtins)) {
    const page = join(DOCS, `${b.name}.md`);
    assert.ok(existsSync(page), `${page} is missing: write it, then run npm run docs:tasks`);
    const text = readFileSync(page, 'utf8');
    assert.equal(text, withTable(text, optionsTable(b.optionsSchema)), `${page} is out of date: run npm run docs:tasks`);
    for (const key of Object.keys(b.optionsSchema.properties)) assert.match(text, new RegExp(`\\| \`${key}\` \\|`), `${b.name}: option ${key}`);
    const example = /## Example\n\n```yaml\n([\s\S]*?)```/.exec(text)?.[1];
    assert.ok(example, `${page}: an ## Example with a yaml block`);
    const tasks = (parse(example) as { tasks: { builtin?: string; with?: unknown }[] }).tasks.filter((t) => t.builtin === b.name);
    assert.ok(tasks.length > 0, `${page}: the example uses ${b.name}`);
    for (const t of tasks) {
      const opts = Value.Default(b.optionsSchema, structuredClone(t.with ?? {}));
      assert.ok(Value.Check(b.optionsSchema, opts), `${page}: ${[...Value.Errors(b.optionsSchema, opts)].map((e) => `${e.path} ${e.message}`).join('; ')}`);
    }
  }
});
