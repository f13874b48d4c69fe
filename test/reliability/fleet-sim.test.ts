// `bootline lab sim`: real agents (processes) against a real line server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runFleet } from '../../src/lab/fleet-sim.ts';
import { tempDir } from '../helpers.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');

test('a fleet of 5 agents enrolls, deploys the image onto each disk file and the server records every run as succeeded', async () => {
  const work = join(tempDir('bootline-fleet-'), 'sim');
  const lines: string[] = [];
  const r = await runFleet({ cli: BUNDLE, devices: 5, work, imageMiB: 8, log: (l) => lines.push(l) });
  assert.ok(r.ok, lines.join('\n'));
  assert.equal(r.devices.length, 5);
  assert.deepEqual(new Set(r.devices.map((d) => d.serial)).size, 5, 'each device has its own serial');
  for (const d of r.devices) {
    assert.equal(d.exitCode, 0, `${d.serial}: ${readFileSync(join(work, 'devices', `dev${Number(d.serial.slice(4))}`, 'agent.log'), 'utf8').slice(-2000)}`);
    assert.ok(d.diskOk, `${d.serial}: the disk differs from the image`);
    assert.equal(d.serverState, 'succeeded');
  }
  assert.ok(r.serverPeakMiB && r.serverPeakMiB > 10, 'the server peak memory is measured');
  assert.match(lines.at(-1) ?? '', /5 of 5 devices provisioned in [\d.]+ s; server peak RSS \d+ MiB/);
});

test('lab sim refuses a bad device count or image size before starting anything', () => {
  for (const [args, msg] of [
    [['--devices', '0'], /--devices must be a whole number from 1 to 2000, not 0/],
    [['--devices', 'many'], /--devices must be/],
    [['--image-mib', '1'], /--image-mib must be/],
  ] as const) {
    const r = spawnSync(process.execPath, [BUNDLE, 'lab', 'sim', '--work', join(tempDir('bootline-fleet-bad-'), 'w'), ...args], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, msg);
  }
});
