// The line view's state, apart from React: devices keyed by id, updated by stream entries.
// A tile object is replaced only when its device changed, so unchanged tiles skip rendering.
import type { Device, DeviceState, LineDevice, LineSnapshot, StoredEvent } from '../api/admin.ts';

/** One entry of a `devices` message on /api/v1/stream: a device's latest record and its events since. */
export interface StreamEntry {
  device: Device;
  events: StoredEvent[];
  dropped: number;
}

export interface Tile {
  device: LineDevice;
  /** Write throughput (bytes/s) while the current task reports bytes; null otherwise. */
  rate: number | null;
  bytesDone: number | null;
  bytesTotal: number | null;
  /** Time (ms since the epoch) the newest event applied was made: for the event-to-paint measurement. */
  lastEventMs: number | null;
  /** When the server received that event (its clock): splits the latency into before and after the server. */
  lastReceivedMs: number | null;
}

export const STATES: DeviceState[] = ['running', 'failed', 'enrolled', 'succeeded', 'aborted'];
/** Filter choices: the device states, and stalled (running, but silent too long). */
export type StateFilter = DeviceState | 'stalled' | '';

export function tileOf(device: LineDevice): Tile {
  return { device, rate: null, bytesDone: null, bytesTotal: null, lastEventMs: null, lastReceivedMs: null };
}

export class LineModel {
  readonly tiles = new Map<string, Tile>();
  /** Bumped on every change: React reads it to know when to render. */
  version = 0;

  load(s: LineSnapshot): void {
    this.tiles.clear();
    for (const d of s.devices) this.tiles.set(d.id, tileOf(d));
    this.version++;
  }

  /** Applies stream entries; returns the ids of the tiles that changed. */
  apply(entries: StreamEntry[]): string[] {
    const changed: string[] = [];
    for (const { device, events } of entries) {
      const old = this.tiles.get(device.id);
      const t: Tile = old ? { ...old } : tileOf({ ...device, runStartedAt: null });
      const runStartedAt = old && old.device.currentRun === device.currentRun ? old.device.runStartedAt : null;
      t.device = { ...device, runStartedAt, stalled: false };
      for (const e of events) {
        const body = e.body as { type?: string; bytesDone?: unknown; bytesTotal?: unknown; rate?: unknown };
        if (e.type === 'run-start' && e.runId === device.currentRun) t.device.runStartedAt = e.ts;
        if (e.type === 'task-progress') {
          t.rate = typeof body.rate === 'number' ? body.rate : null;
          t.bytesDone = typeof body.bytesDone === 'number' ? body.bytesDone : null;
          t.bytesTotal = typeof body.bytesTotal === 'number' ? body.bytesTotal : null;
        } else if (e.type === 'task-start' || e.type === 'task-end' || e.type === 'run-end' || e.type === 'run-start') {
          t.rate = t.bytesDone = t.bytesTotal = null;
        }
        const ms = Date.parse(e.ts);
        if (Number.isFinite(ms) && (t.lastEventMs === null || ms > t.lastEventMs)) {
          t.lastEventMs = ms;
          t.lastReceivedMs = Date.parse(e.receivedAt);
        }
      }
      // The start of a run seen only by its id (joined mid-run): the first event's time is the best guess.
      if (t.device.runStartedAt === null && device.currentRun && device.state === 'running') {
        const first = events.find((e) => e.runId === device.currentRun);
        t.device.runStartedAt = first ? first.ts : null;
      }
      this.tiles.set(device.id, t);
      changed.push(device.id);
    }
    if (changed.length) this.version++;
    return changed;
  }
}

// ---------------------------------------------------------------------------------
// What a tile shows (pure, from a tile and the server's clock)

export function isStalled(d: Pick<Device, 'state' | 'lastSeen'>, stallSeconds: number, nowMs: number): boolean {
  return d.state === 'running' && nowMs - Date.parse(d.lastSeen) > stallSeconds * 1000;
}

/** The run's time so far; for a run that ended, up to its last event (so a finished tile stops counting). */
export function elapsedMs(d: LineDevice, nowMs: number): number | null {
  if (!d.runStartedAt) return null;
  const until = d.state === 'running' ? nowMs : Math.min(nowMs, Date.parse(d.lastSeen));
  return Math.max(0, until - Date.parse(d.runStartedAt));
}

/** Remaining time if the run keeps its pace so far (progress is effort-weighted); none before the pace means anything. */
const ETA_AFTER_MS = 5000;

export function etaMs(d: LineDevice, nowMs: number): number | null {
  const el = elapsedMs(d, nowMs);
  if (d.state !== 'running' || el === null || el < ETA_AFTER_MS || d.progress <= 0.5 || d.progress >= 100) return null;
  return (el * (100 - d.progress)) / d.progress;
}

export interface LineFilter {
  state: StateFilter;
  plan: string;
  batch: string;
  text: string;
}
export type SortKey = 'attention' | 'name' | 'progress' | 'activity' | 'elapsed';

export function displayName(d: Pick<Device, 'serial' | 'hostname' | 'id'>): string {
  return d.serial ?? d.hostname ?? d.id;
}

export function matches(t: Tile, f: LineFilter, stalled: boolean): boolean {
  const d = t.device;
  if (f.state === 'stalled' ? !stalled : f.state && d.state !== f.state) return false;
  if (f.plan && d.plan !== f.plan) return false;
  if (f.batch && d.batch !== f.batch) return false;
  if (f.text) {
    const q = f.text.toLowerCase();
    const hay = [d.id, d.serial, d.hostname, d.currentTask, d.message, d.plan, d.batch, ...d.macs];
    if (!hay.some((v) => v?.toLowerCase().includes(q))) return false;
  }
  return true;
}

/** Failed first, then stalled, running, enrolled, aborted, succeeded: what needs a person first. */
function attention(d: Device, stalled: boolean): number {
  if (d.state === 'failed') return 0;
  if (stalled) return 1;
  return { running: 2, enrolled: 3, aborted: 4, succeeded: 5, failed: 0 }[d.state];
}

/** One collator for every comparison: localeCompare with options builds one per call (slow for 500 tiles a frame). */
const collator = new Intl.Collator(undefined, { numeric: true });

export function sortTiles(tiles: Tile[], key: SortKey, stalledOf: (t: Tile) => boolean, nowMs: number): Tile[] {
  const name = (t: Tile) => displayName(t.device);
  const byName = (a: Tile, b: Tile) => collator.compare(name(a), name(b));
  const cmp: Record<SortKey, (a: Tile, b: Tile) => number> = {
    attention: (a, b) => attention(a.device, stalledOf(a)) - attention(b.device, stalledOf(b)) || byName(a, b),
    name: byName,
    progress: (a, b) => b.device.progress - a.device.progress || byName(a, b),
    activity: (a, b) => b.device.lastSeen.localeCompare(a.device.lastSeen) || byName(a, b),
    elapsed: (a, b) => (elapsedMs(b.device, nowMs) ?? -1) - (elapsedMs(a.device, nowMs) ?? -1) || byName(a, b),
  };
  return [...tiles].sort(cmp[key]);
}

export function countStates(tiles: Iterable<Tile>, stalledOf: (t: Tile) => boolean): Record<DeviceState | 'stalled' | 'total', number> {
  const out = { running: 0, failed: 0, enrolled: 0, succeeded: 0, aborted: 0, stalled: 0, total: 0 };
  for (const t of tiles) {
    out[t.device.state]++;
    out.total++;
    if (stalledOf(t)) out.stalled++;
  }
  return out;
}
