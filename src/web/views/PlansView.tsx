// Plans (view and edit; the server checks each with the agent's own schema and catalogue,
// and its message names the key) and the rules that assign them, in the order they apply.
import { useEffect, useState, type FormEvent } from 'react';
import type { Plan, Rule } from '../../api/admin.ts';
import type { Api } from '../api.ts';

const NEW_PLAN = JSON.stringify({ tasks: [{ name: 'deploy', builtin: 'deploy-image', with: { image: 'image:NAME', target: ['/dev/sda'], overwrite: 'OVERWRITE' } }] }, null, 2);

/** A JSON syntax error with its line and column, for the text area's message. */
export function parseJsonObject(text: string): { value?: Record<string, unknown>; error?: string } {
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) return { error: 'the configuration must be a JSON object ({"tasks": [...]})' };
    return { value: v as Record<string, unknown> };
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    if (m) {
      const pos = Number(m[1]);
      const before = text.slice(0, pos).split('\n');
      return { error: `JSON syntax error at line ${before.length}, column ${before[before.length - 1]!.length + 1}: ${(e as Error).message}` };
    }
    return { error: `JSON syntax error: ${(e as Error).message}` };
  }
}

export function PlansView({ api }: { api: Api }) {
  const [plans, setPlans] = useState<Plan[]>([]);
  const [rules, setRules] = useState<Rule[]>([]);
  const [editing, setEditing] = useState<{ name: string; description: string; text: string; isNew: boolean }>();
  const [error, setError] = useState<string>();
  const [saved, setSaved] = useState<string>();

  const reload = async () => {
    const [p, r] = await Promise.all([api.plans(), api.rules()]);
    setPlans(p);
    setRules(r);
  };
  useEffect(() => {
    reload().catch((e: Error) => setError(e.message));
  }, [api]);

  const save = async (ev: FormEvent) => {
    ev.preventDefault();
    if (!editing) return;
    setSaved(undefined);
    const parsed = parseJsonObject(editing.text);
    if (parsed.error) return setError(parsed.error);
    try {
      await api.putPlan(editing.name, { config: parsed.value!, ...(editing.description ? { description: editing.description } : {}) });
      setError(undefined);
      setSaved(`Plan ${editing.name} saved.`);
      setEditing({ ...editing, isNew: false });
      await reload();
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <section aria-labelledby="plans-title">
      <h1 id="plans-title">Plans</h1>
      <p>A plan is the part of the agent&apos;s configuration the server hands a device (tasks, reporters, hooks, final actions). It is checked with the agent&apos;s own schema when saved.</p>
      <div className="split">
        <div>
          <ul className="plain-list" aria-label="Plans">
            {plans.map((p) => (
              <li key={p.name}>
                <button type="button" aria-pressed={editing?.name === p.name} onClick={() => { setSaved(undefined); setError(undefined); setEditing({ name: p.name, description: p.description ?? '', text: JSON.stringify(p.config, null, 2), isNew: false }); }}>
                  {p.name}
                </button>
              </li>
            ))}
          </ul>
          <button type="button" onClick={() => { setSaved(undefined); setError(undefined); setEditing({ name: '', description: '', text: NEW_PLAN, isNew: true }); }}>
            New plan
          </button>
        </div>
        {editing && (
          <form onSubmit={save} className="editor" aria-label={editing.isNew ? 'New plan' : `Plan ${editing.name}`}>
            <label className="field">
              Name
              <input value={editing.name} readOnly={!editing.isNew} required pattern="[A-Za-z0-9][A-Za-z0-9._\-]{0,127}" onChange={(e) => setEditing({ ...editing, name: e.target.value })} />
            </label>
            <label className="field">
              Description
              <input value={editing.description} onChange={(e) => setEditing({ ...editing, description: e.target.value })} />
            </label>
            <label className="field">
              Configuration (JSON)
              <textarea rows={18} spellCheck={false} value={editing.text} onChange={(e) => setEditing({ ...editing, text: e.target.value })} aria-describedby={error ? 'plan-error' : undefined} />
            </label>
            {error && (
              <p id="plan-error" className="error" role="alert">
                {error}
              </p>
            )}
            {saved && <p role="status">{saved}</p>}
            <button type="submit">Save plan</button>{' '}
            {!editing.isNew && (
              <button
                type="button"
                className="danger"
                onClick={async () => {
                  if (!window.confirm(`Delete plan ${editing.name}?`)) return;
                  try {
                    await api.deletePlan(editing.name);
                    setEditing(undefined);
                    await reload();
                  } catch (e) {
                    setError((e as Error).message);
                  }
                }}
              >
                Delete plan
              </button>
            )}
          </form>
        )}
      </div>
      {!editing && error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <RulesView api={api} rules={rules} plans={plans} reload={reload} />
    </section>
  );
}

function RulesView({ api, rules, plans, reload }: { api: Api; rules: Rule[]; plans: Plan[]; reload: () => Promise<void> }) {
  const [draft, setDraft] = useState<Rule>({ priority: 100, match: 'serial', pattern: '', action: 'run', plan: '' });
  const [error, setError] = useState<string>();
  const add = async (ev: FormEvent) => {
    ev.preventDefault();
    try {
      const r: Rule = { priority: draft.priority, match: draft.match, action: draft.action };
      if (draft.match !== 'default') r.pattern = draft.pattern ?? '';
      if (draft.action === 'run') r.plan = draft.plan ?? '';
      await api.addRule(r);
      setError(undefined);
      await reload();
    } catch (e) {
      setError((e as Error).message);
    }
  };
  return (
    <>
      <h2>Rules</h2>
      <p>Tried by priority, lowest first; the first that matches a device chooses its plan (or, with action none, boots it from disk).</p>
      <table>
        <thead>
          <tr>
            <th scope="col">Priority</th>
            <th scope="col">Match</th>
            <th scope="col">Pattern</th>
            <th scope="col">Action</th>
            <th scope="col">Plan</th>
            <th scope="col">
              <span className="sr-only">Delete</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {rules.map((r) => (
            <tr key={r.id}>
              <td>{r.priority}</td>
              <td>{r.match}</td>
              <td>{r.pattern ?? '—'}</td>
              <td>{r.action}</td>
              <td>{r.plan ?? '—'}</td>
              <td>
                <button type="button" className="danger" aria-label={`Delete rule ${r.id}`} onClick={async () => {
                  try {
                    await api.deleteRule(r.id!);
                    await reload();
                  } catch (e) {
                    setError((e as Error).message);
                  }
                }}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="inline-form" onSubmit={add} aria-label="Add a rule">
        <label>
          Priority
          <input type="number" value={draft.priority} onChange={(e) => setDraft({ ...draft, priority: Number(e.target.value) })} />
        </label>
        <label>
          Match
          <select value={draft.match} onChange={(e) => setDraft({ ...draft, match: e.target.value as Rule['match'] })}>
            <option value="serial">serial (glob)</option>
            <option value="mac">MAC address</option>
            <option value="default">default</option>
          </select>
        </label>
        {draft.match !== 'default' && (
          <label>
            Pattern
            <input value={draft.pattern ?? ''} placeholder={draft.match === 'mac' ? '52:54:00:12:34:56' : 'PF3*'} onChange={(e) => setDraft({ ...draft, pattern: e.target.value })} />
          </label>
        )}
        <label>
          Action
          <select value={draft.action} onChange={(e) => setDraft({ ...draft, action: e.target.value as Rule['action'] })}>
            <option value="run">run a plan</option>
            <option value="none">none (boot from disk)</option>
          </select>
        </label>
        {draft.action === 'run' && (
          <label>
            Plan
            <select value={draft.plan ?? ''} onChange={(e) => setDraft({ ...draft, plan: e.target.value })}>
              <option value="">choose…</option>
              {plans.map((p) => (
                <option key={p.name}>{p.name}</option>
              ))}
            </select>
          </label>
        )}
        <button type="submit">Add rule</button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </>
  );
}
