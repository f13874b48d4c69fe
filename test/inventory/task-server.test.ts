// The collect-inventory task in `bootline run` (the bundle, a real process) against the real
// server: the document reaches the device record, an admin reads it back, and the USB copy
// lands on the "install medium". The recorded PC sysfs is the device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { lineServer, RECORDED_SERIAL, runAgentOn } from '../agent/server-harness.ts';
import type { InventoryDocument } from '../../src/inventory/schema.ts';

const VM_PROC = join(import.meta.dirname, '..', 'fixtures', 'sysfs-vm', 'proc');

test("a plan's collect-inventory task: the server stores the document on the device, an admin reads it back, and the install medium gets its copy", async () => {
  const dir = tempDir();
  const line = await lineServer();
  const { token } = await line.token({ label: 'line-3' });
  const medium = join(dir, 'install');
  await line.defaultPlan({
    unattended: true,
    reporters: [{ type: 'console', mode: 'plain' }],
    tasks: [
      {
        name: 'inventory',
        builtin: 'collect-inventory',
        with: { proc: VM_PROC, installMedium: medium, endorsementKey: false, commands: [{ name: 'os', command: ['uname', '-s'] }] },
      },
    ],
  });
  const r = await runAgentOn(dir, `bootline.server=${line.url} bootline.token=${token}`, join(dir, 'state'));
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout + r.stderr, /serial PF3XK2A9/, 'the console summary');
  assert.match(r.stdout + r.stderr, /inventory sent to http:\/\/127\.0\.0\.1:\d+/);

  const devices = await line.admin<{ id: string }[]>('GET', '/devices');
  const id = devices.body[0]!.id;
  const inv = await line.admin<InventoryDocument>('GET', `/devices/${id}/inventory`);
  assert.equal(inv.status, 200, JSON.stringify(inv.body));
  assert.equal(inv.body.format, 'bootline-inventory/1');
  assert.equal(inv.body.serial, RECORDED_SERIAL);
  assert.equal(inv.body.cpus.model, 'AMD EPYC');
  assert.equal(inv.body.agentVersion, JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')).version);
  assert.deepEqual(inv.body.commands.map((c) => [c.name, c.stdout]), [['os', 'Linux\n']]);
  // The device record carries it too (the dashboard's source).
  const dev = await line.admin<{ inventory: InventoryDocument }>('GET', `/devices/${id}`);
  assert.deepEqual(dev.body.inventory, inv.body);

  const serialDir = join(medium, 'device-infos', 'pf3xk2a9');
  const [when] = readdirSync(serialDir);
  assert.match(when!, /^\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$/);
  assert.deepEqual(JSON.parse(readFileSync(join(serialDir, when!, 'inventory.json'), 'utf8')), inv.body);
});
