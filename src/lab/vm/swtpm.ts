// A TPM 2.0 per device: `swtpm socket`, its state in the device's directory, controlled
// over a unix socket that QEMU connects to (-tpmdev emulator). Started before QEMU, and
// stopped after it; --terminate also ends it when QEMU closes the connection.
//
// The state is manufactured first with swtpm_setup (an EK, like a real TPM) with only the
// SHA-256 PCR bank active: a bare swtpm activates SHA-1/256/384/512, and OVMF then hashes
// everything it measures four times, which under TCG cost about 13 s per boot.
import { execFile as execFileCb } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { isAlive, sleep, spawnLogged, tail } from './processes.ts';
import { SWTPM, SWTPM_SETUP } from './requirements.ts';

const execFile = promisify(execFileCb);

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

export function swtpmSetupArgs(stateDir: string, pcrBanks: string): string[] {
  return ['--tpm2', '--tpmstate', stateDir, '--pcr-banks', pcrBanks, '--createek', '--overwrite'];
}

/** Manufactures the TPM state (EK, active PCR banks) into an empty state dir. */
export async function manufactureTpm(stateDir: string, pcrBanks = 'sha256'): Promise<void> {
  mkdirSync(stateDir, { recursive: true });
  try {
    await execFile(SWTPM_SETUP, swtpmSetupArgs(stateDir, pcrBanks), { encoding: 'utf8', timeout: 30_000 });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new SwtpmError(`swtpm_setup failed for ${stateDir}: ${(err.stderr || err.stdout || err.message).trim().split('\n').slice(-5).join(' / ')}`);
  }
}

/** Manufactures the TPM, starts swtpm and waits for its control socket; returns its pid. */
export async function startSwtpm(p: SwtpmPaths, timeoutMs = 5000): Promise<number> {
  await manufactureTpm(p.stateDir);
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
