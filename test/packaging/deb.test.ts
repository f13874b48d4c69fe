// `npm run package:deb` on a real Debian 13 (trixie): the .deb installs with dpkg into a root
// made by mmdebstrap (variant apt, plus the package's Depends), enables its unit, and its
// agent runs `--version` and a small pipeline on trixie's own nodejs; lintian finds no
// errors. Needs root, mmdebstrap, lintian and Debian's mirror; the trixie root is kept as a
// tarball in the lab cache (rebuilt when the Depends change or after a week), so that a run
// costs an extraction, not a bootstrap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile as execFileCb, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readlinkSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_LAB_CACHE } from '../../src/lab/debian-packages.ts';
import { AGENT_NODE_OPTIONS } from '../../src/agent/node-options.ts';
import { tempDir } from '../helpers.ts';

const execFile = promisify(execFileCb);
const ROOT = join(import.meta.dirname, '..', '..');
const VERSION = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;
const MIRROR = 'http://deb.debian.org/debian';
const WEEK = 7 * 24 * 3600 * 1000;

/** The package names of the control file's Depends (versions and alternatives' tails dropped). */
function depends(control: string): string[] {
  const line = /^Depends: (.*)$/m.exec(control)?.[1] ?? '';
  return line.split(',').map((d) => d.split('|')[0]!.trim().replace(/\s*\(.*\)$/, '')).filter(Boolean);
}

