// The whole line at a glance: counts per state, filters, a sortable grid of tiles. Stream
// entries are queued as they arrive and applied once per animation frame, so hundreds of
// devices updating several times a second cost one render per frame, and only changed tiles render.
import { useCallback, useEffect, useRef, useState } from 'react';
import type { Api } from '../api.ts';
import { authHeader } from '../api.ts';
import { followStream } from '../sse.ts';
import { LineModel, countStates, isStalled, matches, sortTiles, STATES, type LineFilter, type SortKey, type StreamEntry, type Tile } from '../line-model.ts';
import { TileView } from './Tile.tsx';
import { recordPaint, startFrameClock } from '../measure.ts';

const STALL_KEY = 'bootline.stallSeconds';
const SORTS: [SortKey, string][] = [
  ['attention', 'Needs attention first'],
  ['name', 'Serial / name'],
  ['progress', 'Progress'],
  ['activity', 'Latest activity'],
  ['elapsed', 'Elapsed time'],
];

function readFilter(): LineFilter & { sort: SortKey } {
  const p = new URLSearchParams(window.location.search);
  return { state: (p.get('state') ?? '') as LineFilter['state'], plan: p.get('plan') ?? '', batch: p.get('batch') ?? '', text: p.get('q') ?? '', sort: (p.get('sort') as SortKey) || 'attention' };
}

