import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { AGENT_NODE_OPTIONS } from '../../src/agent/node-options.ts';

const UNIT = join(import.meta.dirname, '..', '..', 'packaging', 'systemd', 'bootline.service');

test('the installer unit runs the agent on the console and passes systemd-analyze verify', (t) => {
  const text = readFileSync(UNIT, 'utf8');
  assert.ok(text.includes(`\nExecStart=/usr/bin/node ${AGENT_NODE_OPTIONS.join(' ')} /usr/lib/bootline/bootline.mjs run `), "the agent's node options");
  assert.match(text, /^TTYPath=\/dev\/tty1$/m);
  assert.match(text, /^StandardInput=tty-force$/m);
  const r = spawnSync('systemd-analyze', ['verify', UNIT], { encoding: 'utf8' });
  if (r.error) return t.skip('systemd-analyze is not installed');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '');
});
