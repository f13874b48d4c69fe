// Benchmark: `bootline image copy` against `bmaptool copy` in the same run.
//
// Builds a realistic disk image once (GPT, FAT ESP, ext4 root filled with real files
// from this machine with `mke2fs -d`), maps it with `bmaptool create`, compresses it
// (raw, gz, xz, zst), then copies each onto a loop device with both tools, alternating,
// from a local file and over HTTP from `bootline serve` on loopback, in a process of its own,
// as a line serves images to its devices. Prints a markdown table:
// both times, the ratio, bootline's peak RSS (node and its decompressor), and the
// limit (the slower of decompression alone and writing the raw mapped data alone),
// measured in the same round as the two copies it is compared with.
//
//   npm run bench:image -- [--runs N] [--size-gib 2] [--cache DIR] [--formats raw,gz,xz,zst] [--loop-io direct|buffered] [--out docs/benchmarks/image.md]
//
// Needs root (loop devices, drop_caches). Never part of the test suite.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readlinkSync, writeFileSync, statSync, readdirSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { AGENT_NODE_OPTIONS } from '../src/agent/node-options.ts';
import { startLineServer, type LineServer } from '../src/lab/line-server.ts';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '1' },
    'size-gib': { type: 'string', default: '2' },
    cache: { type: 'string', default: '/var/tmp/bootline-bench' },
    formats: { type: 'string', default: 'raw,gz,xz,zst' },
    transports: { type: 'string', default: 'file,http' },
    'loop-io': { type: 'string', default: 'direct' },
    out: { type: 'string' },
  },
});

