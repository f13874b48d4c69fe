// The cryptsetup calls that need no device-mapper, run for real on LUKS2 headers in
// files: format with a temporary key, add a recovery key, tokens, wipe a keyslot.
// (Opening volumes and the TPM are tested in a lab guest: test/lab/encryption.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cryptsetup, reencryptPending, ToolError } from '../../src/crypt/cryptsetup.ts';
import { newRecoveryKey, newTemporaryKey } from '../../src/crypt/recovery-key.ts';
import { tempDir } from '../helpers.ts';

const dir = tempDir('bootline-luks-');

function file(name: string, mib: number): string {
  const p = join(dir, name);
  const fd = openSync(p, 'w');
  ftruncateSync(fd, mib * 1024 * 1024);
  closeSync(fd);
  return p;
}

test('a volume made with a temporary key gets a recovery key, and the temporary key is wiped', async () => {
  const dev = file('vol.img', 32);
  const temp = newTemporaryKey();
  await cryptsetup.format(dev, temp, { label: 'data' });
  assert.equal(await cryptsetup.isLuks(dev), true);
  assert.match(await cryptsetup.uuid(dev), /^[0-9a-f-]{36}$/);
  const rk = newRecoveryKey();
  const slot = await cryptsetup.addKey(dev, temp, rk);
  assert.equal(slot, 1);
  await cryptsetup.importToken(dev, { type: 'systemd-recovery', keyslots: [String(slot)] });
  const d = await cryptsetup.dump(dev);
  assert.deepEqual(Object.keys(d.keyslots).sort(), ['0', '1']);
  assert.equal(Object.values(d.tokens)[0]?.type, 'systemd-recovery');
  assert.equal(reencryptPending(d), false);
  // Our keys are random: a cheap PBKDF (not argon2id's 1 GiB) is recorded in the header.
  assert.match(JSON.stringify(d.keyslots), /pbkdf2/);
  assert.equal(await cryptsetup.testKey(dev, temp), true);
  assert.equal(await cryptsetup.testKey(dev, rk), true);
  await cryptsetup.killSlot(dev, 0);
  assert.equal(await cryptsetup.testKey(dev, temp), false);
  assert.equal(await cryptsetup.testKey(dev, rk), true);
  // Neither key is in the header in the clear.
  const bytes = readFileSync(dev);
  assert.equal(bytes.includes(Buffer.from(rk)), false);
  assert.equal(bytes.includes(Buffer.from(temp)), false);
});

test('a token is stored in the header and removed by id', async () => {
  const dev = file('tok.img', 32);
  const temp = newTemporaryKey();
  await cryptsetup.format(dev, temp);
  await cryptsetup.importToken(dev, { type: 'bootline-test', keyslots: ['0'], note: 'x' });
  const d = await cryptsetup.dump(dev);
  const [id, tok] = Object.entries(d.tokens)[0]!;
  assert.equal(tok.note, 'x');
  await cryptsetup.removeToken(dev, Number(id));
  assert.deepEqual((await cryptsetup.dump(dev)).tokens, {});
});

test('a cryptsetup failure says what it ran and what it answered', async () => {
  const notLuks = file('plain.img', 4);
  assert.equal(await cryptsetup.isLuks(notLuks), false);
  await assert.rejects(cryptsetup.dump(notLuks), (e: Error) => e instanceof ToolError && /cryptsetup luksDump --dump-json-metadata .*plain\.img exited with 1: .*not a valid LUKS device/i.test(e.message));
});
