// A run's tasks from its events (pure): the plan's tasks with their efforts and shares
// (run-start), attempts, durations, status and message (task-start, task-end), live progress.
import type { StoredEvent } from '../api/admin.ts';

export interface TimelineTask {
  name: string;
  index: number;
  effort: number | null;
  share: number | null;
  status: 'pending' | 'running' | 'ok' | 'failed' | 'skipped';
  attempts: number;
  startedMs: number | null;
  endedMs: number | null;
  durationMs: number | null;
  taskProgress: number;
  message: string | null;
}

export interface Timeline {
  startedMs: number | null;
  endedMs: number | null;
  tasks: TimelineTask[];
  status: 'running' | 'ok' | 'failed' | 'aborted';
  message: string | null;
}

type Body = Record<string, unknown>;
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

export function buildTimeline(events: StoredEvent[]): Timeline {
  const tl: Timeline = { startedMs: null, endedMs: null, tasks: [], status: 'running', message: null };
  const task = (name: string, index: number): TimelineTask => {
    let t = tl.tasks.find((x) => x.name === name && x.index === index) ?? tl.tasks.find((x) => x.index === index);
    if (!t) {
      t = { name, index, effort: null, share: null, status: 'pending', attempts: 0, startedMs: null, endedMs: null, durationMs: null, taskProgress: 0, message: null };
      tl.tasks.push(t);
      tl.tasks.sort((a, b) => a.index - b.index);
    }
    return t;
  };
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    const b = e.body as Body;
    const at = Date.parse(e.ts);
    if (e.type === 'run-start') {
      tl.startedMs = at;
      const planned = Array.isArray(b.tasks) ? (b.tasks as Body[]) : [];
      planned.forEach((p, i) => {
        const t = task(str(p.name) ?? `task ${i + 1}`, i);
        t.effort = num(p.effort);
        t.share = num(p.share);
      });
      const resumed = Array.isArray(b.resumed) ? (b.resumed as string[]) : [];
      for (const t of tl.tasks) if (resumed.includes(t.name)) t.status = 'ok';
    } else if (e.type === 'task-start') {
      const t = task(str(b.task) ?? '?', num(b.index) ?? 0);
      t.status = 'running';
      t.attempts = num(b.attempt) ?? t.attempts + 1;
      t.startedMs ??= at;
      t.taskProgress = num(b.taskProgress) ?? 0;
    } else if (e.type === 'task-progress') {
      const t = task(str(b.task) ?? '?', num(b.index) ?? 0);
      t.taskProgress = num(b.taskProgress) ?? t.taskProgress;
      if (t.status === 'pending') t.status = 'running';
    } else if (e.type === 'task-end') {
      const t = task(str(b.task) ?? '?', num(b.index) ?? 0);
      const s = str(b.status);
      t.status = s === 'ok' || s === 'failed' || s === 'skipped' ? s : 'failed';
      t.endedMs = at;
      t.durationMs = num(b.durationMs);
      t.attempts = Math.max(t.attempts, num(b.attempt) ?? 0);
      t.taskProgress = num(b.taskProgress) ?? t.taskProgress;
      t.message = str(b.message);
    } else if (e.type === 'run-end') {
      tl.endedMs = at;
      const s = str(b.status);
      tl.status = s === 'ok' || s === 'failed' || s === 'aborted' ? s : 'failed';
      tl.message = str(b.message);
    }
  }
  return tl;
}
