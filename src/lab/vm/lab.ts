// A lab: N virtual devices that network-boot from a line server. startLab checks every
// input and the host before it starts anything, starts the devices (each: swtpm, then
// QEMU), records them in <dir>/lab.json, and stops all of them again if any step fails.
// Unless detached (`bootline lab up` without --foreground), a lab is also stopped when
// this process exits or receives SIGINT/SIGTERM.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chainScript, guestServerUrl } from './ipxe-chain.ts';
import { deviceIdentity, LAB_ID, MAX_DEVICES } from './identity.ts';
import { parseDiskSize } from './disk-size.ts';
import { chooseFirmware, type VarsTemplate } from './ovmf.ts';
import { assertRequirements, labRequirements } from './requirements.ts';
import { chooseAccel, type KvmVerdict } from './kvm-probe.ts';
import type { Accel, TpmModel } from './qemu-args.ts';
import { startDevice, stopDevice } from './device.ts';
import { isOurs, killNow, terminate, waitGone } from './processes.ts';
import { qmpOnce } from './qmp.ts';
import { readLabState, STATE_FILE, writeLabState, type DeviceRecord, type LabState } from './state.ts';
import { waitForSerial } from './serial-console.ts';

export class LabError extends Error {
  override name = 'LabError';
}

export interface LabOptions {
  /** How many devices (1 to 250). */
  devices: number;
  /** The line server as this host reaches it, e.g. http://127.0.0.1:8080. */
  serverUrl: string;
  /** Where the lab keeps its files (default: a new temp dir, removed by stop()). */
  dir?: string;
  /** Seeds MACs, serial numbers and UUIDs (default: random). */
  id?: string;
  /** Each device's disk: "8G", "512M" or bytes (default 8G, sparse). */
  diskSize?: string | number;
  memoryMiB?: number;
  cpus?: number;
  /** Secure-boot capable firmware (SMM). */
  secureBoot?: boolean;
  /** VARS template: "empty" (Setup Mode, default) or "ms" (Microsoft keys). */
  vars?: VarsTemplate;
  /** A raw disk image each device's disk starts as (sparse copy, grown to diskSize): devices that already have an OS. */
  diskImage?: string;
  /** A raw installer image attached read-only as a USB stick, booted before the network; several are booted in their order. */
  usb?: string | string[];
  /** A TPM 2.0 per device (default true). */
  tpm?: boolean;
  tpmModel?: TpmModel;
  /** "auto" (default) probes KVM once and falls back to TCG. */
  accel?: Accel | 'auto';
  /** Under TCG, the size of QEMU's translated-code buffer (qemu-args.ts says why a test that boots a device again sets it). */
  tcgCodeBufferMiB?: number;
  /** Check that the server answers /boot.ipxe before starting (default true). */
  checkServer?: boolean;
  /** Leave the devices running when this process exits (`bootline lab down` stops them). */
  detach?: boolean;
  /** When the lab is stopped because this process exits or is interrupted, keep the serial and QEMU logs. */
  keepLogs?: boolean;
  /** Progress lines for people. */
  log?: (line: string) => void;
}

