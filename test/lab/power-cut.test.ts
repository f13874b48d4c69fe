// Power cuts of a whole virtual device (root, QEMU under TCG, OVMF, iPXE, swtpm): the guest is
// reset with QMP system_reset — its RAM, the installer and the agent's state dir with it, are
// gone — at seeded points of one plan: during deploy-image, during one of the two run-once
// scripts, or both. Each time it network-boots again, asks the server what its interrupted run
// finished and goes on. One device, one lab, a boot per cut plus one (a TCG boot costs 30–55 s
// here): the cuts are points of the same pipeline, and no clean run is needed, because the
// reference is known: the image's mapped ranges, each script ended once, one complete ok run.
//
// BOOTLINE_POWER_CUTS picks the cuts: `script` (the default, in CI: the suite's time is bounded,
// and this cut also proves deploy-image's data and the journal were on the disk when they said
// so), `deploy`, or `both` (npm run soak).
//
// The scripts write `start <task>` / `end <task>` to a region of the target disk past the
// image (fsynced), which the host reads from the disk file: it survives the cuts, the
// installer's RAM disk does not. BOOTLINE_POWER_CUT_SEED replays another seed.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildInstaller, parseBuildOptions } from '../../src/lab/installer/build.ts';
import { DEFAULT_LAB_CACHE } from '../../src/lab/debian-packages.ts';
import { startLab, type Lab } from '../../src/lab/vm/lab.ts';
import { REBOOT_TCG_CODE_BUFFER_MIB } from './vm-fixtures.ts';
import { seededRandom } from '../../src/lab/fault-proxy.ts';
import { makeImage } from '../../src/lab/fleet-sim.ts';
import { createBmap } from '../../src/image/create.ts';
import { formatBmap } from '../../src/image/bmap/write.ts';
import { verifyRanges } from '../../src/image/verify.ts';
import { onPath } from '../../src/which.ts';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { tempDir } from '../helpers.ts';

const CLI = resolve(import.meta.dirname, '../../dist/bootline.mjs');
const INSTALLER = join(DEFAULT_LAB_CACHE, 'test-installers', 'power-cut');
const skip = ['qemu-system-x86_64', 'swtpm'].filter((t) => !onPath(t));
// The default seed cuts the second script, so that the first, ended before the cut, must be skipped.
const SEED = Number(process.env.BOOTLINE_POWER_CUT_SEED ?? 20261203);
const MiB = 1024 * 1024;
/** The image: every other MiB mapped (makeImage), long enough under TCG for a cut to fall inside deploy-image. */
const IMAGE_MIB = 32;
/** Where the scripts keep their marks on the 512 MiB disk: far past the image, never written by deploy-image (unmapped blocks are skipped). */
const MARKS_BLOCK = 65536; // 4 KiB blocks: 256 MiB
const SCRIPTS = ['write-serial', 'seal-device'] as const;
const SCRIPT_SECONDS = 3;
const CUTS = process.env.BOOTLINE_POWER_CUTS ?? 'script';
if (!['script', 'deploy', 'both'].includes(CUTS)) throw new Error(`BOOTLINE_POWER_CUTS=${CUTS}: give script, deploy or both`);
const cutInDeploy = CUTS !== 'script';
const cutInScript = CUTS !== 'deploy';
const cutsWhere = [cutInDeploy && 'during deploy-image', cutInScript && 'during a script'].filter(Boolean).join(' and again ');

/** Appends a line to the marks block (read it, add, write it back, fsync): it must be on the disk before the next cut. */
const MARK = `mark() { m=$(dd if=/dev/vda bs=4096 skip=${MARKS_BLOCK} count=1 2>/dev/null | tr -d '\\000'); printf '%s\\n%s\\n' "$m" "$1" | dd of=/dev/vda bs=4096 seek=${MARKS_BLOCK} conv=notrunc,fsync 2>/dev/null; }`;
const plan = {
  description: 'power cuts of a whole guest',
  config: {
    unattended: true,
    tasks: [
      { name: 'deploy-image', builtin: 'deploy-image', with: { image: 'image:cut', target: ['/dev/vda'], overwrite: 'OVERWRITE' } },
      ...SCRIPTS.map((name) => ({ name, script: '/bin/sh', args: ['-c', `set -e; ${MARK}; mark "start $0"; sleep ${SCRIPT_SECONDS}; mark "end $0"`, name] })),
    ],
    onSuccess: { action: 'poweroff', delay: 0 },
  },
};