/** A trixie root with `include`, as a tarball in the lab cache (built with mmdebstrap when missing or old). */
async function trixieRoot(include: string[], note: (s: string) => void): Promise<string> {
  const key = createHash('sha256').update(`trixie apt ${include.join(',')}`).digest('hex').slice(0, 12);
  const dir = join(DEFAULT_LAB_CACHE, 'trixie');
  const tar = join(dir, `root-${key}.tar`);
  if (existsSync(tar) && Date.now() - statSync(tar).mtimeMs < WEEK) return tar;
  const debs = join(dir, 'debs');
  mkdirSync(debs, { recursive: true });
  const t0 = Date.now();
  await execFile('mmdebstrap', [
    '--quiet', '--format=tar', '--variant=apt', `--include=${include.join(',')}`, '--skip=essential/unlink',
    '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/', `--setup-hook=sync-in ${debs} /var/cache/apt/archives/`,
    `--customize-hook=sync-out /var/cache/apt/archives ${debs}`, '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
    'trixie', `${tar}.part`, MIRROR,
  ], { maxBuffer: 64 << 20 });
  renameSync(`${tar}.part`, tar);
  note(`mmdebstrap trixie (${include.join(', ')}): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return tar;
}

test('the .deb installs on Debian 13 with dpkg, enables its unit, and runs --version and a pipeline on trixie\'s nodejs; lintian finds no errors', { timeout: 600_000 }, async () => {
  const figures: string[] = [];
  const note = (s: string) => {
    figures.push(s);
    process.stderr.write(`deb: ${s}\n`);
  };
  const t0 = Date.now();
  const out = tempDir('bootline-deb-');
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'package-deb.mjs')], { cwd: ROOT, stdio: 'ignore' });
  const deb = join(ROOT, 'dist', `bootline-agent_${VERSION}_all.deb`);
  assert.ok(existsSync(deb), deb);
  const fields = execFileSync('dpkg-deb', ['--field', deb], { encoding: 'utf8' });
  assert.match(fields, /^Package: bootline-agent$/m);
  assert.match(fields, /^Depends: nodejs \(>= 20\)/m);
  assert.match(fields, /^Recommends: .*dmidecode.*tpm2-tools/m);
  const contents = execFileSync('dpkg-deb', ['--contents', deb], { encoding: 'utf8' });
  for (const f of ['./usr/bin/bootline', './usr/lib/bootline/bootline.mjs', './usr/lib/systemd/system/bootline.service', './etc/bootline/config.yaml', './usr/share/doc/bootline-agent/copyright'])
    assert.match(contents, new RegExp(` ${f.replace(/\./g, '\\.')}$`, 'm'));
  assert.doesNotMatch(contents, /^\S+ (?!root\/root)/m, 'every file root-owned');

  // lintian is slow (tens of seconds): it runs while the root is prepared.
  const lintian = execFile('lintian', ['--tag-display-limit', '0', deb], { maxBuffer: 16 << 20 }).then(
    (r) => r.stdout,
    (e: { stdout?: string; code?: number }) => (e.code === 1 ? (e.stdout ?? '') : Promise.reject(e)),
  );

  const include = depends(fields);
  const tar = await trixieRoot(include, note);
  const root = join(out, 'root');
  mkdirSync(root);
  execFileSync('tar', ['-C', root, '-xf', tar]);
  copyFileSync(deb, join(root, 'tmp', 'agent.deb'));
  const inRoot = (...args: string[]) => execFileSync('chroot', [root, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  inRoot('dpkg', '-i', '/tmp/agent.deb');
  assert.match(inRoot('dpkg-query', '-W', '-f', '${Status} ${Version}', 'bootline-agent'), new RegExp(`^install ok installed ${VERSION.replace(/\./g, '\\.')}$`));
  assert.match(readFileSync(join(root, 'etc', 'os-release'), 'utf8'), /VERSION_CODENAME=trixie/);
  const wants = join(root, 'etc', 'systemd', 'system', 'multi-user.target.wants', 'bootline.service');
  // deb-systemd-helper's link is absolute inside the root: read it, do not follow it from here.
  assert.match(readlinkSync(wants), /\/systemd\/system\/bootline\.service$/, 'the unit is enabled');

  assert.equal(inRoot('bootline', '--version').trim(), VERSION);
  // The launcher gives node the agent's options (written out in scripts/package-deb.mjs).
  assert.match(readFileSync(join(root, 'usr', 'bin', 'bootline'), 'utf8'), new RegExp(`^exec /usr/bin/node ${AGENT_NODE_OPTIONS.join(' ')} /usr/lib/bootline/bootline\\.mjs "\\$@"$`, 'm'));
  assert.match(inRoot('node', '--version'), /^v(2\d|[3-9]\d)\./, "trixie's nodejs");

  writeFileSync(join(root, 'tmp', 'cmdline'), 'quiet\n');
  writeFileSync(
    join(root, 'tmp', 'pipeline.yaml'),
    [
      'unattended: true',
      'tasks:',
      '  - name: hello',
      '    script: /bin/sh',
      '    args: ["-c", "echo hello from $(. /etc/os-release; echo $VERSION_CODENAME) on node $(node --version)"]',
      '  - name: inventory',
      '    builtin: collect-inventory',
      '    with: { output: /tmp/inventory.json }',
      'reporters: [{ type: console, mode: plain }]',
      '',
    ].join('\n'),
  );
  inRoot('bootline', 'run', '--config', '/tmp/pipeline.yaml', '--cmdline', '/tmp/cmdline', '--state-dir', '/tmp/state', '--events', '/tmp/events.ndjson');
  const events = readFileSync(join(root, 'tmp', 'events.ndjson'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; task?: string; status?: string; message?: string });
  assert.deepEqual(events.filter((e) => e.type === 'task-end').map((e) => [e.task, e.status]), [['hello', 'ok'], ['inventory', 'ok']]);
  assert.ok(events.some((e) => e.type === 'log' && /^hello from trixie on node v\d+/.test(e.message ?? '')));
  // In a chroot without /proc and /sys the inventory says what it could not read, and the run still succeeds.
  const inv = JSON.parse(readFileSync(join(root, 'tmp', 'inventory.json'), 'utf8')) as { agentVersion: string; errors: { field: string }[] };
  assert.equal(inv.agentVersion, VERSION);
  assert.ok(inv.errors.some((e) => e.field === 'cpus'));

  const report = await lintian;
  note(`lintian: ${report.trim().split('\n').filter(Boolean).length} tags (${report.match(/^E: /gm)?.length ?? 0} errors)`);
  assert.doesNotMatch(report, /^E: /m, report);
  note(`whole test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
