// `bootline run --dry-run`: the resolved plan and where every setting came from.
import type { Config } from '../config/schema.ts';
import { describeOrigin, displayKey, findOrigin, type Layer } from '../config/layer.ts';
import type { BuiltinTask } from './tasks/builtin.ts';

export function renderDryRun(config: Config, merged: Layer, sources: readonly string[]): string {
  const total = config.tasks.reduce((s, t) => s + t.effort, 0);
  const rows = config.tasks.map((t, i) => [
    String(i + 1),
    t.name,
    t.kind === 'builtin' ? `builtin ${t.builtin}` : `script ${t.script}`,
    String(t.effort),
    `${((t.effort / total) * 100).toFixed(1)}%`,
    [t.optional ? 'optional' : '', t.retries ? `retries ${t.retries}` : '', t.timeout ? `timeout ${t.timeout}s` : '', t.rerun === 'always' ? 'rerun always' : '']
      .filter(Boolean)
      .join(', '),
  ]);
  const out: string[] = [];
  out.push('Dry run: nothing is executed.');
  out.push(`Sources, later wins: ${sources.length ? sources.join(' < ') : '(none)'}`);
  out.push(`Mode: ${config.unattended ? 'unattended' : 'attended (destructive tasks ask first)'}${config.abort.enable ? `, abort countdown ${config.abort.timeout} s` : ''}`);
  out.push('');
  out.push(...table([['#', 'task', 'runs', 'effort', 'share', 'notes'], ...rows]));
  out.push('');
  out.push(`Reporters: ${config.reporters.map((r) => r.type).join(', ')}`);
  out.push(`Hooks: before ${config.hooks.before.length}, after ${config.hooks.after.length}${config.hooks.failRun ? ' (a failing hook fails the run)' : ''}`);
  out.push(`On success: ${config.onSuccess.action}${config.onSuccess.delay ? ` after ${config.onSuccess.delay} s` : ''}; on failure: ${config.onFailure.action}${config.onFailure.delay ? ` after ${config.onFailure.delay} s` : ''}`);
  out.push('');
  out.push('Settings and where they came from:');
  const settings = leaves(merged.data, []).map(([segs, value]) => [
    `  ${displayKey(segs)} = ${isSecret(segs) ? '"(hidden)"' : JSON.stringify(value)}`,
    isSecret(segs) ? describeOrigin(findOrigin(merged.origins, segs)).replace(/=\S+/g, '=(hidden)') : describeOrigin(findOrigin(merged.origins, segs)),
  ]);
  out.push(...table(settings));
  return out.join('\n') + '\n';
}

/**
 * What each built-in that can tell (its dryRun) would do: read-only, so a dry run on the
 * device shows e.g. which Secure Boot variables would be written. A failure is shown, not thrown.
 */
export async function renderTaskDryRuns(config: Config, catalogue: Record<string, BuiltinTask>): Promise<string> {
  const out: string[] = [];
  for (const t of config.tasks) {
    const b = t.kind === 'builtin' ? catalogue[t.builtin!] : undefined;
    if (!b?.dryRun) continue;
    out.push('', `Task ${t.name} (${b.name}) would:`);
    try {
      out.push(...(await b.dryRun(t.with)).map((l) => `  ${l}`));
    } catch (e) {
      out.push(`  fail: ${(e as Error).message}`);
    }
  }
  return out.length ? out.join('\n') + '\n' : '';
}

/** Tokens and credentials are not printed: a dry run's output ends up in tickets and logs. */
const SECRET_KEY = /^(token|password|secret|authorization)$/i;
function isSecret(segs: readonly string[]): boolean {
  const last = segs[segs.length - 1] ?? '';
  return SECRET_KEY.test(last) || (segs.includes('headers') && /^authorization$/i.test(last));
}

function leaves(v: unknown, path: string[]): Array<[string[], unknown]> {
  if (Array.isArray(v)) {
    if (path.length === 1 && path[0] === 'tasks') {
      return v.flatMap((t) => {
        const { name, ...rest } = t as Record<string, unknown>;
        return leaves(rest, [...path, String(name)]);
      });
    }
    if (v.every((x) => x === null || typeof x !== 'object')) return [[path, v]];
    return v.flatMap((x, i) => leaves(x, [...path, String(i)]));
  }
  if (v !== null && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => leaves(x, [...path, k]));
  return [[path, v]];
}

function table(rows: string[][]): string[] {
  const widths = rows.reduce<number[]>((w, r) => r.map((c, i) => Math.max(w[i] ?? 0, c.length)), []);
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
}
