// A TPM 2.0 per device: `swtpm socket`, its state in the device's directory, controlled
// over a unix socket that QEMU connects to (-tpmdev emulator). Started before QEMU, and
// stopped after it; --terminate also ends it when QEMU closes the connection.
import { existsSync, mkdirSync } from 'node:fs';
import { isAlive, sleep, spawnLogged, tail } from './processes.ts';
import { SWTPM } from './requirements.ts';

export class SwtpmError extends Error {
  override name = 'SwtpmError';
}

export interface SwtpmPaths {
  stateDir: string;
  socket: string;
  log: string;
}

export function swtpmArgs(p: SwtpmPaths): string[] {
  return ['socket', '--tpm2', '--tpmstate', `dir=${p.stateDir}`, '--ctrl', `type=unixio,path=${p.socket}`, '--log', `file=${p.log},level=1`, '--terminate'];
}

/** Starts swtpm and waits for its control socket; returns its pid. */
export async function startSwtpm(p: SwtpmPaths, timeoutMs = 5000): Promise<number> {
  mkdirSync(p.stateDir, { recursive: true });
  const pid = await spawnLogged(SWTPM, swtpmArgs(p), p.log);
  const until = Date.now() + timeoutMs;
  while (!existsSync(p.socket)) {
    if (!isAlive(pid)) throw new SwtpmError(`swtpm exited at start (log ${p.log}):\n${tail(p.log)}`);
    if (Date.now() > until) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
      throw new SwtpmError(`swtpm did not create ${p.socket} within ${timeoutMs} ms (log ${p.log})`);
    }
    await sleep(25);
  }
  return pid;
}