export interface Lab {
  id: string;
  dir: string;
  serverUrl: string;
  /** The server URL as the guests reach it (loopback becomes 10.0.2.2). */
  guestServerUrl: string;
  accel: KvmVerdict;
  devices: DeviceRecord[];
  /** Resolves with the first match on the device's serial console; rejects on timeout or when the guest is gone without it. */
  waitForSerial(device: DeviceRecord | number, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** True while the device's QEMU runs. */
  isRunning(device: DeviceRecord | number): boolean;
  /** Waits for the device's QEMU to end (the guest powered off); true when it did within `timeoutMs`. */
  waitForExit(device: DeviceRecord | number, timeoutMs: number): Promise<boolean>;
  /** A QMP command to the device (e.g. "system_reset", "query-status"). */
  qmp<T = unknown>(device: DeviceRecord | number, command: string, args?: Record<string, unknown>): Promise<T>;
  /** Stops every device (QMP quit, SIGTERM, SIGKILL; then swtpm) and removes the lab's files (but the serial and QEMU logs with keepLogs). */
  stop(o?: { keepLogs?: boolean }): Promise<void>;
}

export const DEFAULTS = { diskSize: '8G', memoryMiB: 1024, cpus: 1, tpmModel: 'tpm-crb' as TpmModel, bootfile: 'boot.ipxe' };

interface Checked {
  devices: number;
  diskBytes: number;
  memoryMiB: number;
  cpus: number;
  id: string;
  guestUrl: string;
}

/** Validates everything that can be validated without touching the host. */
export function checkLabOptions(o: LabOptions): Checked {
  if (!Number.isInteger(o.devices) || o.devices < 1 || o.devices > MAX_DEVICES) throw new LabError(`--devices must be a whole number from 1 to ${MAX_DEVICES}, not ${o.devices}`);
  const memoryMiB = o.memoryMiB ?? DEFAULTS.memoryMiB;
  if (!Number.isInteger(memoryMiB) || memoryMiB < 256 || memoryMiB > 65536) throw new LabError(`--memory must be 256 to 65536 (MiB), not ${o.memoryMiB}`);
  const cpus = o.cpus ?? DEFAULTS.cpus;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 64) throw new LabError(`--cpus must be 1 to 64, not ${o.cpus}`);
  if (o.tcgCodeBufferMiB !== undefined && !(Number.isInteger(o.tcgCodeBufferMiB) && o.tcgCodeBufferMiB >= 1))
    throw new LabError(`tcgCodeBufferMiB must be a whole number of MiB, at least 1, not ${o.tcgCodeBufferMiB}`);
  const id = o.id ?? randomBytes(3).toString('hex');
  if (!LAB_ID.test(id)) throw new LabError(`lab id ${JSON.stringify(id)} must be 1 to 32 letters, digits or "-"`);
  if (o.vars !== undefined && o.vars !== 'empty' && o.vars !== 'ms') throw new LabError(`--vars must be "empty" or "ms", not ${JSON.stringify(o.vars)}`);
  const diskSize = o.diskSize ?? DEFAULTS.diskSize;
  const diskBytes = typeof diskSize === 'number' ? parseDiskSize(String(diskSize)) : parseDiskSize(diskSize);
  for (const stick of o.usb === undefined ? [] : [o.usb].flat())
    if (!(existsSync(stick) && statSync(stick).isFile())) throw new LabError(`--usb ${stick}: no such file (give a raw installer image)`);
  if (o.diskImage !== undefined && !(existsSync(o.diskImage) && statSync(o.diskImage).isFile())) throw new LabError(`--disk-image ${o.diskImage}: no such file (give a raw disk image)`);
  return { devices: o.devices, diskBytes, memoryMiB, cpus, id, guestUrl: guestServerUrl(o.serverUrl) };
}

/** The server answers its generic boot script: devices would otherwise sit in iPXE's retry loop. */
export async function checkServer(serverUrl: string, timeoutMs = 3000): Promise<void> {
  const url = `${serverUrl.replace(/\/+$/, '')}/boot.ipxe`;
  let res: Response;
  try {
    res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const c = (e as { cause?: { code?: string; message?: string } }).cause;
    const cause = c?.code ?? c?.message ?? (e as Error).message;
    throw new LabError(`the server at ${serverUrl} is unreachable (${cause}): start it with "bootline serve" or give --server`);
  }
  const text = await res.text();
  if (res.status !== 200 || !text.startsWith('#!ipxe'))
    throw new LabError(`${url} answered ${res.status} without an iPXE script: is ${serverUrl} a bootline server?`);
}

/** A running lab in `dir` (a state file with a live device process). */
function liveLab(dir: string): LabState | null {
  const s = readLabState(dir);
  return s && s.devices.some((d) => isOurs(d.qemuPid, d.qmpSocket) || (d.swtpmPid !== undefined && d.tpmSocket !== undefined && isOurs(d.swtpmPid, d.tpmSocket))) ? s : null;
}

