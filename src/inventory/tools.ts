// Running the external programs the inventory asks (dmidecode, tpm2-tools, the plan's extra
// commands): a missing program, a refusal or a timeout is a result to report, never a throw.
import { execFile } from 'node:child_process';

export interface ToolResult {
  /** The program was not found (ENOENT). */
  missing: boolean;
  exitCode: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Why it failed, in words, when it did (not started, killed, non-zero exit). */
  failure?: string;
}

export interface ToolRunner {
  run(file: string, args: readonly string[], o?: { env?: Record<string, string>; timeoutMs?: number; binary?: boolean }): Promise<ToolResult>;
}

/** Debian package of each program the inventory calls, for "install X" messages. */
export const TOOL_PACKAGES: Record<string, string> = {
  dmidecode: 'dmidecode',
  tpm2_getcap: 'tpm2-tools',
  tpm2_createek: 'tpm2-tools',
  tpm2_nvread: 'tpm2-tools',
  tpm2_readpublic: 'tpm2-tools',
};

export function missingMessage(tool: string): string {
  const pkg = TOOL_PACKAGES[tool];
  return `${tool} is not installed${pkg ? ` (Debian package ${pkg})` : ''}`;
}

export function toolRunner(o: { path?: string; signal?: AbortSignal; timeoutMs?: number }): ToolRunner {
  return {
    run(file, args, ro = {}) {
      const timeoutMs = ro.timeoutMs ?? o.timeoutMs ?? 30_000;
      return new Promise((resolve) => {
        execFile(
          file,
          args,
          {
            env: { ...process.env, ...(o.path !== undefined ? { PATH: o.path } : {}), LC_ALL: 'C', ...ro.env },
            timeout: timeoutMs,
            maxBuffer: 16 << 20,
            encoding: 'utf8',
            ...(o.signal ? { signal: o.signal } : {}),
          },
          (err, stdout, stderr) => {
            const e = err as (NodeJS.ErrnoException & { code?: string | number; killed?: boolean; signal?: string }) | null;
            if (!e) return resolve({ missing: false, exitCode: 0, stdout, stderr, timedOut: false });
            if (e.code === 'ENOENT') return resolve({ missing: true, exitCode: null, stdout: '', stderr: '', timedOut: false, failure: missingMessage(file) });
            const timedOut = e.killed === true && e.signal === 'SIGTERM';
            const exitCode = typeof e.code === 'number' ? e.code : null;
            const said = (stderr || stdout || '').trim().split('\n').slice(-3).join(' / ');
            const failure = timedOut
              ? `${file} did not finish within ${timeoutMs / 1000} s`
              : exitCode !== null
                ? `${file} exited with ${exitCode}${said ? `: ${said}` : ''}`
                : `${file} could not run: ${e.message}`;
            resolve({ missing: false, exitCode, stdout: stdout ?? '', stderr: stderr ?? '', timedOut, failure });
          },
        );
      });
    },
  };
}