export function LineView({ api }: { api: Api }) {
  const model = useRef(new LineModel()).current;
  const [, setVersion] = useState(0);
  const [error, setError] = useState<string>();
  const [live, setLive] = useState<{ live: boolean; error?: string }>({ live: false });
  const [clockOffset, setClockOffset] = useState(0);
  const [stallSeconds, setStallSeconds] = useState<number | null>(() => {
    const v = Number(localStorage.getItem(STALL_KEY));
    return Number.isFinite(v) && v >= 5 ? v : null;
  });
  const [serverStall, setServerStall] = useState(120);
  const [filter, setFilter] = useState(readFilter);
  const [now, setNow] = useState(() => Date.now());
  const stall = stallSeconds ?? serverStall;

  // First load, then the stream; entries wait in a queue for the next animation frame.
  useEffect(() => {
    let queue: StreamEntry[] = [];
    let frame = 0;
    let stopped = false;
    startFrameClock();
    const flush = () => {
      frame = 0;
      const batch = queue;
      queue = [];
      model.apply(batch);
      setVersion(model.version);
      const times: number[] = [];
      const received: number[] = [];
      for (const e of batch) {
        const t = model.tiles.get(e.device.id);
        if (t?.lastEventMs) times.push(t.lastEventMs);
        if (t?.lastReceivedMs) received.push(t.lastReceivedMs);
      }
      recordPaint(times, received, batch.length);
    };
    let stream: { close(): void } | undefined;
    api
      .line()
      .then((snap) => {
        if (stopped) return;
        setClockOffset(Date.parse(snap.now) - Date.now());
        setServerStall(snap.stalledAfter);
        model.load(snap);
        setVersion(model.version);
        let lost = false;
        stream = followStream(
          '/api/v1/stream?logs=false&intervalMs=100',
          authHeader(api.credentials),
          (m) => {
            if (m.event !== 'devices') return;
            queue.push(...(JSON.parse(m.data) as StreamEntry[]));
            if (!frame) frame = requestAnimationFrame(flush);
          },
          (state) => {
            setLive(state);
            if (!state.live) lost = true;
            // Back after a lost connection: what happened meanwhile comes from a fresh load.
            else if (lost) {
              lost = false;
              api.line().then(
                (again) => {
                  if (stopped) return;
                  model.load(again);
                  setVersion(model.version);
                },
                (e: Error) => setError(e.message),
              );
            }
          },
        );
      })
      .catch((e: Error) => setError(e.message));
    return () => {
      stopped = true;
      stream?.close();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [api, model]);

  // Elapsed times, ETAs and stalls move with the clock: once a second.
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(t);
  }, []);

  // The filter lives in the address, so a filtered line can be bookmarked.
  useEffect(() => {
    const p = new URLSearchParams();
    if (filter.state) p.set('state', filter.state);
    if (filter.plan) p.set('plan', filter.plan);
    if (filter.batch) p.set('batch', filter.batch);
    if (filter.text) p.set('q', filter.text);
    if (filter.sort !== 'attention') p.set('sort', filter.sort);
    if (new URLSearchParams(window.location.search).has('measure')) p.set('measure', '');
    const qs = p.toString();
    window.history.replaceState(null, '', `${window.location.pathname}${qs ? `?${qs}` : ''}${window.location.hash}`);
  }, [filter]);

  const serverNow = now + clockOffset;
  const stalledOf = useCallback((t: Tile) => isStalled(t.device, stall, serverNow), [stall, serverNow]);
  const all = [...model.tiles.values()];
  const counts = countStates(all, stalledOf);
  const shown = sortTiles(
    all.filter((t) => matches(t, filter, stalledOf(t))),
    filter.sort,
    stalledOf,
    serverNow,
  );
  const plans = [...new Set(all.map((t) => t.device.plan).filter((p): p is string => !!p))].sort();
  const batches = [...new Set(all.map((t) => t.device.batch).filter((p): p is string => !!p))].sort();
  const set = (patch: Partial<typeof filter>) => setFilter((f) => ({ ...f, ...patch }));

  return (
    <section aria-labelledby="line-title">
      <div className="line-head">
        <h1 id="line-title">Line</h1>
        <span className={`live ${live.live ? 'on' : 'off'}`} role="status">
          {live.live ? '● live' : `○ not live${live.error ? `: ${live.error}` : ''}`}
        </span>
      </div>
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
      <ul className="counts" aria-label="Devices per state">
        <li>
          <button type="button" className={`count all${filter.state === '' ? ' active' : ''}`} aria-pressed={filter.state === ''} onClick={() => set({ state: '' })}>
            <span className="n">{counts.total}</span> all
          </button>
        </li>
        {[...STATES, 'stalled' as const].map((s) => (
          <li key={s}>
            <button type="button" className={`count state-${s}${filter.state === s ? ' active' : ''}`} aria-pressed={filter.state === s} data-count={s} onClick={() => set({ state: filter.state === s ? '' : s })}>
              <span className="n">{counts[s]}</span> {s}
            </button>
          </li>
        ))}
      </ul>
      <form className="filters" role="search" aria-label="Filter devices" onSubmit={(e) => e.preventDefault()}>
        <label>
          Search
          <input type="search" value={filter.text} placeholder="serial, MAC, task, message…" onChange={(e) => set({ text: e.target.value })} />
        </label>
        <label>
          State
          <select aria-label="State" value={filter.state} onChange={(e) => set({ state: e.target.value as LineFilter['state'] })}>
            <option value="">any</option>
            {[...STATES, 'stalled'].map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Plan
          <select aria-label="Plan" value={filter.plan} onChange={(e) => set({ plan: e.target.value })}>
            <option value="">any</option>
            {plans.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          Batch
          <select aria-label="Batch" value={filter.batch} onChange={(e) => set({ batch: e.target.value })}>
            <option value="">any</option>
            {batches.map((p) => (
              <option key={p}>{p}</option>
            ))}
          </select>
        </label>
        <label>
          Sort
          <select aria-label="Sort" value={filter.sort} onChange={(e) => set({ sort: e.target.value as SortKey })}>
            {SORTS.map(([k, l]) => (
              <option key={k} value={k}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label>
          Stalled after (s)
          <input
            type="number"
            min={5}
            step={5}
            value={stall}
            onChange={(e) => {
              const v = Number(e.target.value);
              if (Number.isFinite(v) && v >= 5) {
                setStallSeconds(v);
                localStorage.setItem(STALL_KEY, String(v));
              }
            }}
          />
        </label>
      </form>
      <p className="shown" aria-live="polite">
        {shown.length === all.length ? `${all.length} devices` : `${shown.length} of ${all.length} devices shown`}
      </p>
      {all.length === 0 && !error ? <p className="empty">No device has enrolled yet. Devices appear here as they boot (see Network boot setup).</p> : null}
      <ul className="tiles" aria-label="Devices">
        {shown.map((t) => (
          <TileView key={t.device.id} tile={t} stalled={stalledOf(t)} nowMs={serverNow} />
        ))}
      </ul>
    </section>
  );
}
