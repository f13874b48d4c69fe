// Event-to-paint latency and frame times, kept only when the page is opened with ?measure
// (bench/dashboard.ts reads them through window.__bootlineMeasure).

export interface Measurements {
  /** ms from an event's time stamp (its `ts`, the sender's clock) to the frame after the tile showing it was committed. */
  latencies: number[];
  /** ms from the server's receipt of that event (its receivedAt) to the same frame. */
  fromServer: number[];
  /** ms between consecutive animation frames. */
  frames: number[];
  /** Stream entries applied. */
  applied: number;
}

declare global {
  interface Window {
    __bootlineMeasure?: Measurements;
  }
}

export const measuring = typeof window !== 'undefined' && new URLSearchParams(window.location.search).has('measure');

let frameLoop = false;

export function startFrameClock(): void {
  if (!measuring || frameLoop) return;
  frameLoop = true;
  const m = (window.__bootlineMeasure ??= { latencies: [], fromServer: [], frames: [], applied: 0 });
  let last = performance.now();
  const tick = (t: number) => {
    m.frames.push(t - last);
    last = t;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

/** Records, at the next frame, how old the newest events of the tiles just committed are. */
export function recordPaint(eventTimes: number[], receivedTimes: number[], applied: number): void {
  if (!measuring || eventTimes.length === 0) return;
  const m = (window.__bootlineMeasure ??= { latencies: [], fromServer: [], frames: [], applied: 0 });
  m.applied += applied;
  requestAnimationFrame(() => {
    const now = Date.now();
    for (const t of eventTimes) m.latencies.push(now - t);
    for (const t of receivedTimes) m.fromServer.push(now - t);
  });
}
