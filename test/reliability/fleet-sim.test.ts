// `bootline lab sim`: real agents (processes) against a real line server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
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
    assert.ok(!existsSync(join(work, 'devices', `dev${Number(d.serial.slice(4))}`, 'disk.img')), 'a disk that held the image is removed once checked');
  }
  assert.ok(r.serverPeakMiB && r.serverPeakMiB > 10, 'the server peak memory is measured');
  assert.ok(r.machineMiB.peak >= r.machineMiB.before && r.machineMiB.before > 0, `machine memory ${JSON.stringify(r.machineMiB)}`);
  // Every event the server stored is counted once: a run of deploy-image and a script makes more than 5.
  assert.ok(r.latency, 'event latency is measured');
  assert.equal(r.latency.count, r.serverEvents[0], 'the latencies cover every event the server stored');
  assert.ok(r.latency.count > 5 * 5, `${r.latency.count} events`);
  assert.ok(r.latency.p50Ms >= 0 && r.latency.p50Ms <= r.latency.p99Ms && r.latency.p99Ms <= r.latency.maxMs, JSON.stringify(r.latency));
  assert.ok(r.serverBatchTimes && r.serverBatchTimes.count > 5 && r.serverBatchTimes.p50Ms <= r.serverBatchTimes.p99Ms, `server batch times ${JSON.stringify(r.serverBatchTimes)}`);
  const text = lines.join('\n');
  assert.match(text, /5 of 5 devices provisioned in [\d.]+ s; server peak RSS \d+ MiB/);
  assert.match(text, /machine's used memory \(MemTotal - MemAvailable\): [\d.]+ GiB before the agents started, peak [\d.]+ GiB/);
  assert.match(text, new RegExp(`event latency, from the agent making an event to the server taking its batch: p50 \\d+ ms, p99 \\d+ ms, max \\d+ ms, over ${r.latency.count} events`));
  assert.match(text, /the server's answer to an event batch, from its arrival to the answer after the commit: p50 \d+ ms, p99 \d+ ms, over \d+ batches/);
});

test('two server processes on one PostgreSQL share a fleet: each stores the events of its half of the devices', async () => {
  const work = join(tempDir('bootline-fleet-pg-'), 'sim');
  const lines: string[] = [];
  const r = await runFleet({ cli: BUNDLE, devices: 4, work, imageMiB: 4, db: 'auto-postgres', servers: 2, log: (l) => lines.push(l) });
  assert.ok(r.ok, lines.join('\n'));
  assert.equal(r.serverPeaksMiB.length, 2, 'both servers measured');
  assert.equal(r.serverEvents.length, 2);
  for (const n of r.serverEvents) assert.ok(n > 5, `each server stored its devices' events: ${r.serverEvents.join(' + ')}`);
  assert.equal(r.serverEvents[0]! + r.serverEvents[1]!, r.latency?.count, 'what both stored is what the database holds');
  const servers = [1, 2, 3, 4].map((i) => /bootline\.server=(\S+)/.exec(readFileSync(join(work, 'devices', `dev${i}`, 'cmdline'), 'utf8'))?.[1]);
  assert.equal(new Set(servers).size, 2, 'the devices were split between the two servers');
  assert.match(lines.join('\n'), /provisioned in [\d.]+ s; server peak RSS \d+ \+ \d+ MiB/);
  assert.match(lines.join('\n'), new RegExp(`over ${r.latency?.count} events \\(stored by the servers: ${r.serverEvents[0]} \\+ ${r.serverEvents[1]}\\)`));
});

test('lab sim refuses a bad device count, image size, server count or agent option before starting anything', () => {
  for (const [args, msg] of [
    [['--devices', '0'], /--devices must be a whole number from 1 to 2000, not 0/],
    [['--devices', 'many'], /--devices must be/],
    [['--image-mib', '1'], /--image-mib must be/],
    [['--servers', '2'], /--servers 2 needs PostgreSQL \(--db postgres:\/\/… or --db auto-postgres\)/],
    [['--servers', '0', '--db', 'auto-postgres'], /--servers must be a whole number from 1 to 8, not 0/],
    [['--agent-node-options', 'max-semi-space-size=1'], /--agent-node-options takes node options \(each starting with -\), not max-semi-space-size=1/],
  ] as const) {
    const r = spawnSync(process.execPath, [BUNDLE, 'lab', 'sim', '--work', join(tempDir('bootline-fleet-bad-'), 'w'), ...args], { encoding: 'utf8' });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, msg);
  }
});
