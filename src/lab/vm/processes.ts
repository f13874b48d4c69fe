// The lab's processes (QEMU, swtpm) by pid: started detached so that a terminal's Ctrl-C
// reaches bootline first and it stops them in order (guest, then TPM), and checked by
// command line before a signal, so that a stale state file never kills a recycled pid.
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

/** True while `pid` runs (a zombie counts as gone). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat[stat.lastIndexOf(')') + 2] !== 'Z';
  } catch {
    return false;
  }
}

/** The process's argv, or null when it is gone. */
export function commandLine(pid: number): string[] | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return null;
  }
}

/** `pid` runs and its command line mentions `marker` (a path only this lab uses). */
export function isOurs(pid: number, marker: string): boolean {
  return isAlive(pid) && (commandLine(pid)?.some((a) => a.includes(marker)) ?? false);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits up to `ms` for `pid` to end; true when it did. */
export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() >= until) return false;
    await sleep(50);
  }
  return true;
}

/** SIGTERM, then SIGKILL after `graceMs`; only when the process is still ours. */
export async function terminate(pid: number, marker: string, graceMs = 3000): Promise<void> {
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    if (!isOurs(pid, marker)) return;
    try {
      process.kill(pid, signal);
    } catch {
      return;
    }
    if (await waitGone(pid, signal === 'SIGTERM' ? graceMs : 5000)) return;
  }
}

/** Synchronous last resort (process 'exit' handlers cannot wait). */
export function killNow(pid: number, marker: string): void {
  if (!isOurs(pid, marker)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Starts `cmd` in its own process group with stdout and stderr appended to `logFile`; resolves once it has spawned. */
export async function spawnLogged(cmd: string, args: string[], logFile: string): Promise<number> {
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('error', (e) => reject(new Error(`could not start ${cmd}: ${e.message}`)));
      child.once('spawn', () => resolve(child.pid!));
    });
    // Not keeping bootline alive: the lab's exit hook or `bootline lab down` ends it.
    child.unref();
    return pid;
  } finally {
    closeSync(fd);
  }
}

/** The last lines of a log, to put into an error. */
export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}
