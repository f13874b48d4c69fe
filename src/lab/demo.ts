// The demo (the README's first command): a line's server, the installer, a sample product
// image and virtual devices that network-boot and get bootstrapped end to end — then reboot
// into the image they were given, which proves itself on their serial consoles.
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_LAB_CACHE } from './debian-packages.ts';
import { buildInstaller, parseBuildOptions } from './installer/build.ts';
import { buildSampleTarget, type SampleTarget } from './sample-target/build.ts';
import { parseBmap } from '../image/bmap/parse.ts';
import { verifyRanges } from '../image/verify.ts';
import { TARGET_MARKER } from './sample-target/init-script.ts';
import { startLineServer, type LineServer } from './line-server.ts';
import { startLab, type Lab } from './vm/lab.ts';
import { execFile as execFileCb } from 'node:child_process';
import { promisify } from 'node:util';
import { formatBytes, formatDuration } from '../format.ts';

const execFile = promisify(execFileCb);

export interface DemoOptions {
  /** The bootline CLI (dist/bootline.mjs): the server runs as its own process. */
  cli: string;
  /** Everything the demo makes: server data, lab, logs (default /var/tmp/bootline-demo). */
  work?: string;
  cache?: string;
  devices?: number;
  /** For the whole demo (default 30 min: TCG is slow). */
  timeoutSeconds?: number;
  /** Progress lines (default: stdout). The server data and the consoles' logs stay in `work`. */
  log?: (line: string) => void;
  /** The server URL the devices are given (default the server's own): a test puts a faulty network in between. */
  devicesReach?: (serverUrl: string) => Promise<string>;
  /** Bytes of real files in the sample target's root (default the sample target's 96 MiB); a test takes less to spend less TCG time deploying. */
  sampleRootFilesBytes?: number;
  /** Called after the devices are done, before the lab and server stop (tests look at both here). */
  inspect?: (ctx: { server: LineServer; lab: Lab; outcomes: DeviceOutcome[]; sample: SampleTarget }) => Promise<void>;
}

export interface DeviceOutcome {
  name: string;
  serial: string;
  mac: string;
  state: string;
  runId?: string;
  seconds?: number;
  bytesWritten?: number;
  /** The target's first boot printed its marker with this device's serial. */
  targetBooted: boolean;
  /** Every mapped range of the device's disk matches the image's bmap (checked after it powered off). */
  diskVerified: boolean;
  message?: string;
}

export interface DemoResult {
  ok: boolean;
  seconds: number;
  serverUrl: string;
  devices: DeviceOutcome[];
  work: string;
}

/** The line's plan: what every device of the demo does. */
export function demoPlan(image: string) {
  return {
    description: 'lab demo: deploy the sample image, take stock, run the customer script',
    config: {
      unattended: true,
      tasks: [
        {
          name: 'check-hardware',
          script: '/bin/sh',
          args: ['-c', 'echo "serial $(cat /sys/class/dmi/id/product_serial), $(nproc) CPU, $(sed -n "s/MemTotal: *//p" /proc/meminfo)"; lsblk -d -o NAME,SIZE,TYPE'],
        },
        { name: 'deploy-image', builtin: 'deploy-image', effort: 6, with: { image: `image:${image}`, target: ['auto'], overwrite: 'OVERWRITE' } },
        { name: 'inventory', builtin: 'collect-inventory', with: { commands: [{ name: 'lsblk', command: ['lsblk', '-d', '-o', 'NAME,SIZE,SERIAL'] }] } },
        { name: 'customer-script', script: '/bin/sh', args: ['-c', 'sfdisk --dump "$BOOTLINE_TARGET" | grep -E "name=|label:"; echo "provisioned by bootline"'] },
      ],
      onSuccess: { action: 'reboot', delay: 2 },
    },
  };
}

const must = async (server: LineServer, expect: number, method: string, path: string, body?: unknown) => {
  const r = await server.api(method, path, body);
  if (r.status !== expect) throw new Error(`${method} ${path}: ${r.status} ${r.text.slice(0, 300)}`);
  return r.json;
};

