// A bounded event queue for a receiver that cannot keep up: when it is full, events
// whose loss costs least go first — a progress event superseded by a newer one of the
// same task, then the oldest log line, then the oldest progress. Milestones (run and
// task start/end) are never dropped.
import { isMilestone, type BootlineEvent } from '../events.ts';

/**
 * Which queued event to give up first when the queue is full: a progress event that a
 * newer one of the same task has superseded, then the oldest log line, then the oldest
 * remaining progress. Milestones are never chosen (-1 when only milestones are left).
 */
export function dropCandidate(queue: readonly BootlineEvent[]): number {
  const newest = new Set<string>();
  let superseded = -1;
  for (let i = queue.length - 1; i >= 0; i--) {
    const e = queue[i];
    if (e?.type !== 'task-progress') continue;
    const key = `${e.runId}\0${e.index}`;
    if (newest.has(key)) superseded = i;
    else newest.add(key);
  }
  if (superseded >= 0) return superseded;
  const log = queue.findIndex((e) => e.type === 'log');
  if (log >= 0) return log;
  return queue.findIndex((e) => !isMilestone(e));
}

/** Appends `event`, then trims the queue back to `limit`; returns how many events were dropped. */
export function enqueueBounded(queue: BootlineEvent[], event: BootlineEvent, limit: number): number {
  queue.push(event);
  let dropped = 0;
  while (queue.length > limit) {
    const i = dropCandidate(queue);
    if (i < 0) break; // only milestones: they are few, so the queue may exceed its limit for them
    queue.splice(i, 1);
    dropped++;
  }
  return dropped;
}

