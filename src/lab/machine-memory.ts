// The machine's used memory while a fleet runs: MemTotal − MemAvailable from /proc/meminfo
// (what `free` calls used plus the page cache the kernel could not drop at once), sampled
// on a timer. RSS summed over processes would count node's shared pages once per agent.
import { readFileSync } from 'node:fs';

/** Used memory in MiB from the text of /proc/meminfo: MemTotal − MemAvailable. */
export function usedMiB(meminfo: string): number {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(meminfo);
    if (!m) throw new Error(`/proc/meminfo has no ${name} line`);
    return Number(m[1]);
  };
  return (field('MemTotal') - field('MemAvailable')) / 1024;
}

export interface MemoryWatch {
  /** Used memory when the watch started, MiB. */
  readonly beforeMiB: number;
  /** Stops sampling; the highest used memory seen, MiB. */
  stop(): number;
}

/** Samples the machine's used memory every `everyMs` until stopped. */
export function watchMachineMemory(everyMs = 500): MemoryWatch {
  const read = () => usedMiB(readFileSync('/proc/meminfo', 'utf8'));
  const beforeMiB = read();
  let peak = beforeMiB;
  const timer = setInterval(() => (peak = Math.max(peak, read())), everyMs);
  timer.unref();
  return {
    beforeMiB,
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, read());
      return peak;
    },
  };
}
