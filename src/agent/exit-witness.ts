// The exit witness: a script task runs under a small /bin/sh wrapper that creates a file in
// the state dir the moment the script exits 0, before the agent has even noticed the exit.
// Between a script's exit and the journal's record of it lies the agent's own work (noticing
// the exit, closing the pipes and the progress FIFO, two fsyncs and a rename: 8.6 ms measured
// under strace); an agent killed in that window used to run the script again on restart. The
// wrapper's write follows the script's exit within the shell's own wait, so a restarted agent
// that finds the journal saying "running" and the witness present knows the script ended.
// It shrinks the window; it cannot close it (a kill between the exit and the write remains).
// The witness is then made durable (`sync FILE DIR`: coreutils and busybox fsync each), so it also
// counts after a real power loss where the state dir is on a disk, as the journal does.
import { accessSync, constants, existsSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { constants as osConstants } from 'node:os';

const SHELL = '/bin/sh';
const PREFIX = 'exited-ok-';

/**
 * `$1` is the witness file; the rest is the command. The script's status is passed on. The file
 * is created first and synced after: its creation is what a killed agent's restart looks for.
 */
const WRAPPER = 'w=$1; shift; "$@"; s=$?; if [ "$s" -eq 0 ]; then : > "$w"; sync "$w" "${w%/*}" 2>/dev/null; fi; exit "$s"';

/** Where the witness of a task with this definition hash lives. */
export function witnessPath(stateDir: string, definition: string): string {
  return join(stateDir, `${PREFIX}${definition}`);
}

/** True when a /bin/sh is there to run the wrapper (else scripts run as before, unwitnessed). */
export function canWitness(): boolean {
  return existsSync(SHELL);
}

/** The command line that runs `file args` and leaves the witness when it exits 0. */
export function witnessed(file: string, args: readonly string[], witness: string): { file: string; args: string[] } {
  return { file: SHELL, args: ['-c', WRAPPER, 'bootline-task', witness, file, ...args] };
}

/**
 * Why `file` cannot be run, as spawn would have said it (the shell would only say "exit status
 * 127"), or undefined when it can.
 */
export function notRunnable(file: string): NodeJS.ErrnoException | undefined {
  try {
    accessSync(file, constants.X_OK);
    return undefined;
  } catch (e) {
    return e as NodeJS.ErrnoException;
  }
}

/** True when the witness of a task with this definition says it exited 0. */
export function hasWitness(stateDir: string, definition: string): boolean {
  return existsSync(witnessPath(stateDir, definition));
}

/** Removes a task's witness once the journal holds its outcome (or before it runs again). */
export function clearWitness(stateDir: string, definition: string): void {
  try {
    unlinkSync(witnessPath(stateDir, definition));
  } catch {
    // not there
  }
}

/** Every witness in the state dir (their definition hashes). */
export function witnesses(stateDir: string): string[] {
  try {
    return readdirSync(stateDir)
      .filter((f) => f.startsWith(PREFIX))
      .map((f) => f.slice(PREFIX.length));
  } catch {
    return [];
  }
}

/** A shell reports a child killed by signal N as exit status 128+N: name the signal again. */
export function shellSignal(exitCode: number | null): string | undefined {
  if (exitCode === null || exitCode <= 128) return undefined;
  const n = exitCode - 128;
  return Object.entries(osConstants.signals).find(([, v]) => v === n)?.[0];
}
