// When the agent runs in bootline's installer, the installer describes itself in
// /etc/bootline/installer.json (written by `bootline lab build-installer`): the run-start
// event carries it with the boot time, so that the server sees what each device booted
// and how long that took.
import { readFile } from 'node:fs/promises';
import type { InstallerInfo } from '../events.ts';

export const INSTALLER_INFO = '/etc/bootline/installer.json';

/** The installer's description, or undefined outside the installer (or if the file is unreadable). */
export async function readInstallerInfo(
  bootSeconds: number | undefined,
  path = process.env.BOOTLINE_INSTALLER_INFO ?? INSTALLER_INFO,
): Promise<InstallerInfo | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
  const o = raw as Partial<Record<keyof InstallerInfo, unknown>>;
  if (typeof o.version !== 'string' || typeof o.kernel !== 'string' || !Number.isInteger(o.initramfsBytes)) return undefined;
  return { version: o.version, kernel: o.kernel, initramfsBytes: o.initramfsBytes as number, ...(bootSeconds === undefined ? {} : { bootSeconds }) };
}
