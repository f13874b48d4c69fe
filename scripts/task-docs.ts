// Rewrites the options table of every docs/tasks/<name>.md from the built-ins' schemas
// (npm run docs:tasks); a test checks the pages are up to date.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtins } from '../src/agent/tasks/registry.ts';
import { optionsTable, withTable } from '../src/agent/tasks/options-doc.ts';

for (const b of Object.values(builtins)) {
  const page = join(import.meta.dirname, '..', 'docs', 'tasks', `${b.name}.md`);
  writeFileSync(page, withTable(readFileSync(page, 'utf8'), optionsTable(b.optionsSchema)));
  process.stdout.write(`wrote ${page}\n`);
}
