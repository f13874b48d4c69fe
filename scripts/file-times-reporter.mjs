// A node:test reporter that writes each test file's wall time, one "seconds<TAB>path" line per
// file, so run-tests.mjs can name the slowest files (the suite must stay under 20 minutes).
// Files run one at a time in a lane, so a file's time runs from the previous file's last event
// to its own last one: that includes its start-up and its hooks, which test durations do not.
import { performance } from 'node:perf_hooks';

export default async function* fileTimes(source) {
  let current;
  let last = performance.now();
  let closed = last;
  const times = new Map();
  for await (const event of source) {
    const file = event.data?.file;
    if (!file) continue;
    const now = performance.now();
    if (file !== current) {
      if (current !== undefined) times.set(current, (times.get(current) ?? 0) + (last - closed) / 1000);
      closed = last;
      current = file;
    }
    last = now;
  }
  if (current !== undefined) times.set(current, (times.get(current) ?? 0) + (last - closed) / 1000);
  for (const [file, seconds] of times) yield `${seconds.toFixed(1)}\t${file}\n`;
}
