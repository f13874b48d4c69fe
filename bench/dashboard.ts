// The dashboard under a full line: N simulated devices (default 500) post progress several
// times a second to the real server (`bootline serve`, its own process, SQLite), while the
// line view is open in Debian's Chromium. The page (opened with ?measure) records, for every
// tile it commits, the time from the event's time stamp (set by the sender just before its
// POST, same machine clock) to the next animation frame after the commit — event-to-paint —
// and the time between animation frames. Read every window; the table shows whether either
// grows over the run.
//
//   npm run bench:dashboard -- [--devices 500] [--rate 4] [--seconds 180] [--window 30] [--out docs/benchmarks/dashboard.md]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startLineServer } from '../src/lab/line-server.ts';
import { launchChromium } from '../test/web/browser.ts';
import { SimDevice, simMac, type SimTask } from '../test/web/sim-agents.ts';
import { BUNDLE, cpuSeconds, descendants, log, ROOT, treeCpuSeconds } from './server-util.ts';

interface PageMeasure {
  latencies: number[];
  fromServer: number[];
  frames: number[];
}
type MeasuredWindow = Window & { __bootlineMeasure?: PageMeasure };

/** CPU seconds of Chromium's processes (this process's descendants named chromium/chrome). */
function chromiumCpu(): number {
  return descendants(process.pid)
    .filter((pid) => {
      try {
        return /chrom/i.test(readFileSync(`/proc/${pid}/comm`, 'utf8'));
      } catch {
        return false;
      }
    })
    .reduce((sum, pid) => sum + cpuSeconds(pid), 0);
}

const { values: opt } = parseArgs({
  options: {
    devices: { type: 'string', default: '500' },
    rate: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '180' },
    window: { type: 'string', default: '30' },
    out: { type: 'string', default: join(ROOT, 'docs', 'benchmarks', 'dashboard.md') },
  },
});
const DEVICES = Number(opt.devices);
const RATE = Number(opt.rate);
const SECONDS = Number(opt.seconds);
const WINDOW = Number(opt.window);
const TASKS: SimTask[] = [
  { name: 'check-hardware', effort: 1 },
  { name: 'deploy-image', effort: 6 },
  { name: 'collect-inventory', effort: 1 },
  { name: 'customer-script', effort: 2 },
];
/** Progress events per task before it ends: a run lasts about 4 × STEPS / RATE seconds. */
const STEPS = 60;

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '—');

