// End to end, as on a line (root, QEMU under TCG; a few minutes): UEFI firmware -> iPXE ->
// the line server -> the installer -> the agent -> the image on the virtual disk -> reboot ->
// the target boots. Asserted on the server's records and on the disk's bytes, not on logs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { runDemo, type DemoResult } from '../../src/lab/demo.ts';
import { startCuttingProxy, type CuttingProxy } from './cutting-proxy.ts';
import type { InventoryDocument } from '../../src/inventory/schema.ts';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
const MiB = 1024 * 1024;

interface RunRecord {
  id: string;
  status: string;
  plan: string | null;
}
interface EventRecord {
  seq: number;
  type: string;
  body: { task?: string; status?: string; bytesDone?: number; installer?: { initramfsBytes: number; bootSeconds: number } };
}

describe('end to end over the network (QEMU, TCG)', { timeout: 15 * 60_000 }, () => {
  // One run covers both paths of the issue (the PXE path, and a network that drops during
  // the download): each costs minutes under TCG.
  it('a device network-boots the installer, is bootstrapped by the server through a network that cuts its download three times, and boots the image it was given', async () => {
    const t0 = Date.now();
    let checked = false;
    let proxy: CuttingProxy | undefined;
    const result: DemoResult = await runDemo({
      cli: CLI,
      work: tempDir('bootline-e2e-pxe-'),
      devices: 1,
      timeoutSeconds: 600,
      // A third of the demo's root files: the path is the same, with a minute less of TCG deploying.
      sampleRootFilesBytes: 32 * MiB,
      log: (l) => process.stderr.write(`e2e: ${l}\n`),
      // iPXE's own downloads are left alone (it cannot resume); the image's are cut.
      devicesReach: async (url) => {
        proxy = await startCuttingProxy(Number(new URL(url).port), { match: /^\/images\//, afterBytes: [5 * MiB, 9 * MiB, 2 * MiB] });
        return proxy.url;
      },
      inspect: async ({ server, outcomes, sample }) => {
        const [d] = outcomes;
        const devices = (await server.api('GET', '/api/v1/devices')).json as { id: string; serial: string; uuid: string; state: string; macs: string[]; batch: string }[];
        assert.equal(devices.length, 1);
        const dev = devices[0]!;
        assert.equal(dev.serial, d!.serial);
        assert.deepEqual(dev.macs, [d!.mac]);
        assert.equal(dev.state, 'succeeded');
        assert.equal(dev.batch, 'network-boot', 'enrolled with the boot token iPXE was given');
        const runs = (await server.api('GET', `/api/v1/devices/${dev.id}/runs`)).json as RunRecord[];
        assert.equal(runs.length, 1);
        assert.equal(runs[0]!.status, 'ok');
        assert.equal(runs[0]!.plan, 'demo-line');
        const events = (await server.api('GET', `/api/v1/runs/${runs[0]!.id}/events?limit=10000`)).json as EventRecord[];
        // Every event once, in order, from run-start to run-end.
        assert.deepEqual(
          events.map((e) => e.seq),
          events.map((_, i) => i),
        );
        assert.equal(events[0]!.type, 'run-start');
        assert.equal(events.at(-1)!.type, 'run-end');
        const ends = events.filter((e) => e.type === 'task-end').map((e) => [e.body.task, e.body.status]);
        assert.deepEqual(ends, [
          ['check-hardware', 'ok'],
          ['deploy-image', 'ok'],
          ['inventory', 'ok'],
          ['customer-script', 'ok'],
        ]);
        // The installer reported its size and boot time in the first event.
        const info = events[0]!.body.installer;
        assert.ok(info && info.initramfsBytes > 10 * MiB && info.bootSeconds > 0, JSON.stringify(info));
        // collect-inventory: the device as QEMU, OVMF and swtpm made it, on its server record.
        const inv = (await server.api('GET', `/api/v1/devices/${dev.id}/inventory`)).json as InventoryDocument;
        process.stderr.write(`e2e: inventory ${JSON.stringify({ ...inv, pci: inv.pci.length, tpm: { ...inv.tpm, endorsementKey: inv.tpm.endorsementKey?.sha256 } })}\n`);
        assert.equal(inv.serial, d!.serial);
        assert.deepEqual([inv.system.serial, inv.board.serial, inv.chassis.serial], [d!.serial, d!.serial, d!.serial], 'distinct SMBIOS serials of the lab device');
        assert.equal(inv.system.uuid, dev.uuid);
        assert.deepEqual(inv.nics.map((n) => [n.mac, n.state]), [[d!.mac, 'up']]);
        assert.ok(inv.disks.some((k) => k.name === 'vda' && k.sizeBytes > 0 && k.transport === 'virtio'), JSON.stringify(inv.disks));
        assert.equal(inv.firmware.mode, 'uefi');
        assert.deepEqual(inv.secureBoot, { supported: true, enabled: false, setupMode: true }, 'OVMF with empty keys: Setup Mode');
        assert.equal(inv.tpm.present, true);
        assert.equal(inv.tpm.version, '2.0');
        assert.equal(inv.tpm.manufacturer, 'IBM');
        assert.match(inv.tpm.endorsementKey?.publicKeyPem ?? '', /^-----BEGIN PUBLIC KEY-----/);
        assert.ok((inv.memory.modules ?? []).length > 0, 'dmidecode read the memory devices');
        assert.deepEqual(inv.errors, []);
        // deploy-image wrote what the bmap maps.
        assert.equal(d!.bytesWritten, sample.mappedBytes);
        checked = true;
      },
    }).finally(() => proxy?.close());
    process.stderr.write(`e2e: PXE path with 3 cuts took ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    assert.ok(checked, 'the server records were inspected');
    assert.equal(proxy!.cuts.length, 3, 'the image download was cut three times');
    const [d] = result.devices;
    assert.equal(d!.state, 'succeeded', d!.message);
    assert.ok(d!.targetBooted, 'the target printed its marker with this device serial');
    assert.ok(d!.diskVerified, 'every mapped range of the disk matches the image');
    assert.ok(result.ok);
  });
});
