// Runs every test/**/*.test.ts with node's own test runner (TypeScript via tsx).
// Node 20's --test does not expand globs itself, so the files are listed here.
//
// Two lanes run side by side: the lab's QEMU guests (test/lab/, one at a time: each keeps a
// core busy under TCG) and everything else (one file at a time). On 2 cores this takes the
// wall time from the sum of both to about the lab's. The other lane's output is kept and
// printed after the lab's, so neither is interleaved.
//   node scripts/run-tests.mjs [substring ...]   only the files whose path contains one of them
//   BOOTLINE_TEST_LANES=1                          one lane, everything in order
import { lstatSync, readdirSync, mkdtempSync, readFileSync, rmSync, openSync, closeSync } from 'node:fs';
import { join, relative } from 'node:path';
import { performance } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    // lstat: recorded sysfs trees under test/fixtures hold sysfs's own link cycles.
    return lstatSync(p).isDirectory() ? find(p) : p.endsWith('.test.ts') ? [p] : [];
  });
}

const filter = process.argv.slice(2);
const files = find('test').filter((f) => filter.length === 0 || filter.some((s) => f.includes(s))).sort();
const isLab = (f) => f.startsWith(join('test', 'lab') + '/');
const lanes = process.env.BOOTLINE_TEST_LANES === '1' ? [files] : [files.filter(isLab), files.filter((f) => !isLab(f))].filter((l) => l.length > 0);

const laneSeconds = [];

/** The lanes' times and their slowest files, so whoever adds a slow test sees what it costs. */
function slowest(timesFiles, seconds) {
  const rows = timesFiles.flatMap((f, lane) => {
    let text = '';
    try { text = readFileSync(f, 'utf8'); } catch { /* the lane died before its reporter wrote */ }
    return text.split('\n').filter(Boolean).map((line) => {
      const [s, file] = line.split('\t');
      return { lane, seconds: Number(s), file: relative(process.cwd(), file) };
    });
  });
  rows.sort((a, b) => b.seconds - a.seconds);
  const laneLine = seconds.map((s, i) => `lane ${i + 1}: ${s.toFixed(0)} s`).join(', ');
  return `\ntest wall time: ${laneLine}; slowest files:\n` + rows.slice(0, 12).map((r) => `  ${r.seconds.toFixed(1).padStart(7)} s  lane ${r.lane + 1}  ${r.file}\n`).join('');
}

/** Runs one lane; its output goes to the terminal, or to a file when `logFile` is given. Each
 * file's wall time goes to `timesFile`. */
function run(lane, logFile, timesFile) {
  const fd = logFile ? openSync(logFile, 'w') : undefined;
  const stdio = fd === undefined ? 'inherit' : ['ignore', fd, fd];
  const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${timesReporter}`, `--test-reporter-destination=${timesFile}`];
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...reporters, ...lane], { stdio });
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      if (fd !== undefined) closeSync(fd);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

const timesReporter = new URL('./file-times-reporter.mjs', import.meta.url).href;
const dir = mkdtempSync(join(tmpdir(), 'bootline-tests-'));
const logs = lanes.map((_, i) => (i === 0 ? undefined : join(dir, `lane-${i}.log`)));
const times = lanes.map((_, i) => join(dir, `times-${i}.tsv`));
const started = performance.now();
if (lanes.length > 1) process.stdout.write(`running ${lanes[0].length} lab test files and, alongside, ${lanes[1].length} others (their output follows the lab's)\n`);
const codes = await Promise.all(lanes.map((lane, i) => run(lane, logs[i], times[i]).then((code) => ((laneSeconds[i] = (performance.now() - started) / 1000), code))));
for (const log of logs.slice(1)) process.stdout.write(readFileSync(log, 'utf8'));
process.stdout.write(slowest(times, laneSeconds));
rmSync(dir, { recursive: true, force: true });
const failed = codes.filter((c) => c !== 0).length;
if (lanes.length > 1) process.stdout.write(failed ? `\n${failed} of ${lanes.length} test lanes failed (see the "✖" lines above)\n` : `\nall ${lanes.length} test lanes passed\n`);
process.exit(failed ? 1 : 0);