const ROOT = resolve(import.meta.dirname, '..');
const BUNDLE = join(ROOT, 'dist', 'bootline.mjs');
const CACHE = args.cache!;
const SIZE_GIB = Number(args['size-gib']);
const RUNS = Number(args.runs);
const FORMATS = args.formats!.split(',');
const TRANSPORTS = args.transports!.split(',');
const LOOP_IO = args['loop-io']!;
if (LOOP_IO !== 'direct' && LOOP_IO !== 'buffered') throw new Error(`--loop-io is direct or buffered, not "${LOOP_IO}"`);
const sh = (cmd: string, a: string[], opts: { input?: string } = {}) => execFileSync(cmd, a, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'], ...opts });
const log = (m: string) => process.stderr.write(`bench: ${m}\n`);

// ---------------------------------------------------------------------------------
// The image, built once and cached.

function buildImage(): string {
  mkdirSync(CACHE, { recursive: true });
  const img = join(CACHE, `disk-${SIZE_GIB}g.img`);
  if (existsSync(`${img}.done`)) return img;
  log(`building a ${SIZE_GIB} GiB GPT image in ${CACHE} (once)`);
  const stage = join(CACHE, 'rootfs');
  sh('rm', ['-rf', stage, img]);
  mkdirSync(stage, { recursive: true });
  // At least 1 GB of real files: documentation, libraries, locales of this machine.
  let bytes = 0;
  for (const dir of ['/usr/share', '/usr/lib/x86_64-linux-gnu', '/usr/lib/jvm', '/usr/lib/gcc', '/usr/lib/python3']) {
    if (bytes > 1.2e9 || !existsSync(dir)) continue;
    const dest = join(stage, dir.replace(/\//g, '_'));
    sh('cp', ['-a', dir, dest]);
    bytes += Number(sh('du', ['-sb', dest]).split('\t')[0]);
  }
  log(`root file system content: ${(bytes / 1e9).toFixed(2)} GB`);
  if (bytes < 1e9) throw new Error('could not gather 1 GB of real files for the root file system');
  const total = SIZE_GIB * 1024 * 1024 * 1024;
  sh('truncate', ['-s', String(total), img]);
  const espStart = 2048;
  const espSectors = 64 * 2048; // 64 MiB
  const rootStart = espStart + espSectors;
  sh('sfdisk', ['-q', img], { input: `label: gpt\nstart=${espStart}, size=${espSectors}, type=uefi\nstart=${rootStart}, type=linux\n` });
  const rootSectors = total / 512 - rootStart - 34;
  const esp = join(CACHE, 'esp.img');
  const root = join(CACHE, 'root.img');
  sh('rm', ['-f', esp, root]);
  sh('mkfs.vfat', ['-C', esp, String(espSectors / 2)]);
  // A FAT file system holds zero-filled data blocks too: they must stay mapped.
  writeFileSync(join(CACHE, 'zeros.bin'), Buffer.alloc(4 * 1024 * 1024));
  sh('mcopy', ['-i', esp, join(CACHE, 'zeros.bin'), '::/zeros.bin']);
  sh('mke2fs', ['-q', '-t', 'ext4', '-d', stage, root, `${Math.floor(rootSectors / 2)}k`]);
  sh('dd', [`if=${esp}`, `of=${img}`, 'bs=1M', `seek=${(espStart * 512) / 1048576}`, 'conv=notrunc,sparse', 'status=none']);
  sh('dd', [`if=${root}`, `of=${img}`, 'bs=1M', `seek=${(rootStart * 512) / 1048576}`, 'conv=notrunc,sparse', 'status=none']);
  sh('rm', ['-rf', stage, esp, root]);
  sh('bmaptool', ['create', '-o', `${img}.bmap`, img]);
  log('compressing: gz (pigz -6), xz (-6 -T0), zst (-3 -T0)');
  sh('sh', ['-c', `pigz -6 -c '${img}' > '${img}.gz' && xz -6 -T0 -c '${img}' > '${img}.xz' && zstd -q -3 -T0 -c '${img}' > '${img}.zst'`]);
  writeFileSync(`${img}.done`, '');
  return img;
}

// ---------------------------------------------------------------------------------
// Measuring.

function dropCaches() {
  try {
    sh('sync', []);
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    // not root: results include the page cache
  }
}

/** Runs a command, returns wall seconds and the peak RSS of its process tree (MiB). */
function timed(cmd: string, a: string[]): Promise<{ seconds: number; peakMiB: number }> {
  return new Promise((resolvePromise, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, a, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.on('data', (d) => (stderr += d));
    let peak = 0;
    const poll = setInterval(() => {
      peak = Math.max(peak, treeRss(c.pid!));
    }, 50);
    c.on('exit', (code) => {
      clearInterval(poll);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code !== 0) reject(new Error(`${cmd} ${a.join(' ')} failed (${code}): ${stderr.slice(-2000)}`));
      else resolvePromise({ seconds, peakMiB: peak / 1024 });
    });
  });
}

/** The program a process runs, if it can be read. */
function exeOf(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/**
 * Current RSS (KiB) of a process and all its descendants. A child that still runs the root's
 * program is one forked and not yet exec'd (bootline starts no node children while copying):
 * its pages are the parent's, shared, and counting them again showed node's pages twice
 * (152-157 MiB peaks, a 39 MiB "node" child beside node's 113 MiB).
 */
function treeRss(pid: number): number {
  let sum = 0;
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      // gone
    }
  }
  const rootExe = exeOf(pid);
  const walk = (p: number) => {
    if (p !== pid && rootExe !== undefined && exeOf(p) === rootExe) return;
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      sum += m ? Number(m[1]) : 0;
    } catch {
      // gone
    }
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return sum;
}

/**
 * `bootline serve` on a data dir in the cache, each format registered as image `bench-<format>`
 * (`image add` hard-links the file; its bmap goes beside it): both tools fetch from the server
 * devices fetch from. Its own process: a server in the benchmark's would share its event loop
 * with the RSS polling, and a plain createReadStream server took 2.0-2.2 s to send the raw image
 * to curl, where this one takes 0.8-1.3 s.
 */
async function serveImages(formats: string[]): Promise<{ server: LineServer; url: (f: string) => string }> {
  const data = join(CACHE, 'server');
  const served = (f: string) => join(data, 'images', `bench-${f}`, basename(file(f)));
  for (const f of formats) {
    // A rebuilt image is a new file: the link to the old one is registered again.
    if (existsSync(served(f)) && statSync(served(f)).ino === statSync(file(f)).ino) continue;
    log(`registering ${basename(file(f))} with the server (once)`);
    sh(process.execPath, [BUNDLE, 'image', 'add', '--data', data, '--name', `bench-${f}`, '--replace', file(f)]);
  }
  const server = await startLineServer({ cli: BUNDLE, data, logLevel: 'warn' });
  return { server, url: (f) => `${server.url}/images/bench-${f}/${basename(file(f))}` };
}

// ---------------------------------------------------------------------------------

const img = buildImage();
const mapped = /<MappedBlocksCount>\s*(\d+)/.exec(readFileSync(`${img}.bmap`, 'utf8'))![1]!;
const blockSize = /<BlockSize>\s*(\d+)/.exec(readFileSync(`${img}.bmap`, 'utf8'))![1]!;
const mappedBytes = Number(mapped) * Number(blockSize);
const backing = join(CACHE, 'target.disk');
sh('truncate', ['-s', String(SIZE_GIB * 1024 * 1024 * 1024 + 64 * 1024 * 1024), backing]);
// With direct I/O the loop device hands its writes to the backing file past the page cache, as a
// disk takes them by DMA. A buffered one first copies every byte into the backing file's page
// cache and has it written back later: kernel work a real disk does not cost, done on the same
// two cores as decompression. Measured, the .xz onto the same backing file, alternating 3 runs
// each: 14.2-15.5 s with direct I/O, 15.9-17.9 s buffered.
const loop = sh('losetup', ['-f', '--show', `--direct-io=${LOOP_IO === 'direct' ? 'on' : 'off'}`, backing]).trim();
if (LOOP_IO === 'direct' && readFileSync(`/sys/block/${basename(loop)}/loop/dio`, 'utf8').trim() !== '1') {
  log(`${loop} could not use direct I/O on ${backing}: it runs buffered`);
}
function file(f: string): string {
  return f === 'raw' ? img : `${img}.${f}`;
}
const { server, url } = await serveImages(TRANSPORTS.includes('http') ? FORMATS : []);

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
type Row = { format: string; transport: string; bmaptool: number[]; bootline: number[]; rss: number[]; limit: number[] };
const rows: Row[] = [];
try {
  // The limit: decompression alone, and writing the raw mapped data alone.
  // Decompression by the fastest program on this machine, each round the faster where there are
  // two (gzip: igzip, as bootline with a bmap; xz: xz -T0 and 7-Zip on every core, which hold
  // whole blocks per thread, where bootline's lanes keep memory bounded).
  const decompress: Record<string, string[][]> = {
    gz: [['igzip', '-dc']],
    xz: [['xz', '-dc', '-T0'], ['7zz', 'e', '-so', '-bso0', '-bsp0']],
    zst: [['zstd', '-dc']],
  };
  const rawWrite = [...AGENT_NODE_OPTIONS, BUNDLE, 'image', '-q', 'copy', '--no-verify', img, loop];
  for (const transport of TRANSPORTS) {
    for (const f of FORMATS) {
      const row: Row = { format: f, transport, bmaptool: [], bootline: [], rss: [], limit: [] };
      const src = transport === 'http' ? url(f) : file(f);
      // Each round measures the limit next to the copies: this VM's disk has run twice as fast
      // in one quarter hour as in the next, and a limit measured once, first, then flattered
      // or wronged every copy after it.
      for (let i = 0; i < RUNS; i++) {
        const tag = `${f} ${transport} #${i + 1}`;
        dropCaches();
        const m = await timed('bmaptool', ['-q', 'copy', src, loop]);
        row.bmaptool.push(m.seconds);
        log(`bmaptool ${tag}: ${m.seconds.toFixed(2)} s`);
        dropCaches();
        const b = await timed(process.execPath, [...AGENT_NODE_OPTIONS, BUNDLE, 'image', '-q', 'copy', src, loop]);
        row.bootline.push(b.seconds);
        row.rss.push(b.peakMiB);
        // Each run, so that the spread behind a median can be reported.
        log(`bootline ${tag}: ${b.seconds.toFixed(2)} s, peak ${b.peakMiB.toFixed(0)} MiB`);
        dropCaches();
        const w = (await timed(process.execPath, rawWrite)).seconds;
        const d: number[] = [];
        for (const cmd of decompress[f] ?? []) {
          dropCaches();
          d.push((await timed('sh', ['-c', `${cmd.join(' ')} '${file(f)}' > /dev/null`])).seconds);
        }
        row.limit.push(Math.max(w, ...(d.length ? [Math.min(...d)] : [])));
        log(`limit ${tag}: raw write ${w.toFixed(2)} s${d.map((s, k) => `, ${decompress[f]?.[k]?.[0]} ${s.toFixed(2)} s`).join('')}`);
      }
      rows.push(row);
    }
  }
} finally {
  await server.stop();
  sh('losetup', ['-d', loop]);
}

const cpu = cpus()[0]?.model ?? 'unknown CPU';
const lines = [
  `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.version}, bmaptool ${sh('bmaptool', ['--version']).trim().split(' ').pop()}.`,
  `Image: ${SIZE_GIB} GiB GPT (64 MiB FAT ESP + ext4 root of real files), ${(mappedBytes / 2 ** 30).toFixed(2)} GiB mapped; target: a loop device (${LOOP_IO === 'direct' ? 'direct I/O to its backing file' : 'buffered'}); page cache dropped before each run; median of ${RUNS}. Over HTTP, both tools fetch from \`bootline serve\` (its own process, on loopback).`,
  'Each round runs bmaptool, bootline and the limit\'s parts one after another; the ratios are medians of each round\'s own ratios, so that a machine that speeds up or slows down between rounds does not skew them.',
  `bootline runs as its launchers start it (\`node ${AGENT_NODE_OPTIONS.join(' ')}\`, src/agent/node-options.ts).`,
  'Peak RSS is of the whole process tree: node plus its decompressors. The limit is the slower of decompression alone (`igzip -dc` for gz, the faster of `xz -dc -T0` and `7zz e -so` for xz, `zstd -dc` for zst) and writing the raw mapped data alone (`bootline image copy --no-verify` of the raw image).',
  '',
  '| format | source | bmaptool copy (s) | bootline image copy (s) | speed-up | bootline peak RSS (MiB) | limit (s) | bootline vs limit |',
  '|---|---|---:|---:|---:|---:|---:|---:|',
  ...rows.map((r) => {
    const speedUp = median(r.bmaptool.map((t, i) => t / r.bootline[i]!));
    const overLimit = median(r.bootline.map((t, i) => t / r.limit[i]! - 1));
    return `| ${r.format} | ${r.transport} | ${median(r.bmaptool).toFixed(2)} | ${median(r.bootline).toFixed(2)} | ${speedUp.toFixed(2)}× | ${Math.max(...r.rss).toFixed(0)} | ${median(r.limit).toFixed(2)} | ${(overLimit * 100).toFixed(0)}% |`;
  }),
];
process.stdout.write(lines.join('\n') + '\n');
if (args.out) writeFileSync(args.out, `# Benchmark: image copy\n\n\`npm run bench:image\` (bench/image.ts)\n\n${lines.join('\n')}\n`);