interface Row {
  window: string;
  eventsPerSecond: number;
  tiles: number;
  lat: { p50: number; p95: number; p99: number; max: number };
  /** From the server's receipt to the paint. */
  srv: { p50: number; p99: number };
  frame: { p50: number; p95: number; p99: number; max: number; over50: number; count: number };
  serverCpu: number;
  chromeCpu: number;
  /** The machine's 1-minute load average at the window's end (other work on the shared cores shows here). */
  load: number;
}

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'bootline-bench-dash-'));
  const server = await startLineServer({ cli: BUNDLE, data: join(root, 'data'), logLevel: 'warn' });
  const chrome = await launchChromium();
  const devices: SimDevice[] = [];
  let stop = false;
  try {
    log(`server ${server.url} (pid ${server.pid}); ${DEVICES} devices, ${RATE} events/s each, ${SECONDS} s`);
    const token = (await server.api('POST', '/api/v1/tokens', { label: 'bench' })).json.token as string;
    for (let i = 0; i < DEVICES; i++) {
      const d = new SimDevice(server.url, `BENCH-${String(i + 1).padStart(4, '0')}`, simMac(i + 1));
      await d.enroll(token);
      devices.push(d);
    }
    // Every device starts a run before the page opens, so the first load shows them all.
    await Promise.all(devices.map((d, i) => d.startRun(TASKS, `bench-${i}-0`).then(() => d.startTask(0))));

    const ctx = await chrome.browser.newContext({ viewport: { width: 1600, height: 1000 } });
    await ctx.addInitScript((t: string) => sessionStorage.setItem('bootline.credentials', JSON.stringify({ kind: 'token', token: t })), server.adminToken!);
    const page = await ctx.newPage();
    await page.goto(`${server.url}/?measure`);
    await page.waitForFunction((n) => document.querySelectorAll('li.tile').length >= n, DEVICES, { timeout: 60_000 });
    await page.locator('.live.on').waitFor({ timeout: 30_000 });
    log('page shows every device; load starts');

    // The load: each device its own loop, start times spread over one period.
    let sent = 0;
    let failures = 0;
    const period = 1000 / RATE;
    const loops = devices.map(async (d, i) => {
      await new Promise((r) => setTimeout(r, (i / DEVICES) * period));
      let task = 0;
      let step = 0;
      let run = 0;
      let next = performance.now();
      while (!stop) {
        try {
          if (step < STEPS) {
            step++;
            await d.progress((100 * step) / (STEPS + 1), { rate: 100 * 1024 * 1024 + i * 1024 });
          } else if (task < TASKS.length - 1) {
            await d.endTask('ok', (STEPS * period) | 0);
            task++;
            step = 0;
            await d.startTask(task);
          } else {
            // One run in fifty fails, so the line shows failures too.
            const fail = (i + run) % 50 === 0;
            await d.endTask(fail ? 'failed' : 'ok', (STEPS * period) | 0, fail ? 'simulated failure' : undefined);
            await d.endRun(fail ? 'failed' : 'ok', fail ? 'customer-script failed: simulated failure' : undefined);
            run++;
            task = 0;
            step = 0;
            await d.startRun(TASKS, `bench-${i}-${run}`);
            await d.startTask(0);
          }
          sent++;
        } catch {
          failures++;
        }
        next += period;
        const wait = next - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else next = performance.now();
      }
    });

    const rows: Row[] = [];
    const windows = Math.max(1, Math.round(SECONDS / WINDOW));
    // Drop what the page measured while loading.
    await page.evaluate(() => {
      const m = (window as MeasuredWindow).__bootlineMeasure;
      if (m) m.latencies.length = m.fromServer.length = m.frames.length = 0;
    });
    for (let w = 0; w < windows; w++) {
      const sent0 = sent;
      const s0 = treeCpuSeconds(server.pid);
      const c0 = chromiumCpu();
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, WINDOW * 1000));
      const el = (performance.now() - t0) / 1000;
      const m = await page.evaluate(() => {
        const x = (window as MeasuredWindow).__bootlineMeasure!;
        const out = { latencies: x.latencies.splice(0), fromServer: x.fromServer.splice(0), frames: x.frames.splice(0), tiles: document.querySelectorAll('li.tile').length };
        return out;
      });
      const row: Row = {
        window: `${w * WINDOW}-${(w + 1) * WINDOW} s`,
        eventsPerSecond: (sent - sent0) / el,
        tiles: m.tiles,
        srv: { p50: pct(m.fromServer, 50), p99: pct(m.fromServer, 99) },
        lat: { p50: pct(m.latencies, 50), p95: pct(m.latencies, 95), p99: pct(m.latencies, 99), max: Math.max(...m.latencies) },
        frame: { p50: pct(m.frames, 50), p95: pct(m.frames, 95), p99: pct(m.frames, 99), max: Math.max(...m.frames), over50: m.frames.filter((f: number) => f > 50).length, count: m.frames.length },
        serverCpu: (treeCpuSeconds(server.pid) - s0) / el,
        chromeCpu: (chromiumCpu() - c0) / el,
        load: loadavg()[0]!,
      };
      rows.push(row);
      log(`${row.window}: ${row.eventsPerSecond.toFixed(0)} events/s, latency p50 ${f1(row.lat.p50)} p99 ${f1(row.lat.p99)} ms (from the server p50 ${f1(row.srv.p50)}), frame p50 ${f1(row.frame.p50)} p99 ${f1(row.frame.p99)} ms, ${row.frame.over50} frames > 50 ms`);
    }
    stop = true;
    await Promise.all(loops);
    const md = report(rows, failures);
    writeFileSync(opt.out!, md);
    process.stdout.write(md);
    await ctx.close();
  } finally {
    stop = true;
    for (const d of devices) d.close();
    await chrome.close();
    await server.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

function report(rows: Row[], failures: number): string {
  const first = rows[0]!;
  const last = rows[rows.length - 1]!;
  const lines = [
    '# Dashboard benchmark: a line of devices, live',
    '',
    `\`npm run bench:dashboard\` (bench/dashboard.ts): ${DEVICES} simulated devices, each posting one event every ${(1000 / RATE).toFixed(0)} ms (${RATE}/s:`,
    `task-progress with bytes and rate, task and run boundaries, one run in fifty failing) over real HTTP to \`bootline serve\``,
    `(its own process, SQLite), while the line view is open in Debian's Chromium (headless, 1600×1000, every device a tile;`,
    `the page follows \`/api/v1/stream?logs=false&intervalMs=100\` and applies what arrives once per animation frame).`,
    '',
    '- **event-to-paint**: for each tile committed, the time from its newest event\'s time stamp (set by the sender right',
    '  before its POST; one machine, one clock) to the animation frame after the commit. It includes the POST, the',
    '  server\'s ingestion and group commit, the stream\'s 100 ms coalescing, the browser\'s parse and React\'s render.',
    '- **server → paint**: the same, counted from the server\'s receipt of the event (its `receivedAt`): the part after',
    '  the server has the event (ingestion, the stream, the browser). The difference to event-to-paint is the sender and the network.',
    '- **frame time**: time between consecutive animation frames in the page (16.7 ms at 60 Hz).',
    '',
    `Measured ${new Date().toISOString().slice(0, 10)} on this project's VM (${cpus().length} cores, shared with other`,
    'helpers\' work at the time, so the numbers are noisy): load generator, server and Chromium all on these two cores.',
    '',
    '| window | events/s sent | tiles | event→paint p50 (ms) | p95 | p99 | max | server→paint p50 | p99 | frame p50 (ms) | p95 | p99 | max | frames > 50 ms | server CPU (cores) | Chromium CPU (cores) | load average |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.window} | ${r.eventsPerSecond.toFixed(0)} | ${r.tiles} | ${f1(r.lat.p50)} | ${f1(r.lat.p95)} | ${f1(r.lat.p99)} | ${f1(r.lat.max)} | ${f1(r.srv.p50)} | ${f1(r.srv.p99)} | ${f1(r.frame.p50)} | ${f1(r.frame.p95)} | ${f1(r.frame.p99)} | ${f1(r.frame.max)} | ${r.frame.over50} of ${r.frame.count} | ${r.serverCpu.toFixed(2)} | ${r.chromeCpu.toFixed(2)} | ${r.load.toFixed(1)} |`,
    ),
    '',
    `First window to last: latency p50 ${f1(first.lat.p50)} → ${f1(last.lat.p50)} ms, p99 ${f1(first.lat.p99)} → ${f1(last.lat.p99)} ms;`,
    `frame time p50 ${f1(first.frame.p50)} → ${f1(last.frame.p50)} ms, p99 ${f1(first.frame.p99)} → ${f1(last.frame.p99)} ms.`,
    `Requests that failed: ${failures}.`,
    '',
  ];
  return lines.join('\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