export async function startLab(o: LabOptions): Promise<Lab> {
  const c = checkLabOptions(o);
  const firmware = chooseFirmware({ secureBoot: o.secureBoot === true, vars: o.vars ?? 'empty' });
  const tpm = o.tpm !== false;
  assertRequirements(labRequirements(firmware, { tpm }));
  if (o.checkServer !== false) await checkServer(o.serverUrl);
  const log = o.log ?? (() => {});
  const accel: KvmVerdict = o.accel === 'kvm' || o.accel === 'tcg' ? { accel: o.accel, reason: 'forced', detail: `asked for ${o.accel}` } : await chooseAccel();
  log(`lab: ${accel.accel.toUpperCase()} (${accel.detail})`);

  const ownDir = o.dir === undefined;
  const dir = ownDir ? mkdtempSync(join(tmpdir(), 'bootline-lab-')) : resolve(o.dir!);
  if (!ownDir) {
    const running = liveLab(dir);
    if (running) throw new LabError(`a lab is already running in ${dir} (${running.devices.length} devices): stop it with "bootline lab down --dir ${dir}"`);
    mkdirSync(dir, { recursive: true });
  }
  const state: LabState = {
    version: 1,
    id: c.id,
    dir,
    serverUrl: o.serverUrl,
    guestServerUrl: c.guestUrl,
    accel: accel.accel,
    accelReason: accel.reason,
    createdAt: new Date().toISOString(),
    devices: [],
  };
  // Every process as soon as it runs: a start interrupted half-way leaves none behind.
  const spawned: Spawned[] = [];
  const lab = makeLab(state, ownDir, accel, spawned);
  if (!o.detach) track(lab, state, ownDir, o.keepLogs === true, spawned);
  try {
    const tftpDir = join(dir, 'tftp');
    mkdirSync(tftpDir, { recursive: true });
    writeFileSync(join(tftpDir, DEFAULTS.bootfile), chainScript(c.guestUrl));
    writeLabState(state);
    for (let i = 1; i <= c.devices; i++) {
      const identity = deviceIdentity(c.id, i);
      const d = await startDevice({
        labDir: dir,
        identity,
        accel: accel.accel,
        tcgCodeBufferMiB: o.tcgCodeBufferMiB,
        memoryMiB: c.memoryMiB,
        cpus: c.cpus,
        diskBytes: c.diskBytes,
        ...(o.diskImage ? { diskImage: resolve(o.diskImage) } : {}),
        firmware,
        ...(o.usb ? { usb: [o.usb].flat().map((f) => resolve(f)) } : {}),
        tftpDir,
        bootfile: DEFAULTS.bootfile,
        tpm,
        tpmModel: o.tpmModel ?? DEFAULTS.tpmModel,
        onSpawn: (pid, marker) => spawned.push({ pid, marker }),
      });
      state.devices.push(d);
      writeLabState(state);
      log(`lab: ${d.name} started: MAC ${d.mac}, serial ${d.serial}, console ${d.serialLog}`);
    }
  } catch (e) {
    await lab.stop();
    throw e;
  }
  return lab;
}

interface Spawned {
  pid: number;
  marker: string;
}

function makeLab(state: LabState, ownDir: boolean, accel: KvmVerdict, spawned: Spawned[]): Lab {
  const pick = (d: DeviceRecord | number): DeviceRecord => {
    const found = typeof d === 'number' ? state.devices.find((x) => x.index === d) : d;
    if (!found) throw new LabError(`no device ${String(d)} in this lab`);
    return found;
  };
  let stopping: Promise<void> | undefined;
  const lab: Lab = {
    id: state.id,
    dir: state.dir,
    serverUrl: state.serverUrl,
    guestServerUrl: state.guestServerUrl,
    accel,
    devices: state.devices,
    waitForSerial: (d, pattern, timeoutMs) => {
      const dev = pick(d);
      return waitForSerial(dev.serialLog, pattern, timeoutMs, () => isOurs(dev.qemuPid, dev.qmpSocket));
    },
    isRunning: (d) => {
      const dev = pick(d);
      return isOurs(dev.qemuPid, dev.qmpSocket);
    },
    waitForExit: (d, timeoutMs) => waitGone(pick(d).qemuPid, timeoutMs),
    qmp: (d, command, args) => qmpOnce(pick(d).qmpSocket, command, args),
    stop: (o = {}) =>
      (stopping ??= (async () => {
        await Promise.all(state.devices.map((d) => stopDevice(d)));
        // A device still starting when stop() came: not recorded yet, but spawned.
        await Promise.all(spawned.map((p) => terminate(p.pid, p.marker, 1000)));
        untrack(lab);
        removeLabFiles(state, ownDir, o.keepLogs === true);
      })()),
  };
  return lab;
}

