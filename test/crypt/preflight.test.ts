// encrypt-disk's checks before anything is written: a missing TPM (refused, or skipped
// with encryptionOptional), no server for the recovery key, and PCR 7 while Secure
// Boot is still in Setup Mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { preflight } from '../../src/agent/tasks/encrypt-disk/preflight.ts';
import { TaskError } from '../../src/agent/tasks/builtin.ts';
import { tempDir } from '../helpers.ts';

const root = tempDir('bootline-preflight-');
const GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

function machine(name: string, o: { tpm?: '1.2' | '2'; rm?: boolean; setupMode?: number; secureBoot?: number }) {
  const sys = join(root, name, 'sys');
  const dev = join(root, name, 'dev');
  const efivars = join(root, name, 'efivars');
  mkdirSync(dev, { recursive: true });
  mkdirSync(efivars, { recursive: true });
  if (o.tpm) {
    mkdirSync(join(sys, 'class/tpm/tpm0'), { recursive: true });
    writeFileSync(join(sys, 'class/tpm/tpm0/tpm_version_major'), `${o.tpm === '2' ? 2 : 1}\n`);
    if (o.rm !== false) writeFileSync(join(dev, 'tpmrm0'), '');
  }
  const flag = (n: string, v: number | undefined) => v !== undefined && writeFileSync(join(efivars, `${n}-${GLOBAL}`), Buffer.from([6, 0, 0, 0, v]));
  flag('SetupMode', o.setupMode);
  flag('SecureBoot', o.secureBoot);
  return { sys, dev, efivars };
}

const logs: string[] = [];
const env = (m: ReturnType<typeof machine>, hasServer = true) => ({ ...m, hasServer, log: (_l: string, s: string) => logs.push(s) });
const base = { partitions: ['data:/data:reencrypt'], recoveryKey: 'escrow' as const };

test('no TPM: refused before anything is written, or skipped when encryption is optional', async () => {
  const none = machine('none', {});
  await assert.rejects(preflight(base, env(none)), (e: Error) => e instanceof TaskError && /cannot encrypt: no TPM .*nothing was written.*encryptionOptional: true/.test(e.message));
  assert.equal(await preflight({ ...base, encryptionOptional: true }, env(none)), 'skip');
  assert.match(logs.at(-1)!, /not encrypting: no TPM/);
  await assert.rejects(preflight(base, env(machine('old', { tpm: '1.2' }))), /TPM is version 1, and LUKS2 TPM keyslots need TPM 2.0/);
  await assert.rejects(preflight(base, env(machine('norm', { tpm: '2', rm: false }))), /no resource manager device/);
});

test('a recovery key to escrow needs a server; PCR 7 needs Secure Boot already on', async () => {
  const ok = machine('ok', { tpm: '2', setupMode: 1, secureBoot: 0 });
  await assert.rejects(preflight(base, env(ok, false)), /not enrolled with a line server.*recoveryKey: none/);
  assert.equal(await preflight({ ...base, recoveryKey: 'none' }, env(ok, false)), 'encrypt');
  await assert.rejects(preflight({ ...base, pcrs: [7] }, env(ok)), (e: Error) => /cannot bind the TPM keyslot to PCR 7 now: Secure Boot is off and in Setup Mode/.test(e.message));
  assert.equal(await preflight({ ...base, pcrs: [7] }, env(machine('sb', { tpm: '2', setupMode: 0, secureBoot: 1 }))), 'encrypt');
  assert.equal(await preflight({ partitions: ['data::noencrypt'] }, env(machine('n', {}))), 'skip');
  await assert.rejects(preflight({ partitions: ['data:/data'] }, env(ok)), /partitions\[0\]: "data:\/data" is not/);
});
