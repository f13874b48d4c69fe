// meta-bootline's configuration generator (isar/meta-bootline/lib/bootline_isar/config.py,
// what the bbclass runs inside BitBake) on sample Isar settings: the agent's own loader
// accepts its output, its tasks are those the agent makes of the same TARGET_BOOTSTRAPPER_*
// lines, and a bad setting is refused naming the variable. BitBake itself does not run here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load.ts';
import { parseIsarConf } from '../../src/config/isar-conf.ts';
import { builtins } from '../../src/agent/tasks/registry.ts';
import { tempDir } from '../helpers.ts';

const LAYER = join(import.meta.dirname, '..', '..', 'isar', 'meta-bootline');
const GENERATOR = join(LAYER, 'lib', 'bootline_isar', 'config.py');
const dir = tempDir('bootline-isar-');

function generate(vars: Record<string, string>, flags: Record<string, Record<string, string>>) {
  const settings = join(dir, `settings-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(settings, JSON.stringify({ vars, flags }));
  return spawnSync('python3', [GENERATOR, settings], { encoding: 'utf8' });
}

// What an Isar project has today (target-bootstrapper.bb's defaults plus its own task), and
// what it adds for bootline.
const VARS = {
  TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: 'deploy-image device-info-collector',
  INSTALLER_UNATTENDED: '1',
  INSTALLER_TARGET_DEVICE: '/dev/nvme0n1,/dev/sda',
  INSTALLER_TARGET_OVERWRITE: 'OVERWRITE',
  INSTALLER_UNATTENDED_ABORT_ENABLE: '1',
  INSTALLER_UNATTENDED_ABORT_TIMEOUT: '5',
  BOOTLINE_SERVER: 'http://line-server.example:8080',
  BOOTLINE_TOKEN: 'ble_sample',
  BOOTLINE_REPORTERS: 'console psplash http=https://mes.example/bootline/events',
  BOOTLINE_INVENTORY: '1',
  BOOTLINE_ON_SUCCESS: 'reboot',
};
const FLAGS = {
  'TARGET_BOOTSTRAPPER_TASK_deploy-image': { script: 'deploy-image-wic.sh', workdir: '/usr/bin', effort: '2' },
  'TARGET_BOOTSTRAPPER_TASK_device-info-collector': { script: 'device-info-collector.sh', workdir: '/usr/bin', effort: '1', timeout: '600' },
};

test("the generated configuration is accepted by the agent's loader, with Isar's kernel parameters on top", async () => {
  const r = generate(VARS, FLAGS);
  assert.equal(r.status, 0, r.stderr);
  const file = join(dir, 'isar.yaml');
  writeFileSync(file, r.stdout);
  // The installer's kernel command line, as Isar's installer image writes it.
  const cmdline = join(dir, 'cmdline');
  writeFileSync(cmdline, 'quiet installer.unattended installer.image.uri=/install/product.wic.zst installer.target.dev=/dev/vda installer.target.overwrite=OVERWRITE\n');
  const { config } = await loadConfig({ config: file, cmdline, builtins, skipScriptCheck: true });
  assert.deepEqual(config.tasks.map((t) => [t.name, t.kind]), [['deploy-image', 'builtin'], ['device-info-collector', 'script'], ['collect-inventory', 'builtin']]);
  const deploy = config.tasks[0]!;
  assert.equal(deploy.effort, 2);
  assert.deepEqual(deploy.with, { ...deploy.with, image: '/install/product.wic.zst', target: ['/dev/vda'], overwrite: 'OVERWRITE' }, 'the kernel command line overrules, as in Isar');
  const collector = config.tasks[1]!;
  assert.equal(collector.script, 'device-info-collector.sh');
  assert.equal(collector.workdir, '/usr/bin');
  assert.equal(collector.timeout, 600);
  assert.deepEqual(config.tasks[2]!.with, { ...config.tasks[2]!.with, installMedium: '/install' });
  assert.equal(config.unattended, true);
  assert.deepEqual(config.abort, { enable: true, timeout: 5 });
  assert.equal(config.server, 'http://line-server.example:8080');
  assert.deepEqual(config.reporters.map((x) => x.type), ['console', 'psplash', 'http']);
  assert.equal(config.onSuccess.action, 'reboot');

  // Without the kernel parameters, the INSTALLER_* values are the target and the policy.
  const image = join(dir, 'with-image.yaml');
  const r2 = generate({ ...VARS, BOOTLINE_IMAGE: '/install/product.wic.zst' }, FLAGS);
  writeFileSync(image, r2.stdout);
  const empty = join(dir, 'empty-cmdline');
  writeFileSync(empty, 'quiet\n');
  const c2 = (await loadConfig({ config: image, cmdline: empty, builtins, skipScriptCheck: true })).config;
  assert.deepEqual([c2.tasks[0]!.with?.target, c2.tasks[0]!.with?.overwrite], [['/dev/nvme0n1', '/dev/sda'], 'OVERWRITE']);
});

test("its tasks are the ones the agent makes of the same TARGET_BOOTSTRAPPER_* lines (one mapping, two readers)", async () => {
  const settings = { TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: 'deploy-image device-info-collector hello' };
  const flags = { ...FLAGS, TARGET_BOOTSTRAPPER_TASK_hello: { script: 'hello.sh', args: '--loud  --twice', retries: '2', optional: '1', rerun: 'always' } };
  const generated = join(dir, 'tasks.yaml');
  writeFileSync(generated, generate(settings, flags).stdout);
  const lines = [`TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES = "${settings.TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES}"`];
  for (const [v, f] of Object.entries(flags)) for (const [k, x] of Object.entries(f)) lines.push(`${v}[${k}] = "${x}"`);
  const conf = join(dir, 'local.conf');
  writeFileSync(conf, `${lines.join('\n')}\n`);
  assert.ok(parseIsarConf(readFileSync(conf, 'utf8'), conf).data.tasks);
  const empty = join(dir, 'cmdline-none');
  writeFileSync(empty, 'quiet installer.image.uri=/install/p.wic installer.target.dev=/dev/vda\n');
  const fromGenerator = (await loadConfig({ config: generated, cmdline: empty, builtins, skipScriptCheck: true })).config.tasks;
  const fromAgent = (await loadConfig({ config: conf, cmdline: empty, builtins, skipScriptCheck: true })).config.tasks;
  assert.deepEqual(fromGenerator, fromAgent);
  assert.deepEqual(fromAgent[2]!.args, ['--loud', '--twice']);
});

test('a setting bootline cannot use stops the build with the variable and what to write', () => {
  const cases: [Record<string, string>, Record<string, Record<string, string>>, RegExp][] = [
    [{ ...VARS, INSTALLER_TARGET_OVERWRITE: 'yes' }, FLAGS, /INSTALLER_TARGET_OVERWRITE = "yes": expected OVERWRITE or ABORT/],
    [{ ...VARS, BOOTLINE_REPORTERS: 'console syslog' }, FLAGS, /BOOTLINE_REPORTERS: unknown reporter "syslog"/],
    [{ TARGET_BOOTSTRAPPER_ADDITIONAL_PACKAGES: 'mytask' }, {}, /TARGET_BOOTSTRAPPER_TASK_mytask\[script\] is not set/],
    [VARS, { ...FLAGS, 'TARGET_BOOTSTRAPPER_TASK_device-info-collector': { script: 'x.sh', effort: 'lots' } }, /TARGET_BOOTSTRAPPER_TASK_device-info-collector\[effort\] = "lots": expected a positive number/],
  ];
  for (const [vars, flags, message] of cases) {
    const r = generate(vars, flags);
    assert.equal(r.status, 1);
    assert.match(r.stderr, message);
    assert.equal(r.stdout, '', 'nothing half-written');
  }
});

test('the class hands the generator every variable it reads', () => {
  const cls = readFileSync(join(LAYER, 'classes', 'bootline-installer.bbclass'), 'utf8');
  const listed = new Set(/BOOTLINE_SETTINGS_VARS = "([^"]*)"/.exec(cls.replace(/\\\n/g, ' '))![1]!.split(/\s+/).filter(Boolean));
  const read = new Set([...readFileSync(GENERATOR, 'utf8').matchAll(/get\('([A-Z_]+)'\)/g)].map((m) => m[1]!));
  assert.deepEqual([...read].filter((v) => !listed.has(v)), []);
});
