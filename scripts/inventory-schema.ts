// Writes docs/inventory.schema.json from src/inventory/schema.ts (npm run schema:inventory).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inventoryJsonSchema } from '../src/inventory/json-schema.ts';

const out = join(import.meta.dirname, '..', 'docs', 'inventory.schema.json');
writeFileSync(out, inventoryJsonSchema());
process.stdout.write(`wrote ${out}\n`);
