// The whole job, end to end: a device whose kernel command line has only
// bootline.server= and bootline.token= enrolls, fetches its plan, copies an image the
// server serves onto its disk (a loop device), and the server shows the run as
// succeeded with every event.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { onPath } from '../../src/which.ts';
import { assertNoLoopLeft, readDevice, tempDir, withLoop } from '../helpers.ts';
import { assertContiguous, eventsFile, lineServer, RECORDED_SERIAL, runAgentOn, runEvents, type LineServer } from './server-harness.ts';

const SIZE = 64 * 1024 * 1024;

function mkfsSkip(): string | false {
  return onPath('mke2fs') ? false : 'needs mke2fs (e2fsprogs)';
}

function loopSkip(): string | false {
  if (process.getuid?.() !== 0) return 'needs root to attach loop devices';
  if (!onPath('losetup')) return 'needs losetup';
  return mkfsSkip();
}

/** A 64 MiB sparse raw disk image holding an ext4 file system with some files. */
function makeImage(dir: string): string {
  const content = join(dir, 'rootfs');
  mkdirSync(join(content, 'etc'), { recursive: true });
  writeFileSync(join(content, 'etc', 'hostname'), 'line-a-device\n');
  writeFileSync(join(content, 'etc', 'os-release'), 'NAME="bootline test image"\n');
  writeFileSync(join(content, 'payload.bin'), randomBytes(3 * 1024 * 1024 + 123));
  const image = join(dir, 'disk.img');
  writeFileSync(image, '');
  execFileSync('truncate', ['-s', String(SIZE), image]);
  execFileSync('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'rootfs', '-d', content, image, '64M'], { stdio: 'pipe' });
  assert.equal(statSync(image).size, SIZE);
  assert.ok(statSync(image).blocks * 512 < SIZE / 2, 'the image is sparse');
  return image;
}

interface DeviceRow {
  id: string;
  serial: string | null;
  state: string;
  progress: number;
}
interface RunRow {
  id: string;
  status: string;
  progress: number;
  report: { status?: string; tasks?: { name: string; status: string }[] } | null;
}

/** Starts a server with `image` registered as `line-a`, a token, and a default plan deploying it with `withOptions`. */
async function lineWithImage(image: string, deploy: Record<string, unknown>): Promise<{ line: LineServer; token: string }> {
  const line = await lineServer(async ({ data, db }) => {
    const { imageAdd } = await import('../../src/server/main.ts');
    const shown = await imageAdd(image, { data, db, name: 'line-a' });
    assert.match(shown, /\/images\/line-a\/disk\.img/);
  });
  const { token } = await line.token();
  await line.defaultPlan({
    unattended: true,
    reporters: [{ type: 'console', mode: 'plain' }],
    tasks: [{ name: 'deploy-image', builtin: 'deploy-image', with: { image: 'image:line-a', ...deploy } }],
  });
  return { line, token };
}

/** The device the run made, its one run and that run's events, checked against the agent's own --events file. */
async function checkServerSawEverything(line: LineServer, eventsPath: string): Promise<void> {
  const devices = (await line.admin<DeviceRow[]>('GET', '/devices')).body;
  assert.equal(devices.length, 1);
  const device = devices[0]!;
  assert.equal(device.serial, RECORDED_SERIAL);
  assert.equal(device.state, 'succeeded');
  assert.equal(device.progress, 100);
  const runs = (await line.admin<RunRow[]>('GET', `/devices/${device.id}/runs`)).body;
  assert.equal(runs.length, 1);
  const run = runs[0]!;
  assert.equal(run.status, 'ok');
  assert.equal(run.progress, 100);
  assert.equal(run.report?.status, 'ok');
  assert.deepEqual(run.report?.tasks?.map((t) => [t.name, t.status]), [['deploy-image', 'ok']]);

  const mine = eventsFile(eventsPath);
  const stored = await runEvents(line, run.id);
  assert.ok(mine.some((e) => e.type === 'task-progress' && typeof e.bytesDone === 'number'), 'the copy reported its progress');
  assert.equal(stored.length, mine.length, 'the server has every event the agent made');
  assertContiguous(stored);
  assert.deepEqual(
    stored.map((e) => [e.seq, e.type]),
    mine.map((e) => [e.seq, e.type]),
  );
  assert.ok(mine.every((e) => e.runId === run.id && e.deviceId === device.id));
}

test('end to end: only bootline.server= and bootline.token=; the image the server serves lands on the loop device byte for byte', { skip: loopSkip() }, async () => {
  const dir = tempDir();
  const image = makeImage(dir);
  await withLoop(dir, SIZE, async (dev) => {
    assert.equal(readDevice(dev, 4096)[0], 0xaa, 'the disk starts out full of something else');
    // The disk is not empty (0xaa everywhere): the plan says OVERWRITE, and zeroes what the image's bmap leaves out.
    const { line, token } = await lineWithImage(image, { target: [dev], overwrite: 'OVERWRITE', holes: 'zero' });
    const r = await runAgentOn(dir, `bootline.server=${line.url} bootline.token=${token}`, join(dir, 'state'), ['--events', join(dir, 'events.ndjson')]);
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.doesNotMatch(r.stderr, /warning/, 'events, report and log all delivered');
    assert.ok(readDevice(dev, SIZE).equals(readFileSync(image)), 'the loop device holds the image');
    await checkServerSawEverything(line, join(dir, 'events.ndjson'));
  });
  assertNoLoopLeft(dir);
});

test('end to end onto a file (allowFile): the same, without root', { skip: mkfsSkip() }, async () => {
  const dir = tempDir();
  const image = makeImage(dir);
  const target = join(dir, 'target.img');
  const { line, token } = await lineWithImage(image, { target: [target], allowFile: true });
  const r = await runAgentOn(dir, `bootline.server=${line.url} bootline.token=${token}`, join(dir, 'state'), ['--events', join(dir, 'events.ndjson')]);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /warning/, 'events, report and log all delivered');
  const written = readFileSync(target);
  const want = readFileSync(image);
  assert.equal(written.length, want.length);
  assert.ok(written.equals(want), 'the file holds the image');
  await checkServerSawEverything(line, join(dir, 'events.ndjson'));
});
