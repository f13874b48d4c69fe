// The collect-inventory built-in: takes stock of the device (DMI, CPUs, memory, disks,
// NICs, PCI/USB, TPM and its endorsement key, Secure Boot, firmware, the plan's extra
// commands) into one JSON document (src/inventory/schema.ts), sends it to the line's
// server, and, for the USB case, writes it onto the install medium where Isar's
// device-info-collector writes. What cannot be read is listed in the document's `errors`;
// only failing to deliver the document fails the task.
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Type } from '@sinclair/typebox';
import type { BuiltinTask, TaskContext } from '../builtin.ts';
import { TaskError } from '../builtin.ts';
import { collectInventory } from '../../../inventory/collect.ts';
import { writeDeviceInfos } from '../../../inventory/device-infos.ts';
import { toolRunner } from '../../../inventory/tools.ts';
import { sysfsRoot } from '../../device-identity.ts';
import { summarize } from '../../../inventory/summary.ts';
import type { InventoryDocument } from '../../../inventory/schema.ts';

export const CollectInventoryOptions = Type.Object(
  {
    commands: Type.Optional(
      Type.Array(
        Type.Object(
          {
            name: Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$', description: 'a name for the output (also its file name, <name>.out, on the install medium)' }),
            command: Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String(), { minItems: 1 })], {
              description: 'argv, or one string run with /bin/sh -c',
            }),
            timeout: Type.Optional(Type.Integer({ minimum: 1, description: 'seconds (default 60)' })),
          },
          { additionalProperties: false },
        ),
        { default: [], description: 'extra commands whose output goes into the document (lshw, lspci -vv, a vendor tool...)' },
      ),
    ),
    post: Type.Optional(Type.Boolean({ default: true, description: "send the document to the line's server (when the agent has one)" })),
    installMedium: Type.Optional(
      Type.String({ minLength: 1, description: "the install medium's mount point (Isar: /install): write <installMedium>/device-infos/<serial>/<date>/inventory.json and friends" }),
    ),
    output: Type.Optional(Type.String({ minLength: 1, description: 'also write the document to this file' })),
    endorsementKey: Type.Optional(Type.Boolean({ default: true, description: "read the TPM's endorsement key (public part) and EK certificate" })),
    tpmTcti: Type.Optional(Type.String({ minLength: 1, description: 'tpm2-tools TCTI (default device:/dev/tpmrm0)' })),
    sysfs: Type.Optional(Type.String({ minLength: 1, description: 'where sysfs is mounted (default $BOOTLINE_SYSFS_ROOT, else /sys)' })),
    proc: Type.Optional(Type.String({ minLength: 1, default: '/proc', description: 'where procfs is mounted' })),
    dev: Type.Optional(Type.String({ minLength: 1, default: '/dev', description: 'where the device nodes are' })),
  },
  { additionalProperties: false },
);

type Options = (typeof CollectInventoryOptions)['static'];

async function writeWhole(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

async function run(ctx: TaskContext<Options>): Promise<void> {
  const o = ctx.options;
  ctx.progress({ taskProgress: 0, message: 'taking stock' });
  const tools = toolRunner({ signal: ctx.signal });
  const doc: InventoryDocument = await collectInventory({
    sysfs: o.sysfs ?? sysfsRoot(),
    ...(o.proc ? { proc: o.proc } : {}),
    ...(o.dev ? { dev: o.dev } : {}),
    ...(o.tpmTcti ? { tpmTcti: o.tpmTcti } : {}),
    endorsementKey: o.endorsementKey !== false,
    commands: o.commands ?? [],
    ...(ctx.agentVersion ? { agentVersion: ctx.agentVersion } : {}),
    signal: ctx.signal,
    tools,
  });
  ctx.progress({ taskProgress: 60, message: 'collected' });
  for (const line of summarize(doc)) ctx.log('info', line);
  for (const e of doc.errors) ctx.log('warn', `inventory: ${e.field}: ${e.message}`);

  const delivered: string[] = [];
  if (o.output) {
    await writeWhole(o.output, `${JSON.stringify(doc, null, 2)}\n`);
    ctx.setOutput('inventory', o.output);
    delivered.push(o.output);
  }
  if (o.installMedium) {
    let dir: string;
    try {
      dir = await writeDeviceInfos(doc, { medium: o.installMedium, ...(o.proc ? { proc: o.proc } : {}), tools });
    } catch (e) {
      throw new TaskError(`could not write the inventory onto the install medium ${o.installMedium}: ${(e as Error).message} — is it mounted writable?`);
    }
    ctx.log('info', `inventory written to ${dir}`);
    delivered.push(dir);
  }
  if (o.post !== false && ctx.server) {
    try {
      await ctx.server.putInventory(doc as unknown as Record<string, unknown>);
    } catch (e) {
      throw new TaskError(`could not send the inventory to ${ctx.server.shown}: ${(e as Error).message}`);
    }
    ctx.log('info', `inventory sent to ${ctx.server.shown}`);
    delivered.push(ctx.server.shown);
  }
  if (delivered.length === 0) {
    ctx.log('warn', 'the inventory went nowhere: the agent has no server, and neither installMedium nor output is set');
  }
  ctx.progress({ taskProgress: 100 });
}

export const collectInventoryTask: BuiltinTask<typeof CollectInventoryOptions> = {
  name: 'collect-inventory',
  description: "take stock of the device's hardware, TPM and firmware and send it to the server",
  destructive: false,
  optionsSchema: CollectInventoryOptions,
  run,
};
