// A simulated power cut of one device: the agent and every process it started stop at
// the same moment, then die. Killing the agent alone is not a power cut: its scripts run
// in their own process groups (so that a timeout kills a script's whole tree), would
// outlive it and go on writing.
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Parent pid of every process visible in /proc. */
function parents(): Map<number, number> {
  const map = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      map.set(Number(name), ppid);
    } catch {
      // gone meanwhile
    }
  }
  return map;
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGSTOPs `child` and then, level by level, every descendant (a stopped process forks no
 * more), then SIGKILLs them all. Resolves once `child` has exited. Returns how many
 * processes were killed.
 */
export async function powerCut(child: ChildProcess): Promise<number> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return 0;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const tree = new Set<number>();
  if (signal(pid, 'SIGSTOP')) tree.add(pid);
  for (;;) {
    const more = [...parents()].filter(([p, pp]) => tree.has(pp) && !tree.has(p)).map(([p]) => p);
    if (more.length === 0) break;
    for (const p of more) {
      signal(p, 'SIGSTOP');
      tree.add(p);
    }
  }
  for (const p of tree) signal(p, 'SIGKILL');
  if (child.exitCode === null && child.signalCode === null) await exited;
  return tree.size;
}
