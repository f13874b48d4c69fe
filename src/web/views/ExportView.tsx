// A batch's run reports for the quality system: one row per run, CSV or JSON.
import { useEffect, useState } from 'react';
import type { Api } from '../api.ts';

export function ExportView({ api }: { api: Api }) {
  const [batches, setBatches] = useState<string[]>([]);
  const [batch, setBatch] = useState('');
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [error, setError] = useState<string>();
  useEffect(() => {
    Promise.all([api.line(), api.tokens()]).then(
      ([line, tokens]) => setBatches([...new Set([...line.devices.map((d) => d.batch), ...tokens.map((t) => t.label)].filter((b): b is string => !!b))].sort()),
      (e: Error) => setError(e.message),
    );
  }, [api]);

  const query = (format: 'csv' | 'json') => {
    const p = new URLSearchParams({ format });
    if (batch) p.set('batch', batch);
    if (from) p.set('from', new Date(from).toISOString());
    if (to) p.set('to', new Date(to).toISOString());
    return `/export?${p}`;
  };
  const download = async (format: 'csv' | 'json') => {
    try {
      setError(undefined);
      await api.download(query(format), `bootline-${batch || 'all'}.${format}`);
    } catch (e) {
      setError((e as Error).message);
    }
  };

  return (
    <section aria-labelledby="export-title">
      <h1 id="export-title">Export reports</h1>
      <p>One row per run: device, serial, batch, MACs, plan, status, start, end, duration, failed task, message and the volumes whose recovery key was escrowed (never the keys). Cells a spreadsheet would run as a formula start with &apos;.</p>
      <form className="inline-form" onSubmit={(e) => e.preventDefault()} aria-label="Export filter">
        <label>
          Batch
          <select aria-label="Batch" value={batch} onChange={(e) => setBatch(e.target.value)}>
            <option value="">all batches</option>
            {batches.map((b) => (
              <option key={b}>{b}</option>
            ))}
          </select>
        </label>
        <label>
          Runs started from
          <input type="datetime-local" value={from} onChange={(e) => setFrom(e.target.value)} />
        </label>
        <label>
          until
          <input type="datetime-local" value={to} onChange={(e) => setTo(e.target.value)} />
        </label>
        <button type="button" onClick={() => void download('csv')}>
          Download CSV
        </button>
        <button type="button" onClick={() => void download('json')}>
          Download JSON
        </button>
      </form>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}
