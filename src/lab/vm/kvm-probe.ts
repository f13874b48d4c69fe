// Is KVM usable here? /dev/kvm existing is not enough: under broken nested
// virtualisation a KVM guest starts and then hangs. So the probe boots a 512-byte boot
// sector (made here) that writes to QEMU's isa-debug-exit port: QEMU exits with a
// known status at once when the guest really ran. Anything else within a few seconds
// means TCG. The verdict is cached per kernel and QEMU binary; BOOTLINE_LAB_ACCEL=kvm|tcg
// overrides it.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, accessSync, constants, writeFileSync } from 'node:fs';
import { homedir, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Accel } from './qemu-args.ts';
import { onPath } from '../../which.ts';
import { QEMU } from './requirements.ts';

/** The byte the boot sector writes; isa-debug-exit makes QEMU exit with (value << 1) | 1. */
export const PROBE_VALUE = 0x31;
export const PROBE_EXIT_STATUS = (PROBE_VALUE << 1) | 1;
export const PROBE_PORT = 0xf4;

/** A BIOS boot sector: mov al,0x31; out 0xf4,al; then halt forever. */
export function probeBootSector(): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from([0xb0, PROBE_VALUE, 0xe6, PROBE_PORT, 0xf4, 0xeb, 0xfd]).copy(b);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/**
 * The probe's QEMU command line. `pc` rather than q35: SeaBIOS on q35 does not boot a
 * one-sector IDE disk, and the question is only whether the CPU runs. `-cpu host` as the
 * lab's KVM guests use it (some hosts refuse it, which is a verdict too).
 */
export function probeArgs(sectorFile: string, accel: Accel = 'kvm'): string[] {
  return [
    '-machine', `pc,accel=${accel}`, '-cpu', accel === 'kvm' ? 'host' : 'max', '-m', '32',
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-serial', 'none',
    '-device', `isa-debug-exit,iobase=0x${PROBE_PORT.toString(16)},iosize=0x01`,
    '-drive', `if=ide,format=raw,file=${sectorFile}`,
  ];
}

export type KvmReason = 'kvm-works' | 'no-dev-kvm' | 'dev-kvm-not-accessible' | 'kvm-guest-hangs' | 'kvm-refused' | 'forced';

export interface KvmVerdict {
  accel: Accel;
  reason: KvmReason;
  /** For people: what was seen. */
  detail: string;
}

export interface ProbeOutcome {
  exitStatus: number | null;
  signal: string | null;
  timedOut: boolean;
  stderr: string;
  elapsedMs: number;
}

/** Pure: what a probe run means. */
export function kvmVerdict(o: ProbeOutcome): KvmVerdict {
  if (o.exitStatus === PROBE_EXIT_STATUS) return { accel: 'kvm', reason: 'kvm-works', detail: `a KVM guest ran the probe and exited in ${o.elapsedMs} ms` };
  if (o.timedOut) return { accel: 'tcg', reason: 'kvm-guest-hangs', detail: `a KVM guest did not reach the probe's exit port within ${o.elapsedMs} ms (nested virtualisation not working?)` };
  const err = o.stderr.trim().split('\n').slice(-3).join(' / ');
  return { accel: 'tcg', reason: 'kvm-refused', detail: `QEMU with KVM ended with ${o.signal ? `signal ${o.signal}` : `status ${o.exitStatus}`}${err ? `: ${err}` : ''}` };
}

/** Pure checks before running anything: no device node, or no permission on it. */
export function precheck(devKvm: { exists: boolean; accessible: boolean }): KvmVerdict | null {
  if (!devKvm.exists) return { accel: 'tcg', reason: 'no-dev-kvm', detail: '/dev/kvm does not exist' };
  if (!devKvm.accessible) return { accel: 'tcg', reason: 'dev-kvm-not-accessible', detail: '/dev/kvm is not readable and writable by this user (add it to group kvm)' };
  return null;
}

export const PROBE_TIMEOUT_MS = 4000;

/** Runs the probe (no cache). */
export async function runKvmProbe(timeoutMs = PROBE_TIMEOUT_MS): Promise<KvmVerdict> {
  let accessible = false;
  const exists = existsSync('/dev/kvm');
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    accessible = true;
  } catch {
    // reported by precheck
  }
  const early = precheck({ exists, accessible });
  if (early) return early;
  const dir = mkdtempSync(join(tmpdir(), 'bootline-kvm-probe-'));
  try {
    const sector = join(dir, 'probe.img');
    writeFileSync(sector, probeBootSector());
    const started = Date.now();
    const outcome = await new Promise<ProbeOutcome>((resolve) => {
      const child = spawn(QEMU, probeArgs(sector), { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      let timedOut = false;
      child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (e) => {
        clearTimeout(timer);
        resolve({ exitStatus: null, signal: null, timedOut: false, stderr: e.message, elapsedMs: Date.now() - started });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ exitStatus: code, signal, timedOut, stderr, elapsedMs: Date.now() - started });
      });
    });
    return kvmVerdict(outcome);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What invalidates a cached verdict: another kernel, another QEMU binary. */
export function probeCacheKey(): string {
  const qemu = onPath(QEMU);
  const st = qemu ? statSync(qemu) : undefined;
  return JSON.stringify({ kernel: release(), qemu, size: st?.size, mtime: st?.mtimeMs });
}

export const DEFAULT_PROBE_CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'bootline', 'kvm-verdict.json');

let memo: { key: string; verdict: KvmVerdict } | undefined;

/** KVM or TCG: the override, else the cached verdict, else a fresh probe (then cached). */
export async function chooseAccel(o: { cacheFile?: string; env?: NodeJS.ProcessEnv } = {}): Promise<KvmVerdict> {
  const forced = (o.env ?? process.env).BOOTLINE_LAB_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: 'forced', detail: `BOOTLINE_LAB_ACCEL=${forced}` };
  const key = probeCacheKey();
  if (memo?.key === key) return memo.verdict;
  const file = o.cacheFile ?? DEFAULT_PROBE_CACHE;
  try {
    const cached = JSON.parse(readFileSync(file, 'utf8')) as { key: string; verdict: KvmVerdict };
    if (cached.key === key) return (memo = cached).verdict;
  } catch {
    // no cache yet, or unreadable: probe
  }
  const verdict = await runKvmProbe();
  memo = { key, verdict };
  try {
    mkdirSync(join(file, '..'), { recursive: true });
    writeFileSync(`${file}.tmp`, JSON.stringify(memo));
    renameSync(`${file}.tmp`, file);
  } catch {
    // a cache we cannot write only costs a probe next time
  }
  return verdict;
}
