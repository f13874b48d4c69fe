// The inventory schema as a JSON Schema document (docs/inventory.schema.json), for the
// line's other systems (MES, ERP) that read the documents the server stores.
import { InventoryDocument } from './schema.ts';

export function inventoryJsonSchema(): string {
  // JSON.stringify drops TypeBox's symbol keys: what remains is plain JSON Schema.
  return `${JSON.stringify({ $schema: 'http://json-schema.org/draft-07/schema#', ...InventoryDocument }, null, 2)}\n`;
}
