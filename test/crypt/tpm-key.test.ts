// The temporary key of in-place encryption, derived by a real (software) TPM: the same after
// a restart of the TPM (a power cut), different for another partition or another TPM.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { tpmDerivedKey } from '../../src/crypt/tpm.ts';
import { onPath } from '../../src/which.ts';
import { tempDir } from '../helpers.ts';

const dir = tempDir('bootline-tpm-key-');
const running: ChildProcess[] = [];
after(() => {
  for (const p of running) if (p.exitCode === null) p.kill('SIGKILL');
});

/** A swtpm on a state dir (made on first use); returns its TCTI and a stop function. */
async function swtpm(state: string): Promise<{ tcti: string; stop(): Promise<void> }> {
  mkdirSync(state, { recursive: true });
  const port = 20000 + Math.floor(Math.random() * 20000);
  const p = spawn('swtpm', ['socket', '--tpm2', '--tpmstate', `dir=${state}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`, '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init,startup-clear'], { stdio: 'ignore' });
  running.push(p);
  const tcti = `swtpm:host=127.0.0.1,port=${port}`;
  for (let i = 0; i < 50; i++) {
    try {
      execFileSync('tpm2_getcap', ['properties-fixed'], { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, stdio: 'ignore' });
      return { tcti, stop: () => new Promise((r) => (p.once('exit', () => r()), p.kill('SIGKILL'))) };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error('swtpm did not answer');
}

const skip = ['swtpm', 'tpm2_createprimary', 'tpm2_hmac'].filter((t) => !onPath(t));

test('the TPM makes the same key again after it was cut off, another for another partition, and another TPM makes another', { skip: skip.length > 0 && `needs ${skip.join(', ')}` }, async () => {
  const a = await swtpm(join(dir, 'a'));
  const k1 = await tpmDerivedKey('c0de0000-0000-4000-8000-000000000013', { tcti: a.tcti, dir });
  assert.match(k1, /^[0-9a-f]{64}$/);
  assert.notEqual(await tpmDerivedKey('c0de0000-0000-4000-8000-000000000014', { tcti: a.tcti, dir }), k1);
  await a.stop();
  const again = await swtpm(join(dir, 'a'));
  assert.equal(await tpmDerivedKey('c0de0000-0000-4000-8000-000000000013', { tcti: again.tcti, dir }), k1, 'same TPM state: same key');
  await again.stop();
  const b = await swtpm(join(dir, 'b'));
  assert.notEqual(await tpmDerivedKey('c0de0000-0000-4000-8000-000000000013', { tcti: b.tcti, dir }), k1, 'another TPM: another key');
  await b.stop();
});