interface DeviceRow {
  id: string;
  serial: string | null;
  state: string;
  progress: number;
  currentTask: string | null;
  currentRun: string | null;
  message: string | null;
}

/** The most bytes deploy-image said it had written in `runId`. */
async function bytesWritten(server: LineServer, runId: string): Promise<number | undefined> {
  const events = (await server.api('GET', `/api/v1/runs/${encodeURIComponent(runId)}/events?limit=10000`)).json as { type: string; body: { task?: string; bytesDone?: number } }[];
  let most: number | undefined;
  for (const e of events ?? []) if (e.body?.task === 'deploy-image' && typeof e.body.bytesDone === 'number') most = Math.max(most ?? 0, e.body.bytesDone);
  return most;
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const started = Date.now();
  const log = o.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const work = o.work ?? '/var/tmp/bootline-demo';
  const cache = o.cache ?? DEFAULT_LAB_CACHE;
  const count = o.devices ?? 2;
  const deadline = started + (o.timeoutSeconds ?? 1800) * 1000;
  const left = () => Math.max(1000, deadline - Date.now());
  const data = join(work, 'server');
  rmSync(join(work, 'lab'), { recursive: true, force: true });
  rmSync(data, { recursive: true, force: true });
  mkdirSync(data, { recursive: true });

  log('== the installer (kernel + initramfs from Debian packages, cached)');
  // Built (or found up to date) beside the server data, which starts anew each time.
  const installerDir = join(work, 'installer');
  const installer = await buildInstaller({ ...parseBuildOptions({ out: installerDir, cache }), log: (l) => log(`   ${l}`) });
  mkdirSync(join(data, 'installer'));
  for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(installerDir, f), join(data, 'installer', f));
  log(`   initrd.img ${formatBytes(installer.files['initrd.img'].bytes)}, kernel ${installer.kernel.release}`);
  log('== the product image (a bootable UEFI disk, cached)');
  const sample = await buildSampleTarget({ out: join(work, 'sample'), cache, log: (l) => log(`   ${l}`), ...(o.sampleRootFilesBytes !== undefined ? { rootFilesBytes: o.sampleRootFilesBytes } : {}) });
  await execFile(process.execPath, [o.cli, 'image', 'add', sample.zst, '--data', data, '--name', 'sample', '--image-version', sample.release]);
  log(`   registered as image "sample" (${formatBytes(sample.mappedBytes)} mapped of ${formatBytes(sample.bytes)})`);

  log('== the line server');
  const server = await startLineServer({ cli: o.cli, data, logFile: join(work, 'server.log') });
  let lab: Lab | undefined;
  try {
    await must(server, 200, 'PUT', '/api/v1/plans/demo-line', demoPlan('sample'));
    await must(server, 201, 'POST', '/api/v1/rules', { match: 'default', plan: 'demo-line' });
    log(`   ${server.url} — plan demo-line for every device; live events: ${server.url}/api/v1/stream (admin token in ${join(work, 'admin-token')})`);
    writeFileSync(join(work, 'admin-token'), `${server.adminToken ?? ''}\n`, { mode: 0o600 });

    log(`== ${count} virtual devices boot from the network`);
    const reach = o.devicesReach ? await o.devicesReach(server.url) : server.url;
    lab = await startLab({ devices: count, serverUrl: reach, dir: join(work, 'lab'), diskSize: '2G', memoryMiB: 1536, log: (l) => log(`   ${l}`) });

    // Follow the devices through the server, as a dashboard would.
    const outcomes = new Map<string, DeviceOutcome>(lab.devices.map((d) => [d.serial, { name: d.name, serial: d.serial, mac: d.mac, state: 'booting', targetBooted: false, diskVerified: false }]));
    const last = new Map<string, string>();
    for (;;) {
      const rows = (await must(server, 200, 'GET', '/api/v1/devices')) as DeviceRow[];
      for (const r of rows) {
        const out = r.serial ? outcomes.get(r.serial) : undefined;
        if (!out) continue;
        out.state = r.state;
        if (r.currentRun) out.runId = r.currentRun;
        if (r.message) out.message = r.message;
        // A line when the state or task changes, and every 10% between.
        const line = `${out.name} ${r.state} ${r.currentTask ?? ''} ${Math.floor(r.progress / 10)}`;
        if (last.get(r.serial!) !== line) log(`   ${out.name} (${r.serial}): ${r.state}${r.currentTask ? `, ${r.currentTask}` : ''}, ${Math.floor(r.progress)}%${r.message && r.state !== 'running' ? ` — ${r.message}` : ''}`);
        last.set(r.serial!, line);
      }
      const all = [...outcomes.values()];
      if (all.every((d) => d.state === 'succeeded' || d.state === 'failed' || d.state === 'aborted')) break;
      if (Date.now() > deadline) throw new Error(`the devices did not finish within ${o.timeoutSeconds ?? 1800} s: ${all.map((d) => `${d.name} ${d.state}`).join(', ')}`);
      await new Promise((r) => setTimeout(r, 2000));
    }

    log('== the devices reboot into the image they were given');
    const bmap = parseBmap(readFileSync(sample.bmap, 'utf8'), sample.bmap);
    await Promise.all(
      lab.devices.map(async (d) => {
        const out = outcomes.get(d.serial)!;
        if (out.runId) {
          const run = (await server.api('GET', `/api/v1/runs/${encodeURIComponent(out.runId)}`)).json as { startedAt: string; endedAt: string | null };
          if (run?.endedAt) out.seconds = (Date.parse(run.endedAt) - Date.parse(run.startedAt)) / 1000;
          out.bytesWritten = await bytesWritten(server, out.runId);
        }
        if (out.state !== 'succeeded') return;
        try {
          const m = await lab!.waitForSerial(d, new RegExp(`${TARGET_MARKER} release=(\\S+) serial=(\\S+)`), Math.min(left(), 300_000));
          out.targetBooted = m[2] === d.serial && m[1] === sample.release;
          log(`   ${d.name}: ${m[0]}`);
        } catch (e) {
          out.message = `the target did not boot: ${(e as Error).message.split('\n')[0]}`;
          return;
        }
        // The target powers off after its check: then the disk is still, and is read back.
        if (!(await lab!.waitForExit(d, Math.min(left(), 60_000)))) {
          out.message = 'the target did not power off after its first boot';
          return;
        }
        const v = await verifyRanges(d.disk, bmap);
        out.diskVerified = v.ok;
        if (!v.ok) out.message = `${v.bad.length} mapped ranges of the disk differ from the image`;
      }),
    );

    const devices = [...outcomes.values()];
    const good = (d: DeviceOutcome) => d.state === 'succeeded' && d.targetBooted && d.diskVerified;
    const ok = devices.every(good);
    log('== summary');
    for (const d of devices) {
      log(
        `   ${d.name}  ${d.serial}  ${good(d) ? 'OK    ' : 'FAILED'}  run ${d.seconds !== undefined ? formatDuration(d.seconds * 1000) : '-'}  ` +
          `wrote ${d.bytesWritten !== undefined ? formatBytes(d.bytesWritten) : '-'}  target booted: ${d.targetBooted ? 'yes' : 'no'}  disk verified: ${d.diskVerified ? 'yes' : 'no'}${d.message && !good(d) ? `  (${d.message})` : ''}`,
      );
    }
    await o.inspect?.({ server, lab, outcomes: devices, sample });
    log(`   ${ok ? 'all devices bootstrapped' : 'SOME DEVICES FAILED'} in ${formatDuration(Date.now() - started)}; consoles and server log under ${work}`);
    return { ok, seconds: (Date.now() - started) / 1000, serverUrl: server.url, devices, work };
  } finally {
    await lab?.stop({ keepLogs: true });
    await server.stop();
  }
}
