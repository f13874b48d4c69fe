// One device on the line: name, state (colour and word), current task, progress bar,
// elapsed and ETA, throughput while writing; failures show their message.
import { memo } from 'react';
import { formatBytes, formatDuration } from '../../format.ts';
import { displayName, elapsedMs, etaMs, type Tile } from '../line-model.ts';

export const TileView = memo(function TileView({ tile, stalled, nowMs }: { tile: Tile; stalled: boolean; nowMs: number }) {
  const d = tile.device;
  const name = displayName(d);
  const el = elapsedMs(d, nowMs);
  const eta = etaMs(d, nowMs);
  const stateWord = stalled ? `stalled ${formatDuration(nowMs - Date.parse(d.lastSeen))}` : d.state;
  const pct = Math.round(d.progress);
  return (
    <li className={`tile state-${d.state}${stalled ? ' stalled' : ''}`} data-device={d.id} data-state={stalled ? 'stalled' : d.state}>
      <a href={`#/device/${encodeURIComponent(d.id)}`} aria-label={`${name}: ${stateWord}, ${pct}%${d.currentTask ? `, ${d.currentTask}` : ''}`}>
        <div className="tile-head">
          <span className="tile-name">{name}</span>
          <span className="tile-state">{stateWord}</span>
        </div>
        <div className="tile-task">{d.currentTask ?? (d.state === 'enrolled' ? 'waiting to start' : '—')}</div>
        <div className="bar" role="progressbar" aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct} aria-label={`${name} progress`}>
          <div className="bar-fill" style={{ transform: `scaleX(${Math.min(100, Math.max(0, d.progress)) / 100})` }} />
        </div>
        <div className="tile-meta">
          <span className="tile-pct">{pct}%</span>
          {el !== null && <span>{formatDuration(el)} elapsed</span>}
          {eta !== null && <span>ETA {formatDuration(eta)}</span>}
          {tile.rate !== null && d.state === 'running' && <span className="tile-rate">{formatBytes(tile.rate)}/s</span>}
        </div>
        {(d.state === 'failed' || d.state === 'aborted') && d.message && <div className="tile-message">{d.message}</div>}
      </a>
    </li>
  );
});
