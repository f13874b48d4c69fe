// A simulated power cut of one device: the agent and every process it started stop at
// the same moment, then die. Killing the agent alone is not a power cut: its scripts run
// in their own process groups and sessions (so that a timeout kills a script's whole
// tree), would outlive it and go on writing.
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

interface Proc {
  pid: number;
  ppid: number;
  /** Its environment holds the device's marker. */
  marked: boolean;
}

/** Every process visible in /proc, with its parent and whether its environment holds `marker` ("KEY=value"). */
function processes(marker: string | undefined): Proc[] {
  const list: Proc[] = [];
  const needle = marker ? Buffer.from(`${marker}\0`) : undefined;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      let marked = false;
      if (needle) {
        const env = readFileSync(`/proc/${name}/environ`);
        marked = env.indexOf(needle) === 0 || env.indexOf(Buffer.concat([Buffer.from('\0'), needle])) >= 0;
      }
      list.push({ pid: Number(name), ppid, marked });
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return list;
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
 * SIGSTOPs `child` and then every descendant and every process whose environment holds
 * `marker` (a "KEY=value" the device's processes inherit: it finds one that was reparented
 * or forked while the scan ran), rescanning until no new one turns up; then SIGKILLs them
 * all, and rescans until none is left. Resolves once `child` has exited; returns how many
 * processes were killed.
 */
export async function powerCut(child: ChildProcess, marker?: string): Promise<number> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return 0;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const tree = new Set<number>([pid]);
  signal(pid, 'SIGSTOP');
  const members = () => processes(marker).filter((p) => p.pid !== process.pid && (tree.has(p.pid) || tree.has(p.ppid) || p.marked));
  for (let round = 0; round < 50; round++) {
    const more = members().filter((p) => !tree.has(p.pid));
    if (more.length === 0) break;
    for (const p of more) {
      signal(p.pid, 'SIGSTOP');
      tree.add(p.pid);
    }
  }
  for (let round = 0; round < 50; round++) {
    for (const p of tree) signal(p, 'SIGKILL');
    // Killed processes linger as zombies until reaped; only live ones count.
    const alive = members().filter((p) => !isZombie(p.pid));
    if (alive.length === 0) break;
    for (const p of alive) tree.add(p.pid);
    await new Promise((r) => setTimeout(r, 5));
  }
  if (child.exitCode === null && child.signalCode === null) await exited;
  return tree.size;
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return true;
  }
}
