// One virtual device's lifecycle: its directory (VARS copy, sparse disk, TPM state,
// sockets, logs), swtpm, then QEMU; and the way back (QMP quit, SIGTERM, SIGKILL, then
// swtpm). A start that fails half-way stops what it had started before it throws.
import { execFile as execFileCb } from 'node:child_process';
import { closeSync, fstatSync, ftruncateSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { DeviceIdentity } from './identity.ts';
import { copyVars, type FirmwareChoice } from './ovmf.ts';
import { qemuArgs, type Accel, type QemuDeviceSpec, type TpmModel } from './qemu-args.ts';
import { qmpOnce } from './qmp.ts';
import { isAlive, isOurs, sleep, spawnLogged, tail, terminate, waitGone } from './processes.ts';
import { startSwtpm } from './swtpm.ts';
import { IPXE_VIRTIO_ROM, QEMU } from './requirements.ts';
import type { DeviceRecord } from './state.ts';

const execFile = promisify(execFileCb);

export class DeviceStartError extends Error {
  override name = 'DeviceStartError';
}

export interface DeviceOptions {
  labDir: string;
  identity: DeviceIdentity;
  accel: Accel;
  /** QemuDeviceSpec.tcgCodeBufferMiB. */
  tcgCodeBufferMiB?: number;
  memoryMiB: number;
  cpus: number;
  diskBytes: number;
  /** A raw image the disk starts as (copied sparsely, grown to diskBytes): a device that already has its OS. */
  diskImage?: string;
  firmware: FirmwareChoice;
  usb?: string[];
  tftpDir: string;
  bootfile: string;
  tpm: boolean;
  tpmModel: TpmModel;
  /** Told of every process as soon as it runs (with the path its command line names), so that an interrupted start can still be cleaned up. */
  onSpawn?: (pid: number, marker: string) => void;
}

/** Unix socket paths are limited to 107 bytes. */
const SUN_PATH_MAX = 107;

export function devicePaths(labDir: string, name: string) {
  const dir = join(labDir, name);
  return {
    dir,
    vars: join(dir, 'OVMF_VARS.fd'),
    disk: join(dir, 'disk.raw'),
    tpmState: join(dir, 'tpm'),
    tpmSocket: join(dir, 'tpm.sock'),
    swtpmLog: join(dir, 'swtpm.log'),
    qmpSocket: join(dir, 'qmp.sock'),
    serialLog: join(dir, 'serial.log'),
    qemuLog: join(dir, 'qemu.log'),
  };
}

/** Creates a sparse file of `bytes` (no blocks written), or a sparse copy of `from` grown to `bytes`. */
async function sparseDisk(path: string, bytes: number, from?: string): Promise<void> {
  if (from) await execFile('cp', ['--sparse=always', from, path]);
  const fd = openSync(path, from ? 'r+' : 'w');
  try {
    if (!from || fstatSync(fd).size < bytes) ftruncateSync(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

/** Starts swtpm and QEMU for one device; waits until QEMU answers on QMP. */
export async function startDevice(o: DeviceOptions): Promise<DeviceRecord> {
  const id = o.identity;
  const p = devicePaths(o.labDir, id.name);
  for (const s of [p.qmpSocket, p.tpmSocket])
    if (Buffer.byteLength(s) > SUN_PATH_MAX) throw new DeviceStartError(`socket path ${s} is longer than ${SUN_PATH_MAX} bytes: choose a shorter lab directory`);
  rmSync(p.dir, { recursive: true, force: true });
  mkdirSync(p.dir, { recursive: true });
  copyVars(o.firmware, p.vars);
  await sparseDisk(p.disk, o.diskBytes, o.diskImage);
  let swtpmPid: number | undefined;
  let qemuPid: number | undefined;
  try {
    if (o.tpm) {
      swtpmPid = await startSwtpm({ stateDir: p.tpmState, socket: p.tpmSocket, log: p.swtpmLog });
      o.onSpawn?.(swtpmPid, p.tpmSocket);
    }
    const spec: QemuDeviceSpec = {
      name: `bootline-lab-${id.name}`,
      accel: o.accel,
      tcgCodeBufferMiB: o.tcgCodeBufferMiB,
      memoryMiB: o.memoryMiB,
      cpus: o.cpus,
      firmware: { code: o.firmware.code, vars: p.vars, secureBoot: o.firmware.secureBoot },
      disk: p.disk,
      ...(o.usb && o.usb.length > 0 ? { usb: o.usb } : {}),
      net: { mac: id.mac, tftpDir: o.tftpDir, bootfile: o.bootfile, romfile: IPXE_VIRTIO_ROM },
      ...(o.tpm ? { tpm: { socket: p.tpmSocket, model: o.tpmModel } } : {}),
      smbios: { serial: id.serial, uuid: id.uuid, manufacturer: 'bootline', product: 'lab-device' },
      serialLog: p.serialLog,
      qmpSocket: p.qmpSocket,
    };
    qemuPid = await spawnLogged(QEMU, qemuArgs(spec), p.qemuLog);
    o.onSpawn?.(qemuPid, p.qmpSocket);
    await waitForQmp(qemuPid, p.qmpSocket, p.qemuLog);
  } catch (e) {
    if (qemuPid !== undefined) await terminate(qemuPid, p.qmpSocket, 1000);
    if (swtpmPid !== undefined) await terminate(swtpmPid, p.tpmSocket, 1000);
    throw e instanceof DeviceStartError ? e : new DeviceStartError(`device ${id.name}: ${(e as Error).message}`);
  }
  return {
    index: id.index,
    name: id.name,
    mac: id.mac,
    serial: id.serial,
    uuid: id.uuid,
    dir: p.dir,
    qemuPid,
    ...(swtpmPid !== undefined ? { swtpmPid, tpmSocket: p.tpmSocket } : {}),
    qmpSocket: p.qmpSocket,
    serialLog: p.serialLog,
    qemuLog: p.qemuLog,
    disk: p.disk,
    startedAt: new Date().toISOString(),
  };
}

/** QEMU is up when QMP answers query-status; if it exits first, its log says why. */
async function waitForQmp(pid: number, socket: string, log: string, timeoutMs = 15000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (!isAlive(pid)) throw new DeviceStartError(`QEMU exited at start (log ${log}):\n${tail(log)}`);
    try {
      await qmpOnce(socket, 'query-status', undefined, 2000);
      return;
    } catch (e) {
      if (Date.now() > until) throw new DeviceStartError(`QEMU did not answer on ${socket} within ${timeoutMs} ms: ${(e as Error).message}`);
    }
    await sleep(100);
  }
}

/** The guest's run state from QMP ("running", "shutdown"...), or "exited" when QEMU is gone. */
export async function deviceStatus(d: DeviceRecord): Promise<string> {
  if (!isOurs(d.qemuPid, d.qmpSocket)) return 'exited';
  try {
    const s = await qmpOnce<{ status: string }>(d.qmpSocket, 'query-status', undefined, 2000);
    return s.status;
  } catch (e) {
    return `not answering (${(e as Error).message})`;
  }
}

/** Stops QEMU (QMP quit, then SIGTERM, then SIGKILL), then swtpm; removes the sockets. */
export async function stopDevice(d: DeviceRecord): Promise<void> {
  if (isOurs(d.qemuPid, d.qmpSocket)) {
    try {
      await qmpOnce(d.qmpSocket, 'quit', undefined, 2000);
    } catch {
      // not answering: the signals below
    }
    if (!(await waitGone(d.qemuPid, 3000))) await terminate(d.qemuPid, d.qmpSocket);
  }
  if (d.swtpmPid !== undefined && d.tpmSocket) {
    // --terminate ends swtpm when QEMU disconnects; give it a moment first.
    if (!(await waitGone(d.swtpmPid, 1000))) await terminate(d.swtpmPid, d.tpmSocket, 1000);
  }
  for (const s of [d.qmpSocket, d.tpmSocket]) if (s) rmSync(s, { force: true });
}
