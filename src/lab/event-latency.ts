// Event latency as the server recorded it: for each stored event, from `ts` (when the agent
// made it, the agent's clock) to `receivedAt` (when the server's handler took the batch that
// holds it; written with the event, in the transaction that stores it). Agents and server of
// a simulated fleet share one machine and one clock, so the difference is a real delay:
// the agent's queue, the HTTP round trip, waiting for CPU, the server parsing the batch.

export interface LatencySummary {
  /** How many values (events, or requests). */
  count: number;
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
  return { count: sorted.length, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99), maxMs: sorted.at(-1)! };
}

/**
 * How long the server took for each event batch: the `responseTime` (ms, from the request's
 * arrival to its answer, which comes after the commit) of every answered
 * `POST /api/v1/device/events` in the server's log (Fastify's info-level request lines,
 * JSON). Requests are matched by process and request id: several servers, or a restarted
 * one, may write to the same log.
 */
export function eventPostTimes(log: string): number[] {
  const posts = new Set<string>();
  const times: number[] = [];
  for (const line of log.split('\n')) {
    if (!line.startsWith('{')) continue;
    let r: { pid?: number; reqId?: string; msg?: string; req?: { method?: string; url?: string }; res?: { statusCode?: number }; responseTime?: number };
    try {
      r = JSON.parse(line) as typeof r;
    } catch {
      continue;
    }
    const key = `${r.pid}/${r.reqId}`;
    if (r.msg === 'incoming request' && r.req?.method === 'POST' && r.req.url === '/api/v1/device/events') posts.add(key);
    else if (r.msg === 'request completed' && posts.has(key) && r.res?.statusCode === 200 && typeof r.responseTime === 'number') {
      times.push(r.responseTime);
      posts.delete(key);
    }
  }
  return times;
}
