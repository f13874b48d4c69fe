// Power-loss trials (a real agent's power cut at seeded moments, restarted on its journal) and
// server crash trials (the line server killed during a fleet run): short versions of
// `npm run soak`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { cutMoments, runPowerLoss, trialSeed } from '../../src/lab/power-loss.ts';
import { runServerCrash } from '../../src/lab/server-crash.ts';
import { powerCut } from '../../src/lab/power-cut.ts';
import { isRunning, tempDir } from '../helpers.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');

test('a power cut kills the agent and every process it started, scripts in their own process group included', async () => {
  // A parent that starts a detached child (its own group, as the agent runs scripts), which starts a grandchild.
  const parent = spawn(process.execPath, ['-e', `
    const { spawn } = require('node:child_process');
    const c = spawn('/bin/sh', ['-c', 'sleep 60 & echo $! ; wait'], { detached: true, stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.on('data', (d) => console.log(c.pid + ' ' + String(d).trim()));
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'ignore'] });
  const line = await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(String(d).trim())));
  const [child, grandchild] = line.split(' ').map(Number) as [number, number];
  assert.ok(isRunning(child) && isRunning(grandchild));
  const killed = await powerCut(parent);
  assert.ok(killed >= 3, `killed ${killed} processes`);
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!isRunning(child), 'the detached child died with the agent');
  assert.ok(!isRunning(grandchild), 'the grandchild died with the agent');
});

test('a power cut also kills a process of the device that its parent left behind (found by the environment it inherited)', async () => {
  const marker = `BOOTLINE_TEST_DEVICE=${process.pid}-${Date.now()}`;
  const [key, value] = marker.split('=') as [string, string];
  // The shell starts sleep in the background and exits: sleep is nobody's child of the agent any more.
  const parent = spawn(process.execPath, ['-e', `
    const { execFileSync } = require('node:child_process');
    console.log(execFileSync('/bin/sh', ['-c', 'sleep 60 >/dev/null 2>&1 & echo $!'], { encoding: 'utf8' }).trim());
    setInterval(() => {}, 1000);
  `], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, [key]: value } });
  const orphan = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (d: Buffer) => resolve(String(d).trim()))));
  assert.ok(isRunning(orphan));
  await powerCut(parent, marker);
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(!isRunning(orphan), 'the orphan died with the device');
});

test('cut moments are reproducible from the seed and fall inside the clean run', () => {
  const a = cutMoments(trialSeed(7, 3), 4000, 0.5);
  assert.deepEqual(a, cutMoments(trialSeed(7, 3), 4000, 0.5));
  assert.notDeepEqual([trialSeed(7, 1), trialSeed(7, 2)], [trialSeed(8, 1), trialSeed(8, 2)]);
  const all = Array.from({ length: 200 }, (_, i) => cutMoments(trialSeed(1, i), 4000, 0.3));
  for (const m of all.flat()) assert.ok(m > 0 && m < 4000, `${m}`);
  const twice = all.filter((m) => m.length === 2).length;
  assert.ok(twice > 30 && twice < 90, `${twice} of 200 trials cut twice`);
});

test('after 8 power cuts at random moments (seed 20261201) every device ends identical to a clean run: same disk, no finished task run again, the server shows the same tasks', async () => {
  const work = join(tempDir('bootline-powerloss-'), 'w');
  const lines: string[] = [];
  const r = await runPowerLoss({ cli: BUNDLE, trials: 8, seed: 20261201, work, imageMiB: 4, log: (l) => lines.push(l) });
  const out = lines.join('\n');
  assert.ok(r.ok, out);
  assert.equal(r.trials.length, 8);
  // The cuts hit the pipeline, not only the time after it (then the test would prove nothing).
  const hits = r.trials.flatMap((t) => t.cuts).filter((c) => !c.missed);
  assert.ok(hits.length >= 6, `only ${hits.length} cuts hit a running agent:\n${out}`);
  assert.ok(r.trials.some((t) => t.cuts.some((c) => !c.missed && c.journalOk.length > 0)), `no cut came after a finished task:\n${out}`);
  assert.match(lines.at(-1) ?? '', /trials identical to the clean run.*, 0 differ \(seed 20261201/);
  process.stdout.write(`${out}\n`);
});

test('the server killed twice during a fleet run of 10 devices loses no event and stores each once; every run ends as the agent ended it', async () => {
  const work = join(tempDir('bootline-servercrash-'), 'w');
  const lines: string[] = [];
  const r = await runServerCrash({ cli: BUNDLE, devices: 10, kills: 2, seed: 5, work, imageMiB: 4, upSeconds: [1.5, 3], downSeconds: [0.5, 2], log: (l) => lines.push(l) });
  const out = lines.join('\n');
  assert.ok(r.ok, out);
  assert.equal(r.kills.length, 2);
  assert.equal(r.eventsLost, 0);
  assert.equal(r.eventsDuplicated, 0);
  assert.equal(r.eventsStored, r.eventsSent);
  assert.ok(r.runs >= 10 && r.eventsSent > 10 * 10, out);
  assert.ok(r.serverPeakMiB && r.serverPeakMiB > 10, 'the server peak memory is measured');
  process.stdout.write(`${out}\n`);
});

test('lab power-loss and lab server-crash refuse bad numbers before starting anything', () => {
  for (const [args, msg] of [
    [['power-loss', '--trials', '0'], /--trials must be a whole number from 1 to 10000, not 0/],
    [['power-loss', '--seed', '-3'], /--seed must be a whole number/],
    [['server-crash', '--kills', 'lots'], /--kills must be a whole number from 0 to 100, not lots/],
    [['server-crash', '--devices', '1.5'], /--devices must be a whole number/],
  ] as const) {
    const work = join(tempDir('bootline-pl-bad-'), 'w');
    const r = spawnSync(process.execPath, [BUNDLE, 'lab', ...args, '--work', work], { encoding: 'utf8' });
    assert.notEqual(r.status, 0, args.join(' '));
    assert.match(r.stderr, msg);
    assert.equal(spawnSync('test', ['-e', work]).status, 1, 'nothing was created');
  }
});
