// The KVM probe on this machine, with real QEMU: it answers within seconds, gives a reason
// that fits the machine (TCG where KVM is broken or missing, KVM where it works), and the
// probe itself is sound (under TCG the same boot sector makes QEMU exit at once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chooseAccel, probeArgs, probeBootSector, PROBE_EXIT_STATUS, runKvmProbe } from '../../src/lab/vm/kvm-probe.ts';
import { onPath } from '../../src/which.ts';
import { tempDir } from '../helpers.ts';

const skip = onPath('qemu-system-x86_64') ? false : 'needs qemu-system-x86 (scripts/setup.sh)';

function devKvm(): 'missing' | 'no-access' | 'usable' {
  if (!existsSync('/dev/kvm')) return 'missing';
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return 'usable';
  } catch {
    return 'no-access';
  }
}

test('the probe says KVM or TCG within seconds, with a reason that fits this machine', { skip, timeout: 30_000 }, async (t) => {
  const started = Date.now();
  const v = await runKvmProbe();
  const ms = Date.now() - started;
  t.diagnostic(`verdict: ${v.accel} (${v.reason}: ${v.detail}) in ${ms} ms`);
  assert.ok(ms < 10_000, `the probe took ${ms} ms`);
  const node = devKvm();
  if (v.accel === 'kvm') {
    assert.equal(v.reason, 'kvm-works');
    assert.equal(node, 'usable');
  } else if (node === 'missing') assert.equal(v.reason, 'no-dev-kvm');
  else if (node === 'no-access') assert.equal(v.reason, 'dev-kvm-not-accessible');
  // /dev/kvm is there and usable, yet no guest ran: it hung, or QEMU refused (here: an MSR assertion with -cpu host).
  else assert.ok(v.reason === 'kvm-guest-hangs' || v.reason === 'kvm-refused', v.reason);
});

test('the probe is sound: under TCG its boot sector makes QEMU exit with the probe status at once', { skip, timeout: 30_000 }, () => {
  const dir = tempDir('bootline-kvm-probe-test-');
  const sector = join(dir, 'probe.img');
  writeFileSync(sector, probeBootSector());
  const r = spawnSync('qemu-system-x86_64', probeArgs(sector, 'tcg'), { timeout: 20_000, encoding: 'utf8' });
  assert.equal(r.status, PROBE_EXIT_STATUS, r.stderr);
});

test('the verdict is cached per kernel and QEMU binary, and BOOTLINE_LAB_ACCEL overrides it', { skip, timeout: 30_000 }, async () => {
  const cacheFile = join(tempDir('bootline-kvm-cache-'), 'sub', 'kvm-verdict.json');
  const first = await chooseAccel({ cacheFile, env: {} });
  const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key: string; verdict: unknown };
  assert.deepEqual(cached.verdict, first);
  assert.match(cached.key, /"kernel"/);
  const started = Date.now();
  assert.deepEqual(await chooseAccel({ cacheFile, env: {} }), first);
  assert.ok(Date.now() - started < 500, 'the second answer comes from the cache');
  assert.deepEqual(await chooseAccel({ cacheFile, env: { BOOTLINE_LAB_ACCEL: 'tcg' } }), { accel: 'tcg', reason: 'forced', detail: 'BOOTLINE_LAB_ACCEL=tcg' });
});
