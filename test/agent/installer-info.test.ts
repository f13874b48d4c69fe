// run-start tells the server which installer the device booted and how long that took.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { runPipeline } from '../../src/agent/runner.ts';
import { readInstallerInfo } from '../../src/agent/installer-info.ts';
import { parseConfigText } from '../../src/config/yaml-file.ts';
import { mergeLayers } from '../../src/config/merge.ts';
import { validateConfig } from '../../src/config/validate.ts';
import { RunStartEvent, type BootlineEvent } from '../../src/events.ts';
import { installerInfoJson } from '../../src/lab/installer/pack.ts';
import { tempDir } from '../helpers.ts';

async function runStart(dir: string): Promise<Extract<BootlineEvent, { type: 'run-start' }>> {
  const config = validateConfig(mergeLayers([parseConfigText(`tasks:\n  - { name: t, script: /bin/true, workdir: ${dir} }\n`, 'test.yaml')]), {});
  const events: BootlineEvent[] = [];
  await runPipeline({
    config,
    stateDir: join(dir, 'state'),
    fresh: true,
    builtins: {},
    sinks: [(e) => events.push(e)],
    interaction: { canAsk: false, confirm: async () => false, waitForKey: async () => false },
    version: 'test',
  });
  const start = events.find((e) => e.type === 'run-start');
  assert.ok(start && start.type === 'run-start');
  assert.ok(Value.Check(RunStartEvent, start), 'run-start matches its schema');
  return start;
}

test('run-start carries the installer (version, kernel, initramfs size, boot time) when the agent runs in it', async (t) => {
  const dir = tempDir();
  const info = join(dir, 'installer.json');
  // The file exactly as the builder writes it, size field padded.
  writeFileSync(info, installerInfoJson({ version: '0.1.0', kernel: '6.1.0-57-amd64', initramfsBytes: 49017661 }));
  process.env.BOOTLINE_INSTALLER_INFO = info;
  t.after(() => delete process.env.BOOTLINE_INSTALLER_INFO);
  const start = await runStart(dir);
  assert.equal(start.installer?.version, '0.1.0');
  assert.equal(start.installer?.kernel, '6.1.0-57-amd64');
  assert.equal(start.installer?.initramfsBytes, 49017661);
  assert.equal(start.installer?.bootSeconds, start.bootSeconds, 'boot time from /proc/uptime');
});

test('run-start has no installer outside the installer, and a broken installer.json is ignored', async (t) => {
  const dir = tempDir();
  process.env.BOOTLINE_INSTALLER_INFO = join(dir, 'missing.json');
  t.after(() => delete process.env.BOOTLINE_INSTALLER_INFO);
  assert.equal((await runStart(dir)).installer, undefined);
  writeFileSync(join(dir, 'bad.json'), '{"version": 1}');
  assert.equal(await readInstallerInfo(3, join(dir, 'bad.json')), undefined);
  writeFileSync(join(dir, 'bad2.json'), 'not json');
  assert.equal(await readInstallerInfo(3, join(dir, 'bad2.json')), undefined);
});
