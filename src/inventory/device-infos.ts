// The USB case: the inventory written onto the install medium where Isar's
// device-info-collector writes (<medium>/device-infos/<serial>/<date>/), so that a stick
// coming back to the office carries every device it bootstrapped. Beside inventory.json go
// the files that collector leaves: proc_cpuinfo, dmidecode.dump (when dmidecode can read
// the tables), and one <name>.out per extra command.
import { copyFile, mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { InventoryDocument } from './schema.ts';
import { isarDateDir, isarSerialDir } from './parse.ts';
import type { ToolRunner } from './tools.ts';

export interface DeviceInfosOptions {
  /** The install medium's mount point (Isar: /install). */
  medium: string;
  proc?: string;
  tools?: ToolRunner;
}

/** Where this document goes: <medium>/device-infos/<serial>/<date>. A device without a serial is filed under "unknown-<first MAC>". */
export function deviceInfosDir(medium: string, doc: InventoryDocument): string {
  const mac = doc.nics.find((n) => n.mac)?.mac?.replace(/:/g, '');
  const who = doc.serial ? isarSerialDir(doc.serial) : `unknown-${mac ?? 'device'}`;
  return join(medium, 'device-infos', who.replace(/[/\\]/g, '_'), isarDateDir(new Date(doc.collectedAt)));
}

/** Writes the files; returns the directory. Each file is written whole (temp + rename). */
export async function writeDeviceInfos(doc: InventoryDocument, o: DeviceInfosOptions): Promise<string> {
  const dir = deviceInfosDir(o.medium, doc);
  await mkdir(dir, { recursive: true });
  const put = async (name: string, data: string) => {
    await writeFile(join(dir, `.${name}.tmp`), data);
    await rename(join(dir, `.${name}.tmp`), join(dir, name));
  };
  await put('inventory.json', `${JSON.stringify(doc, null, 2)}\n`);
  for (const c of doc.commands) await put(`${c.name.replace(/[^A-Za-z0-9._-]/g, '_')}.out`, c.stdout);
  try {
    await copyFile(join(o.proc ?? '/proc', 'cpuinfo'), join(dir, 'proc_cpuinfo'));
  } catch {
    // already reported under cpus
  }
  if (o.tools) await o.tools.run('dmidecode', ['--dump-bin', join(dir, 'dmidecode.dump')]);
  return dir;
}