/** The logs a user may still want after `lab down`. */
const LOGS = new Set(['serial.log', 'qemu.log', 'swtpm.log']);

/** Removes what the lab made in its dir (all of it for a temp dir; the logs stay with keepLogs). */
export function removeLabFiles(state: LabState, ownDir: boolean, keepLogs: boolean): void {
  const dir = state.dir;
  if (ownDir && !keepLogs) {
    rmSync(dir, { recursive: true, force: true });
    return;
  }
  rmSync(join(dir, 'tftp'), { recursive: true, force: true });
  rmSync(join(dir, STATE_FILE), { force: true });
  for (const d of state.devices) {
    if (!keepLogs) {
      rmSync(d.dir, { recursive: true, force: true });
      continue;
    }
    for (const f of safeList(d.dir)) if (!LOGS.has(f)) rmSync(join(d.dir, f), { recursive: true, force: true });
  }
  // The dir itself only when nothing else is in it: a given dir may hold the user's files.
  if (!keepLogs && safeList(dir).length === 0) rmdirSync(dir);
}

const safeList = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

/** Stops the lab recorded in `dir` (from another process: `bootline lab down`). */
export async function stopLabInDir(dir: string, o: { keepLogs?: boolean } = {}): Promise<LabState | null> {
  const state = readLabState(resolve(dir));
  if (!state) return null;
  await Promise.all(state.devices.map((d) => stopDevice(d)));
  removeLabFiles(state, false, o.keepLogs ?? true);
  return state;
}

/** Per device: its record and its state from QMP. */
export async function labStatus(dir: string): Promise<{ state: LabState; devices: { device: DeviceRecord; status: string; swtpm: boolean }[] } | null> {
  const state = readLabState(resolve(dir));
  if (!state) return null;
  const { deviceStatus } = await import('./device.ts');
  const devices = await Promise.all(
    state.devices.map(async (d) => ({ device: d, status: await deviceStatus(d), swtpm: d.swtpmPid !== undefined && d.tpmSocket !== undefined && isOurs(d.swtpmPid, d.tpmSocket) })),
  );
  return { state, devices };
}

// Stopping tracked labs when this process ends. 'exit' handlers cannot wait: they kill
// with SIGKILL and remove files synchronously. SIGINT/SIGTERM stop them in order first.
const tracked = new Map<Lab, { state: LabState; ownDir: boolean; keepLogs: boolean; spawned: Spawned[] }>();

function onExit(): void {
  for (const [, t] of tracked) {
    // QEMU first, so that it does not see its TPM vanish while it still runs.
    for (const p of [...t.spawned].reverse()) killNow(p.pid, p.marker);
    try {
      removeLabFiles(t.state, t.ownDir, t.keepLogs);
    } catch {
      // best effort while exiting
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  void Promise.allSettled([...tracked].map(([l, t]) => l.stop({ keepLogs: t.keepLogs }))).then(() => {
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}

function track(lab: Lab, state: LabState, ownDir: boolean, keepLogs: boolean, spawned: Spawned[]): void {
  if (tracked.size === 0) {
    process.on('exit', onExit);
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  tracked.set(lab, { state, ownDir, keepLogs, spawned });
}

function untrack(lab: Lab): void {
  if (!tracked.delete(lab) || tracked.size > 0) return;
  process.off('exit', onExit);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

