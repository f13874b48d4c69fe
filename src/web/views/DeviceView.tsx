// One device: its record, its runs, and for the chosen run the timeline of tasks (durations,
// efforts), the live log tail, the report, the inventory, and its escrowed disk volumes
// (each recovery key behind an explicit, recorded reveal).
import { useEffect, useMemo, useRef, useState } from 'react';
import type { Device, Run, StoredEvent } from '../../api/admin.ts';
import type { EscrowedVolume } from '../../api/recovery-key.ts';
import { authHeader, type Api } from '../api.ts';
import { followStream } from '../sse.ts';
import { buildTimeline, type Timeline } from '../run-timeline.ts';
import type { StreamEntry } from '../line-model.ts';
import { displayName } from '../line-model.ts';
import { formatDuration } from '../../format.ts';
import { Inventory } from './Inventory.tsx';
import { RecoveryKeys } from './RecoveryKeys.tsx';

const LOG_TAIL = 200;
const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : '—');

export function DeviceView({ api, id }: { api: Api; id: string }) {
  const [device, setDevice] = useState<Device>();
  const [runs, setRuns] = useState<Run[]>([]);
  const [runId, setRunId] = useState<string>();
  const [events, setEvents] = useState<StoredEvent[]>([]);
  const [error, setError] = useState<string>();
  const [notice, setNotice] = useState<string>();
  const [volumes, setVolumes] = useState<EscrowedVolume[]>([]);
  const runRef = useRef<string | undefined>(undefined);
  runRef.current = runId;

  const loadRuns = async () => {
    const [d, r] = await Promise.all([api.device(id), api.runs(id)]);
    setDevice(d);
    setRuns(r);
    return r;
  };

  useEffect(() => {
    let stop = false;
    setError(undefined);
    loadRuns()
      .then((r) => !stop && setRunId((cur) => cur ?? r[0]?.id))
      .catch((e: Error) => setError(e.message));
    // Live: this device's entries, logs included.
    const s = followStream(
      `/api/v1/stream?device=${encodeURIComponent(id)}&intervalMs=250`,
      authHeader(api.credentials),
      (m) => {
        if (m.event !== 'devices') return;
        for (const entry of JSON.parse(m.data) as StreamEntry[]) {
          setDevice(entry.device);
          const fresh = entry.events.filter((e) => e.runId === runRef.current);
          if (fresh.length) setEvents((old) => mergeEvents(old, fresh));
          if (entry.events.some((e) => e.type === 'run-start' || e.type === 'run-end')) {
            void loadRuns().then((r) => {
              // Follow a new run when the one shown is the device's previous latest.
              if (entry.events.some((e) => e.type === 'run-start')) setRunId(r[0]?.id);
            });
          }
        }
      },
      () => undefined,
    );
    return () => {
      stop = true;
      s.close();
    };
  }, [api, id]);

  useEffect(() => {
    if (!runId) return;
    let stop = false;
    setEvents([]);
    api
      .allEvents(runId)
      .then((ev) => !stop && setEvents((live) => mergeEvents(ev, live)))
      .catch((e: Error) => setError(e.message));
    return () => {
      stop = true;
    };
  }, [api, runId]);

  const run = runs.find((r) => r.id === runId);
  const timeline = useMemo(() => buildTimeline(events), [events]);
  const logs = useMemo(() => events.filter((e) => e.type === 'log').slice(-LOG_TAIL), [events]);

  if (error && !device) {
    return (
      <section>
        <h1>Device {id}</h1>
        <p className="error" role="alert">
          {error}
        </p>
        <a href="#/line">Back to the line</a>
      </section>
    );
  }
  if (!device) return <p aria-busy="true">Loading device {id}…</p>;

  return (
    <section aria-labelledby="device-title" className="device">
      <p>
        <a href="#/line">← Line</a>
      </p>
      <h1 id="device-title">
        {displayName(device)} <span className={`badge state-${device.state}`}>{device.state}</span>
      </h1>
      {device.message && device.state !== 'succeeded' && <p className="failure-message">{device.message}</p>}
      <dl className="facts">
        <dt>Device id</dt>
        <dd>{device.id}</dd>
        <dt>Serial</dt>
        <dd>{device.serial ?? '—'}</dd>
        <dt>Host name</dt>
        <dd>{device.hostname ?? '—'}</dd>
        <dt>MAC addresses</dt>
        <dd>{device.macs.join(', ') || '—'}</dd>
        <dt>Batch</dt>
        <dd>{device.batch ?? '—'}</dd>
        <dt>Plan</dt>
        <dd>{device.plan ?? '—'}</dd>
        <dt>Current task</dt>
        <dd>{device.currentTask ?? '—'}</dd>
        <dt>Progress</dt>
        <dd>{Math.round(device.progress)}%</dd>
        <dt>First seen</dt>
        <dd>{when(device.firstSeen)}</dd>
        <dt>Last seen</dt>
        <dd>{when(device.lastSeen)}</dd>
      </dl>
      <p>
        <button
          type="button"
          onClick={async () => {
            if (!window.confirm(`Bootstrap ${displayName(device)} again at its next network boot?`)) return;
            try {
              await api.reprovision(device.id);
              setNotice('Done: the device runs its plan again at its next network boot.');
              await loadRuns();
            } catch (e) {
              setError((e as Error).message);
            }
          }}
        >
          Provision again at next boot
        </button>
      </p>
      {notice && <p role="status">{notice}</p>}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}

      <h2>Runs</h2>
      {runs.length === 0 ? (
        <p>No run yet.</p>
      ) : (
        <table className="runs">
          <caption className="sr-only">Runs of this device, newest first</caption>
          <thead>
            <tr>
              <th scope="col">Started</th>
              <th scope="col">Status</th>
              <th scope="col">Plan</th>
              <th scope="col">Progress</th>
              <th scope="col">Duration</th>
              <th scope="col">
                <span className="sr-only">Show</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {runs.map((r) => (
              <tr key={r.id} aria-current={r.id === runId ? 'true' : undefined}>
                <td>{when(r.startedAt)}</td>
                <td>
                  <span className={`badge run-${r.status}`}>{r.status}</span>
                </td>
                <td>{r.plan ?? '—'}</td>
                <td>{Math.round(r.progress)}%</td>
                <td>{r.endedAt ? formatDuration(Date.parse(r.endedAt) - Date.parse(r.startedAt)) : 'running'}</td>
                <td>
                  <button type="button" onClick={() => setRunId(r.id)} disabled={r.id === runId} aria-label={`Show run started ${when(r.startedAt)}`}>
                    {r.id === runId ? 'shown' : 'show'}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      {run && (
        <>
          <h2>Run timeline</h2>
          <TimelineView timeline={timeline} />
          <h2>Log (last {LOG_TAIL} lines, live)</h2>
          <LogTail logs={logs} />
          <h2>Report</h2>
          <ReportView run={run} api={api} keysInRun={volumes.filter((v) => v.runId === run.id).length} />
        </>
      )}

      <h2>Inventory</h2>
      <Inventory inventory={device.inventory} />

      <h2>Recovery keys</h2>
      <RecoveryKeys
        api={api}
        deviceId={device.id}
        deviceName={displayName(device)}
        refresh={`${device.currentRun ?? ''}:${device.currentTask ?? ''}:${device.state}`}
        onVolumes={setVolumes}
      />
    </section>
  );
}

function mergeEvents(a: StoredEvent[], b: StoredEvent[]): StoredEvent[] {
  const seen = new Set(a.map((e) => `${e.runId}:${e.seq}`));
  const out = [...a];
  for (const e of b) if (!seen.has(`${e.runId}:${e.seq}`)) out.push(e);
  return out.sort((x, y) => x.seq - y.seq);
}

function TimelineView({ timeline }: { timeline: Timeline }) {
  const start = timeline.startedMs;
  const end = timeline.endedMs ?? Date.now();
  const span = start !== null ? Math.max(1, end - start) : 1;
  if (timeline.tasks.length === 0) return <p>No task has started yet.</p>;
  return (
    <table className="timeline">
      <caption className="sr-only">Tasks of the run with their effort, status and duration</caption>
      <thead>
        <tr>
          <th scope="col">Task</th>
          <th scope="col">Effort (share)</th>
          <th scope="col">Status</th>
          <th scope="col">Attempts</th>
          <th scope="col">Duration</th>
          <th scope="col">When</th>
        </tr>
      </thead>
      <tbody>
        {timeline.tasks.map((t) => {
          const from = t.startedMs !== null && start !== null ? ((t.startedMs - start) / span) * 100 : 0;
          const to = t.startedMs !== null && start !== null ? (((t.endedMs ?? end) - start) / span) * 100 : 0;
          const duration = t.durationMs ?? (t.startedMs !== null ? (t.endedMs ?? end) - t.startedMs : null);
          return (
            <tr key={`${t.index}-${t.name}`} className={`task-${t.status}`}>
              <th scope="row">{t.name}</th>
              <td>
                {t.effort ?? '—'}
                {t.share !== null ? ` (${t.share.toFixed(0)}%)` : ''}
              </td>
              <td>
                <span className={`badge task-${t.status}`}>{t.status === 'running' ? `running ${Math.round(t.taskProgress)}%` : t.status}</span>
                {t.message && <div className="task-message">{t.message}</div>}
              </td>
              <td>{t.attempts || '—'}</td>
              <td>{duration !== null ? formatDuration(duration) : '—'}</td>
              <td className="gantt-cell" aria-hidden="true">
                {t.startedMs !== null && (
                  <div className="gantt">
                    <div className={`gantt-bar task-${t.status}`} style={{ marginLeft: `${from}%`, width: `${Math.max(0.5, to - from)}%` }} />
                  </div>
                )}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function LogTail({ logs }: { logs: StoredEvent[] }) {
  const ref = useRef<HTMLPreElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [logs]);
  if (logs.length === 0) return <p>No log lines.</p>;
  return (
    <pre className="log" ref={ref} tabIndex={0} aria-label="Log tail">
      {logs
        .map((e) => {
          const b = e.body as { task?: string; stream?: string; level?: string; message?: string };
          return `${e.ts.slice(11, 23)} ${b.level === 'error' || b.stream === 'stderr' ? '!' : ' '} ${b.task ? `[${b.task}] ` : ''}${b.message ?? ''}`;
        })
        .join('\n')}
    </pre>
  );
}

function ReportView({ run, api, keysInRun }: { run: Run; api: Api; keysInRun: number }) {
  const r = run.report as null | { status?: string; durationMs?: number; message?: string; tasks?: { name: string; status: string; attempts: number; durationMs: number; message?: string; lastLines?: string[] }[] };
  return (
    <div className="report">
      {!r ? (
        <p>The run has not sent its report yet{run.status === 'running' ? ' (it is still running)' : ''}.</p>
      ) : (
        <>
          <p>
            Status <span className={`badge run-${r.status}`}>{r.status}</span>
            {typeof r.durationMs === 'number' && ` in ${formatDuration(r.durationMs)}`}
            {r.message && <span className="failure-message"> — {r.message}</span>}
          </p>
          <ul className="report-tasks">
            {(r.tasks ?? []).map((t) => (
              <li key={t.name}>
                <strong>{t.name}</strong>: {t.status}, {t.attempts} attempt{t.attempts === 1 ? '' : 's'}, {formatDuration(t.durationMs)}
                {t.message && <span className="failure-message"> — {t.message}</span>}
                {t.lastLines && t.lastLines.length > 0 && <pre className="log small">{t.lastLines.join('\n')}</pre>}
              </li>
            ))}
          </ul>
        </>
      )}
      <p>
        <button type="button" onClick={() => void api.download(`/runs/${encodeURIComponent(run.id)}/report?format=json`, `run-${run.id}.json`)}>
          Download report (JSON)
        </button>{' '}
        <button type="button" onClick={() => void api.download(`/runs/${encodeURIComponent(run.id)}/report?format=csv`, `run-${run.id}.csv`)}>
          Download report (CSV)
        </button>
        {keysInRun > 0 && (
          <>
            {' '}
            <button
              type="button"
              onClick={() => {
                const n = keysInRun === 1 ? 'the recovery key' : `the ${keysInRun} recovery keys`;
                if (!window.confirm(`Download this run's report with ${n} escrowed during it?\n\nAnyone with the file can unlock those disks. The export is recorded with your name.`)) return;
                void api.download(`/runs/${encodeURIComponent(run.id)}/report?format=json&recoveryKeys=true`, `run-${run.id}-with-keys.json`);
              }}
            >
              Download report with recovery keys (JSON)
            </button>
          </>
        )}
      </p>
    </div>
  );
}
