// A device's inventory as the agent posted it (PUT /api/v1/device/inventory). Its schema
// belongs to the collect-inventory task, so this shows the well-known parts first (serial,
// model, CPU, memory, disks, NICs, TPM, Secure Boot) wherever they sit, then everything else.
import type { ReactNode } from 'react';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const WELL_KNOWN: [string, RegExp][] = [
  ['Serial', /^(system\.?serial|serial|serialnumber|system_serial)$/i],
  ['Model', /^(system\.?product|product|model|product_name)$/i],
  ['Vendor', /^(system\.?vendor|vendor|manufacturer|sys_vendor)$/i],
  ['CPU', /^(cpus?|processors?)$/i],
  ['Memory', /^(memory|mem|ram)$/i],
  ['Disks', /^(disks?|storage|block)$/i],
  ['NICs', /^(nics?|network|interfaces|net)$/i],
  ['TPM', /^tpm/i],
  ['Secure Boot', /^secure_?boot/i],
];

function render(v: Json): ReactNode {
  if (v === null) return '—';
  if (typeof v !== 'object') return String(v);
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x !== 'object' || x === null)) return v.map(String).join(', ');
    return (
      <ol className="inv-list">
        {v.map((x, i) => (
          <li key={i}>{render(x)}</li>
        ))}
      </ol>
    );
  }
  return (
    <dl className="inv">
      {Object.entries(v).map(([k, x]) => (
        <div key={k}>
          <dt>{k}</dt>
          <dd>{render(x)}</dd>
        </div>
      ))}
    </dl>
  );
}

/** Finds a key matching `re` at the top level or one level down (e.g. system.serial). */
function find(inv: Record<string, Json>, re: RegExp): [string, Json] | undefined {
  for (const [k, v] of Object.entries(inv)) if (re.test(k)) return [k, v];
  for (const [k, v] of Object.entries(inv)) {
    if (v && typeof v === 'object' && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) if (re.test(k2) || re.test(`${k}.${k2}`)) return [`${k}.${k2}`, v2];
  }
  return undefined;
}

export function Inventory({ inventory }: { inventory: Record<string, unknown> | null }) {
  if (!inventory || Object.keys(inventory).length === 0) {
    return <p>No inventory yet: the device sends it when its plan runs the inventory task.</p>;
  }
  const inv = inventory as Record<string, Json>;
  const known = WELL_KNOWN.flatMap(([label, re]) => {
    const hit = find(inv, re);
    return hit ? [{ label, key: hit[0], value: hit[1] }] : [];
  });
  const shownTop = new Set(known.map((k) => k.key.split('.')[0]));
  const rest = Object.entries(inv).filter(([k]) => !shownTop.has(k));
  return (
    <div className="inventory">
      {known.length > 0 && (
        <dl className="facts">
          {known.map((k) => (
            <div key={k.label}>
              <dt>{k.label}</dt>
              <dd>{render(k.value)}</dd>
            </div>
          ))}
        </dl>
      )}
      {rest.length > 0 && (
        <details>
          <summary>Everything else ({rest.length} more)</summary>
          {render(Object.fromEntries(rest))}
        </details>
      )}
    </div>
  );
}
