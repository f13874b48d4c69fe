// Hooks run before and after every task (after also when it failed), like a report
// script a line already has. A failing hook is logged; it fails the run only when the
// config says so (hooks.failRun).
import { runProcess, describeResult } from './process.ts';

export interface HookRun {
  command: string;
  ok: boolean;
  detail: string;
}

export async function runHooks(
  commands: readonly string[],
  env: NodeJS.ProcessEnv,
  timeoutS: number,
  signal: AbortSignal,
  onLine: (line: string) => void,
): Promise<HookRun[]> {
  const results: HookRun[] = [];
  for (const command of commands) {
    const r = await runProcess({ file: '/bin/sh', args: ['-c', command], env, timeoutMs: timeoutS * 1000, signal, onLine: (_s, l) => onLine(l) });
    results.push({ command, ok: !r.spawnError && !r.timedOut && r.exitCode === 0, detail: describeResult(r, timeoutS) });
  }
  return results;
}
