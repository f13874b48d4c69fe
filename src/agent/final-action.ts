// What happens after the run: nothing, reboot, power off, or a shell on the console,
// after a delay that is shown — as Isar's installer service reboots "in 60 s".
import { spawn } from 'node:child_process';
import type { FinalAction } from '../config/schema.ts';
import { runProcess, describeResult } from './process.ts';
import { sleep } from './timing.ts';

const DEFAULT_COMMANDS: Record<string, string> = { reboot: 'reboot', poweroff: 'poweroff' };

export async function performFinalAction(
  a: FinalAction,
  say: (message: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  if (a.action === 'none') return;
  if (a.delay > 0) {
    say(`${a.action === 'shell' ? 'Starting a shell' : a.action === 'reboot' ? 'Rebooting' : 'Powering off'} in ${a.delay} s`);
    await sleep(a.delay * 1000, signal);
    if (signal?.aborted) return;
  }
  if (a.action === 'shell' && !a.command) {
    if (!process.stdin.isTTY) {
      say('onSuccess/onFailure is "shell" but there is no console TTY: not starting a shell');
      return;
    }
    await new Promise<void>((r) => spawn('/bin/sh', ['-i'], { stdio: 'inherit' }).on('exit', () => r()).on('error', () => r()));
    return;
  }
  const command = a.command ?? DEFAULT_COMMANDS[a.action]!;
  say(`running "${command}"`);
  const r = await runProcess({ file: '/bin/sh', args: ['-c', command], env: process.env, onLine: (_s, l) => say(l), timeoutMs: 60_000 });
  if (r.exitCode !== 0) say(`"${command}" failed: ${describeResult(r, 60)}`);
}
