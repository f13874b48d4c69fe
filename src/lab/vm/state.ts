// The lab's state file (<dir>/lab.json): what `bootline lab down` and `lab status` need
// to find and stop what `lab up` started, from another process.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Accel } from './qemu-args.ts';

export const STATE_FILE = 'lab.json';

export interface DeviceRecord {
  index: number;
  name: string;
  mac: string;
  serial: string;
  uuid: string;
  dir: string;
  qemuPid: number;
  swtpmPid?: number;
  qmpSocket: string;
  tpmSocket?: string;
  serialLog: string;
  qemuLog: string;
  disk: string;
  startedAt: string;
}

export interface LabState {
  version: 1;
  id: string;
  dir: string;
  serverUrl: string;
  guestServerUrl: string;
  accel: Accel;
  accelReason: string;
  createdAt: string;
  devices: DeviceRecord[];
}

export class LabStateError extends Error {
  override name = 'LabStateError';
}

export function writeLabState(state: LabState): void {
  const file = join(state.dir, STATE_FILE);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

/** The state in `dir`, or null when there is no lab there. */
export function readLabState(dir: string): LabState | null {
  let text: string;
  try {
    text = readFileSync(join(dir, STATE_FILE), 'utf8');
  } catch {
    return null;
  }
  let s: LabState;
  try {
    s = JSON.parse(text) as LabState;
  } catch {
    throw new LabStateError(`${join(dir, STATE_FILE)} is not valid JSON: remove it if no lab is running there`);
  }
  if (s.version !== 1 || !Array.isArray(s.devices)) throw new LabStateError(`${join(dir, STATE_FILE)} is not a bootline lab state file`);
  return s;
}
