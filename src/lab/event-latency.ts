// Event latency as the server recorded it: for each stored event, from `ts` (when the agent
// made it, the agent's clock) to `receivedAt` (when the server's handler took the batch that
// holds it; written with the event, in the transaction that stores it). Agents and server of
// a simulated fleet share one machine and one clock, so the difference is a real delay:
// the agent's queue, the HTTP round trip, waiting for CPU, the server parsing the batch.

export interface LatencySummary {
  events: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** The p-th percentile (0–100) of ascending values, nearest rank. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no values');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Latencies in ms of stored events; an unreadable time is an error naming the event. */
export function eventLatencies(events: readonly { runId: string; seq: number; ts: string; receivedAt: string }[]): number[] {
  return events.map((e) => {
    const made = Date.parse(e.ts);
    const received = Date.parse(e.receivedAt);
    if (!Number.isFinite(made) || !Number.isFinite(received)) throw new Error(`run ${e.runId} seq ${e.seq}: unreadable time (ts ${e.ts}, receivedAt ${e.receivedAt})`);
    return received - made;
  });
}

export function summarize(latenciesMs: readonly number[]): LatencySummary | undefined {
  if (latenciesMs.length === 0) return undefined;
  const sorted = [...latenciesMs].sort((a, b) => a - b);
  return { events: sorted.length, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1)! };
}
