#!/usr/bin/env node
// npm run package:deb -> dist/bootline-agent_<version>_all.deb, built with dpkg-deb from
// packaging/deb/ (control, maintainer scripts, default config, copyright header), the
// bundled agent (dist/bootline.mjs) and the systemd unit. Reproducible: file times are
// SOURCE_DATE_EPOCH (default: the last commit's time), owners root:root.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';

const ROOT = join(import.meta.dirname, '..');
const SRC = join(ROOT, 'packaging', 'deb');

export function packageDeb({ out = join(ROOT, 'dist'), bundle = join(ROOT, 'dist', 'bootline.mjs'), log = (l) => process.stdout.write(`${l}\n`) } = {}) {
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: run "npm run build" first`);
  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? gitEpoch() ?? 0);
  const tree = mkdtempSync(join(tmpdir(), 'bootline-deb-'));
  try {
    const put = (path, data, mode = 0o644) => {
      const p = join(tree, path);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, data);
      chmodSync(p, mode);
    };
    const doc = 'usr/share/doc/bootline-agent';
    put('usr/lib/bootline/bootline.mjs', readFileSync(bundle), 0o755);
    // The node options are src/agent/node-options.ts's (this script runs without TypeScript).
    put('usr/bin/bootline', '#!/bin/sh\n# The bootline agent and tools, on Debian\'s node.\nexec /usr/bin/node --max-semi-space-size=1 /usr/lib/bootline/bootline.mjs "$@"\n', 0o755);
    put('usr/lib/systemd/system/bootline.service', readFileSync(join(ROOT, 'packaging', 'systemd', 'bootline.service')));
    put('etc/bootline/config.yaml', readFileSync(join(SRC, 'config.yaml')));
    put(`${doc}/copyright`, copyright(bundle));
    put(`${doc}/changelog.gz`, gzipSync(readFileSync(join(SRC, 'changelog')), { level: 9 }));
    put(`${doc}/README.md`, readFileSync(join(ROOT, 'README.md')));
    const dataFiles = files(tree);
    const installedKb = dataFiles.reduce((n, f) => n + Math.ceil(statSync(join(tree, f)).size / 1024), 0);

    const control = readFileSync(join(SRC, 'control'), 'utf8').replace('@VERSION@', version).replace('@INSTALLED_SIZE@', String(installedKb));
    put('DEBIAN/control', control);
    put('DEBIAN/conffiles', '/etc/bootline/config.yaml\n');
    for (const s of ['postinst', 'prerm', 'postrm']) put(`DEBIAN/${s}`, readFileSync(join(SRC, s)), 0o755);
    put('DEBIAN/md5sums', dataFiles.map((f) => `${createHash('md5').update(readFileSync(join(tree, f))).digest('hex')}  ${f}\n`).join(''));

    for (const p of [...files(tree, true)].reverse()) utimesSync(join(tree, p), epoch, epoch);
    utimesSync(tree, epoch, epoch);
    mkdirSync(out, { recursive: true });
    const deb = join(out, `bootline-agent_${version}_all.deb`);
    execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', tree, deb], { env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) }, stdio: ['ignore', 'ignore', 'inherit'] });
    log(`built ${relative(process.cwd(), deb) || deb} (${(statSync(deb).size / 1e6).toFixed(1)} MB)`);
    return deb;
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
}

/** Paths under dir, relative; with `all`, directories too (parents first). */
function files(dir, all = false, base = dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (all) out.push(relative(base, p));
      out.push(...files(p, all, base));
    } else if (all || !relative(base, p).startsWith('DEBIAN/')) out.push(relative(base, p));
  }
  return out.filter((f) => all || !f.startsWith('DEBIAN'));
}

function gitEpoch() {
  try {
    return execFileSync('git', ['log', '-1', '--format=%ct'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/**
 * The copyright file: packaging/deb/copyright (bootline's own terms and the licence texts),
 * with the npm packages the bundle carries listed in the header's Comment.
 */
function copyright(bundle) {
  const text = readFileSync(bundle, 'utf8');
  const names = new Set();
  for (const m of text.matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)) names.add(m[1]);
  const lines = [...names].sort().map((name) => {
    const p = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'));
    return ` ${name} ${p.version} (${typeof p.license === 'string' ? p.license : 'see its package'})`;
  });
  return readFileSync(join(SRC, 'copyright'), 'utf8').replace('@BUNDLED@', lines.join('\n'));
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  try {
    packageDeb();
  } catch (e) {
    process.stderr.write(`package:deb: ${e.message}\n`);
    process.exit(1);
  }
}