interface EventRecord {
  seq: number;
  type: string;
  body: { task?: string; status?: string; message?: string; bytesDone?: number; bytesTotal?: number };
}
type Device = { id: string; state: string };
type Run = { id: string; status: string | null; startedAt: string };

/** The marks the scripts wrote, read from the guest's disk file on the host. */
function readMarks(disk: string): string[] {
  const b = Buffer.alloc(4096);
  const fd = openSync(disk, 'r');
  try {
    readSync(fd, b, 0, b.length, MARKS_BLOCK * 4096);
  } finally {
    closeSync(fd);
  }
  return b.toString('latin1').replace(/\0/g, '').split('\n').filter(Boolean);
}

const figures: string[] = [];
const note = (s: string) => {
  figures.push(s);
  process.stderr.write(`power-cut: ${s}\n`);
};
let line: TestServer | undefined;
let lab: Lab | undefined;
after(async () => {
  await lab?.stop();
  await line?.close();
  if (figures.length > 0) process.stderr.write(`power-cut figures:\n  ${figures.join('\n  ')}\n`);
});

test(
  `a device whose power is cut ${cutsWhere} ends with the image on its disk, each script ended once, and one complete successful run on the server`,
  { skip: skip.length > 0 && `needs ${skip.join(', ')} (scripts/setup.sh)`, timeout: 12 * 60_000 },
  async () => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run "npm run build" first`);
    const t0 = Date.now();
    const random = seededRandom(SEED);
    const deployShare = 0.15 + 0.45 * random();
    const cutScript = SCRIPTS[random() < 0.5 ? 0 : 1]!;
    const scriptDelayMs = Math.round((0.1 + 0.3 * random()) * SCRIPT_SECONDS * 1000);
    const planned = [cutInDeploy && `at ${(deployShare * 100).toFixed(0)}% of deploy-image's bytes`, cutInScript && `${(scriptDelayMs / 1000).toFixed(2)} s after ${cutScript} wrote its start mark`];
    note(`seed ${SEED}, cuts: ${planned.filter(Boolean).join('; ')}`);

    const dir = tempDir('bootline-power-cut-');
    const image = join(dir, 'cut.img');
    makeImage(image, IMAGE_MIB);
    const bmap = await createBmap(image);
    writeFileSync(`${image}.bmap`, formatBmap(bmap));
    const data = join(dir, 'server');
    execFileSync(process.execPath, [CLI, 'image', 'add', image, '--data', data, '--name', 'cut', '--bmap', `${image}.bmap`], { stdio: 'pipe' });
    line = await startTestServer({ data });
    const built = Date.now();
    await buildInstaller({ ...parseBuildOptions({ out: INSTALLER, cache: DEFAULT_LAB_CACHE, agent: CLI, zstdLevel: '3' }), log: (l) => process.stderr.write(`power-cut: ${l}\n`) });
    note(`installer (built or found up to date): ${((Date.now() - built) / 1000).toFixed(1)} s`);
    mkdirSync(join(line.data, 'installer'), { recursive: true });
    for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(INSTALLER, f), join(line.data, 'installer', f));
    const put = await line.admin('PUT', '/api/v1/plans/cut', plan);
    assert.equal(put.status, 200, put.text);
    assert.equal((await line.admin('POST', '/api/v1/rules', { match: 'default', action: 'run', plan: 'cut', priority: 100 })).status, 201);

    const device = async () => ((await line!.admin('GET', '/api/v1/devices')).json as Device[])[0];
    const runsOf = async (id: string) => ((await line!.admin('GET', `/api/v1/devices/${id}/runs`)).json as Run[]).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    const eventsOf = async (runId: string) => ((await line!.admin('GET', `/api/v1/runs/${runId}/events?limit=10000`)).json as EventRecord[]).sort((a, b) => a.seq - b.seq);
    const logLines = (ev: EventRecord[]) => ev.filter((e) => e.type === 'log' || e.type === 'task-end').map((e) => `${e.body.task ?? ''}: ${e.body.status ?? ''} ${e.body.message ?? ''}`);

    const started = Date.now();
    // Boot 2 took 75-77 s from the reset to the run's start with QEMU's default code buffer, 47-54 s with this one.
    lab = await startLab({ devices: 1, serverUrl: line.url, diskSize: '512M', memoryMiB: 1536, tcgCodeBufferMiB: REBOOT_TCG_CODE_BUFFER_MIB, log: () => {} });
    const d = lab.devices[0]!;
    const tail = () => readFileSync(d.serialLog, 'latin1').split('\n').slice(-40).join('\n');
    const until = async <T>(what: string, ms: number, f: () => Promise<T | undefined>, every = 500): Promise<T> => {
      const end = Date.now() + ms;
      for (;;) {
        const v = await f();
        if (v !== undefined) return v;
        if (Date.now() > end || !lab!.isRunning(d)) throw new Error(`${what}: not within ${ms / 1000} s; serial console tail:\n${tail()}`);
        await new Promise((r) => setTimeout(r, every));
      }
    };
    /** The n-th run (1-based) of the device, once the server has it. */
    const nthRun = async (n: number) => {
      const dev = await until(`boot ${n}: the device enrolls`, 300_000, device);
      const run = await until(`boot ${n} starts its run`, 300_000, async () => (await runsOf(dev.id))[n - 1]);
      return { dev, run };
    };
    const failedIn = (ev: EventRecord[]) => {
      if (ev.some((e) => e.type === 'task-end' && e.body.status === 'failed')) throw new Error(`a task failed:\n${logLines(ev).slice(-25).join('\n')}`);
    };

    let boot = 0;
    let lastCut = started;
    /** The next boot's run, and how long it took to start since QEMU started or the last cut. */
    const nextBoot = async () => {
      boot += 1;
      const r = await nthRun(boot);
      note(`boot ${boot}: ${boot === 1 ? 'QEMU start' : 'reset'} to run-start on the server ${((Date.parse(r.run.startedAt) - lastCut) / 1000).toFixed(0)} s`);
      return r;
    };
    const cut = async () => {
      await lab!.qmp(d, 'system_reset');
      lastCut = Date.now();
    };

    if (cutInDeploy) {
      // Cut during deploy-image, at the seeded share of its bytes.
      const { run } = await nextBoot();
      const reached = await until(
        `boot ${boot} is deploying`,
        300_000,
        async () => {
          const ev = await eventsOf(run.id);
          failedIn(ev);
          const p = ev.filter((e) => e.type === 'task-progress' && e.body.task === 'deploy-image' && e.body.bytesTotal).at(-1);
          return p && p.body.bytesDone! >= deployShare * p.body.bytesTotal! ? p.body : undefined;
        },
        100,
      );
      await cut();
      const ev = await eventsOf(run.id);
      const deployEnded = ev.some((e) => e.type === 'task-end' && e.body.task === 'deploy-image');
      note(`cut in deploy-image: it had reported ${(reached.bytesDone! / MiB).toFixed(1)} of ${(reached.bytesTotal! / MiB).toFixed(1)} MiB; ${deployEnded ? 'it had ENDED by then' : 'not ended'}; marks on disk: ${readMarks(d.disk).join(', ') || 'none'}`);
      assert.equal(deployEnded, false, 'the cut fell inside deploy-image');
      assert.deepEqual(readMarks(d.disk), [], 'no script had started before the cut');
    }

    let marksAtScriptCut: string[] = [];
    let endedAtScriptCut: string[] = [];
    if (cutInScript) {
      // Cut during the seeded script, timed from the script's own `start` mark on the disk
      // (fsynced, so the host sees it at once), not from its task-start event: events reach the
      // server a variable while later under TCG.
      const { run } = await nextBoot();
      await until(
        `boot ${boot} runs ${cutScript}`,
        300_000,
        async () => {
          if (readMarks(d.disk).includes(`start ${cutScript}`)) return true;
          failedIn(await eventsOf(run.id));
          return undefined;
        },
        100,
      );
      await new Promise((r) => setTimeout(r, scriptDelayMs));
      await cut();
      marksAtScriptCut = readMarks(d.disk);
      const ev = await eventsOf(run.id);
      endedAtScriptCut = SCRIPTS.filter((t) => marksAtScriptCut.includes(`end ${t}`));
      const serverEnded = ev.filter((e) => e.type === 'task-end' && e.body.status === 'ok').map((e) => e.body.task!);
      note(`cut in ${cutScript}: marks on disk: ${marksAtScriptCut.join(', ')}; tasks the server had as ended: ${serverEnded.join(', ') || 'none'}`);
      assert.ok(marksAtScriptCut.includes(`start ${cutScript}`) && !marksAtScriptCut.includes(`end ${cutScript}`), `the cut fell inside ${cutScript}: ${marksAtScriptCut.join(', ')}`);
    }

    // The last boot finishes and powers off.
    const { dev } = await nextBoot();
    assert.equal(await lab.waitForExit(d, 300_000), true, `boot ${boot} powered off after its run:\n${tail()}`);
    note(`boot ${boot}: reset to power-off ${((Date.now() - lastCut) / 1000).toFixed(0)} s`);

    // The disk: every mapped range is the image's; each script ended once; none that had ended started again.
    const v = await verifyRanges(d.disk, bmap);
    assert.ok(v.ok, `${v.bad.length} mapped ranges of the disk differ from the image`);
    const marks = readMarks(d.disk);
    note(`marks at the end: ${marks.join(', ')}`);
    for (const t of SCRIPTS) {
      assert.equal(marks.filter((m) => m === `end ${t}`).length, 1, `${t} ended exactly once: ${marks.join(', ')}`);
      if (endedAtScriptCut.includes(t)) assert.equal(marks.slice(marksAtScriptCut.length).includes(`start ${t}`), false, `${t} had ended before the cut and did not start again: ${marks.join(', ')}`);
    }

    // The server: succeeded, a run per boot, the last ok with every event, skipping exactly what had ended.
    assert.equal((await device())!.state, 'succeeded');
    const runs = await runsOf(dev.id);
    assert.equal(runs.length, boot, `one run per boot: ${runs.map((r) => r.status).join(', ')}`);
    const last = runs.at(-1)!;
    const ev3 = await eventsOf(last.id);
    assert.equal(last.status, 'ok', logLines(ev3).join('\n'));
    assert.deepEqual(
      ev3.map((e) => e.seq),
      ev3.map((_, i) => i),
      'every event of the last run, once, in order',
    );
    assert.equal(ev3[0]!.type, 'run-start');
    assert.equal(ev3.at(-1)!.type, 'run-end');
    const outcome = (t: string) => ev3.filter((e) => e.type === 'task-end' && e.body.task === t).map((e) => `${e.body.status}${e.body.status === 'skipped' ? `: ${e.body.message}` : ''}`);
    // deploy-image had ended before a script was cut; after a cut in deploy-image alone, it runs again.
    const skipped = cutInScript ? ['deploy-image', ...endedAtScriptCut] : [];
    for (const t of ['deploy-image', ...SCRIPTS]) assert.deepEqual(outcome(t), [skipped.includes(t) ? 'skipped: finished in an earlier run (journal)' : 'ok'], `${t} in the last run`);
    note(`runs: ${runs.map((r) => r.status ?? 'none').join(', ')}; the last skipped ${skipped.join(', ')}; whole test ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  },
);
