// Recovery-key escrow against the real server (in-process, real SQLite file, real HTTP):
// the agent's client escrows a key, admins list and reveal it, bad bodies and other
// devices are refused, the key is sealed in the database file, survives a restart with its
// key file and fails clearly without it, and comes out in the run's report.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestServer, type TestServer } from './test-server.ts';
import { runEvents } from './events-fixture.ts';
import { tempDir } from '../helpers.ts';
import { ServerClient, type ServerError } from '../../src/agent/server-client.ts';
import { MODHEX, type RecoveryKeyEscrow } from '../../src/api/recovery-key.ts';
import { ESCROW_KEY_ENV } from '../../src/server/escrow/key-file.ts';
import { EscrowKeyMismatchError, EscrowRecordDamagedError, seal, unseal } from '../../src/server/escrow/seal.ts';

/** A key as systemd-cryptenroll prints it: 8 groups of 8 modhex characters. */
function recoveryKey(): string {
  const b = randomBytes(32);
  const chars = [...b].flatMap((x) => [MODHEX[x >> 4]!, MODHEX[x & 15]!]);
  return Array.from({ length: 8 }, (_, i) => chars.slice(i * 8, i * 8 + 8).join('')).join('-');
}

async function enroll(s: TestServer, serial: string) {
  const t = await s.admin('POST', '/api/v1/tokens', { label: 'crypt-line' });
  const r = await s.call('POST', '/api/v1/enroll', { body: { token: t.json.token, serial, macs: [] } });
  assert.equal(r.status, 201, r.text);
  return r.json as { deviceId: string; credential: string };
}

const client = (s: TestServer, credential: string) => new ServerClient({ url: s.url, credential, retries: 0 });
const escrow = (over: Partial<RecoveryKeyEscrow> = {}): RecoveryKeyEscrow => ({
  volumeUuid: randomUUID(),
  partition: '/dev/vda3',
  label: 'data',
  keyslot: 2,
  recoveryKey: recoveryKey(),
  pcrs: [7],
  ...over,
});

describe('recovery-key escrow', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s?.close();
  });

  it('a device escrows its key with the agent client; admins see the volume without the key, reveal it, and the reveal is recorded', async () => {
    const doc = (await s.call('GET', '/openapi.json')).json;
    for (const p of ['/api/v1/device/recovery-keys/{volumeUuid}', '/api/v1/devices/{id}/recovery-keys', '/api/v1/devices/{id}/recovery-keys/{uuid}/reveal']) assert.ok(doc.paths[p], `${p} documented`);
    const d = await enroll(s, 'ESC-1');
    const e = escrow();
    const c = client(s, d.credential);
    await c.putRecoveryKey(e);
    c.close();
    const list = await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`);
    assert.equal(list.status, 200, list.text);
    assert.ok(!list.text.includes(e.recoveryKey), 'the list never carries the key');
    assert.equal(list.json.length, 1);
    const v = list.json[0];
    assert.deepEqual(
      { volumeUuid: v.volumeUuid, partition: v.partition, label: v.label, keyslot: v.keyslot, pcrs: v.pcrs, revealedAt: v.revealedAt, revealCount: v.revealCount },
      { volumeUuid: e.volumeUuid, partition: '/dev/vda3', label: 'data', keyslot: 2, pcrs: [7], revealedAt: null, revealCount: 0 },
    );
    assert.ok(!Number.isNaN(Date.parse(v.createdAt)));

    const shown = await s.admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
    assert.equal(shown.status, 200, shown.text);
    assert.equal(shown.json.recoveryKey, e.recoveryKey);
    assert.equal(shown.headers.get('cache-control'), 'no-store');
    const after1 = (await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json[0];
    assert.equal(after1.revealCount, 1);
    assert.match(after1.revealedBy, /^admin-token:[0-9a-f]{8}$/);
    assert.ok(Date.parse(after1.revealedAt) >= Date.parse(v.createdAt));

    // A user with a password is named as the revealer.
    assert.equal((await s.admin('PUT', '/api/v1/users/auditor', { password: 'correct horse battery' })).status, 204);
    const basic = `Basic ${Buffer.from('auditor:correct horse battery').toString('base64')}`;
    const byUser = await s.call('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`, { headers: { authorization: basic } });
    assert.equal(byUser.json.recoveryKey, e.recoveryKey);
    const after2 = (await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json[0];
    assert.deepEqual([after2.revealedBy, after2.revealCount], ['auditor', 2]);

    const missing = await s.admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${randomUUID()}/reveal`);
    assert.equal(missing.status, 404);
    assert.match(missing.json.message, /has no recovery key escrowed for volume/);
  });

  it('refuses bad bodies with a message naming what is wrong, and stores nothing', async () => {
    const d = await enroll(s, 'ESC-BAD');
    const put = (uuid: string, body: unknown, raw?: string) =>
      s.call('PUT', `/api/v1/device/recovery-keys/${uuid}`, { token: d.credential, ...(raw !== undefined ? { raw, headers: { 'content-type': 'application/json' } } : { body }) });
    const good = escrow();
    const cases: [string, unknown, RegExp][] = [
      ['NOT-A-UUID', { ...good, volumeUuid: 'NOT-A-UUID' }, /volumeUuid must be the LUKS2 UUID in lower case/],
      [good.volumeUuid.toUpperCase(), { ...good, volumeUuid: good.volumeUuid.toUpperCase() }, /lower case/],
      [good.volumeUuid, { ...good, recoveryKey: good.recoveryKey.toUpperCase() }, /recoveryKey is not a systemd recovery key: expected 8 groups of 8 modhex/],
      [good.volumeUuid, { ...good, recoveryKey: good.recoveryKey.slice(0, 62) }, /recoveryKey is not a systemd recovery key/],
      [good.volumeUuid, { ...good, recoveryKey: `a${good.recoveryKey.slice(1)}` }, /recoveryKey is not a systemd recovery key/],
      [good.volumeUuid, { ...good, recoveryKey: `${good.recoveryKey}\n` }, /recoveryKey is not a systemd recovery key/],
      [good.volumeUuid, { ...good, keyslot: 32 }, /keyslot must be a LUKS2 keyslot number/],
      [good.volumeUuid, { ...good, pcrs: [7, 7] }, /pcrs must be a list of distinct PCR numbers/],
      [good.volumeUuid, { ...good, passphrase: 'x' }, /unknown field passphrase/],
      [good.volumeUuid, { volumeUuid: good.volumeUuid, partition: '/dev/vda3', keyslot: 1 }, /recoveryKey is missing/],
      [randomUUID(), good, /the body is for volume .*, the URL for/],
    ];
    for (const [uuid, body, want] of cases) {
      const r = await put(uuid, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.error, 'invalid-recovery-key-escrow');
      assert.match(r.json.message, /^recovery key not stored: /);
      assert.match(r.json.message, want);
      assert.ok(!r.text.includes(good.recoveryKey), 'the answer does not echo the key');
    }
    const huge = await put(good.volumeUuid, undefined, JSON.stringify({ ...good, label: 'x'.repeat(20_000) }));
    assert.equal(huge.status, 413, huge.text);
    assert.match(huge.json.message, /request body is larger than PUT \/api\/v1\/device\/recovery-keys\/:volumeUuid accepts \(16384 bytes\)/);
    const notJson = await put(good.volumeUuid, undefined, '{"volumeUuid":');
    assert.equal(notJson.status, 400);
    assert.equal((await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json.length, 0, 'nothing stored');

    // The agent's client refuses a malformed key before sending it.
    const c = client(s, d.credential);
    await assert.rejects(c.putRecoveryKey({ ...good, recoveryKey: 'hello' }), (e: ServerError) => {
      assert.match(e.message, /escrowing the recovery key of volume .*: .*not sent: recoveryKey is not a systemd recovery key/);
      assert.equal(e.status, 0);
      return true;
    });
    c.close();
    assert.equal((await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json.length, 0);
  });

  it('another device cannot escrow over a volume, nor use another device’s run; device credentials cannot list or reveal', async () => {
    const a = await enroll(s, 'ESC-A');
    const b = await enroll(s, 'ESC-B');
    await s.call('POST', '/api/v1/device/events', { token: a.credential, body: { events: runEvents('run-esc-a') } });
    const e = escrow({ runId: 'run-esc-a' });
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: a.credential, body: e })).status, 204);

    const over = await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: b.credential, body: { ...e, runId: undefined, recoveryKey: recoveryKey() } });
    assert.equal(over.status, 409, over.text);
    assert.equal(over.json.error, 'volume-of-another-device');
    assert.match(over.json.message, /escrowed for another device: nothing stored/);
    const inForeignRun = escrow({ runId: 'run-esc-a' });
    const foreignRun = await s.call('PUT', `/api/v1/device/recovery-keys/${inForeignRun.volumeUuid}`, { token: b.credential, body: inForeignRun });
    assert.equal(foreignRun.status, 409, foreignRun.text);
    assert.equal(foreignRun.json.error, 'run-of-another-device');
    assert.equal((await s.admin('GET', `/api/v1/devices/${b.deviceId}/recovery-keys`)).json.length, 0);
    const still = await s.admin('POST', `/api/v1/devices/${a.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
    assert.equal(still.json.recoveryKey, e.recoveryKey, "a's key is untouched");
    // Nor can an admin read it under the wrong device.
    assert.equal((await s.admin('POST', `/api/v1/devices/${b.deviceId}/recovery-keys/${e.volumeUuid}/reveal`)).status, 404);

    for (const token of [a.credential, b.credential, undefined]) {
      const list = await s.call('GET', `/api/v1/devices/${a.deviceId}/recovery-keys`, token ? { token } : {});
      const reveal = await s.call('POST', `/api/v1/devices/${a.deviceId}/recovery-keys/${e.volumeUuid}/reveal`, token ? { token } : {});
      const del = await s.call('DELETE', `/api/v1/devices/${a.deviceId}/recovery-keys/${e.volumeUuid}`, token ? { token } : {});
      for (const r of [list, reveal, del]) {
        assert.equal(r.status, 401, r.text);
        assert.ok(!r.text.includes(e.recoveryKey));
      }
    }
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { body: e })).status, 401, 'escrow needs a device credential');
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: s.adminToken, body: e })).status, 401, 'an admin token is not a device');

    // The disk really moved: an admin forgets the record, then the other device may escrow.
    assert.equal((await s.admin('DELETE', `/api/v1/devices/${a.deviceId}/recovery-keys/${e.volumeUuid}`)).status, 204);
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: b.credential, body: { ...e, runId: undefined } })).status, 204);
  });

  it('a re-provisioned device escrowing the same volume again replaces the old key', async () => {
    const d = await enroll(s, 'ESC-RE');
    const first = escrow({ keyslot: 1 });
    const second = { ...first, keyslot: 3, recoveryKey: recoveryKey() };
    const c = client(s, d.credential);
    await c.putRecoveryKey(first);
    await s.admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${first.volumeUuid}/reveal`);
    await c.putRecoveryKey(second);
    c.close();
    const list = (await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json;
    assert.equal(list.length, 1);
    assert.deepEqual([list[0].keyslot, list[0].revealCount, list[0].revealedAt], [3, 0, null]);
    assert.equal((await s.admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${first.volumeUuid}/reveal`)).json.recoveryKey, second.recoveryKey);
  });

  it("the run's report names the volumes escrowed during the run, and the JSON export asked for carries their keys (recorded as a reveal); CSV and batch exports never do", async () => {
    const d = await enroll(s, 'ESC-RUN');
    await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-esc-report') } });
    const e = escrow({ runId: 'run-esc-report', partition: 'root' });
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: d.credential, body: e })).status, 204);
    const other = await enroll(s, 'ESC-OTHER');
    await s.call('POST', '/api/v1/device/events', { token: other.credential, body: { events: runEvents('run-esc-other') } });

    const plain = await s.admin('GET', '/api/v1/runs/run-esc-report/report?format=json');
    assert.equal(plain.status, 200, plain.text);
    assert.deepEqual(plain.json.volumes, [{ volumeUuid: e.volumeUuid, partition: 'root', label: 'data', keyslot: 2, pcrs: [7] }]);
    assert.ok(!plain.text.includes(e.recoveryKey), 'keys only when asked for');
    assert.equal((await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json[0].revealCount, 0);

    const json = await s.admin('GET', '/api/v1/runs/run-esc-report/report?format=json&recoveryKeys=true');
    assert.equal(json.status, 200, json.text);
    assert.deepEqual(json.json.volumes, [{ volumeUuid: e.volumeUuid, partition: 'root', label: 'data', keyslot: 2, pcrs: [7], recoveryKey: e.recoveryKey }]);
    assert.equal(json.json.runId, 'run-esc-report');
    assert.equal(json.json.report.status, 'ok', "the device's own report is there too");
    assert.equal(json.headers.get('cache-control'), 'no-store');
    const v = (await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json[0];
    assert.equal(v.revealCount, 1);
    assert.match(v.revealedBy, /^admin-token:[0-9a-f]{8} \(run report\)$/);

    const csvKeys = await s.admin('GET', '/api/v1/runs/run-esc-report/report?format=csv&recoveryKeys=true');
    assert.equal(csvKeys.status, 400);
    assert.match(csvKeys.json.message, /recovery keys are only exported in the JSON report/);
    const csv = await s.admin('GET', '/api/v1/runs/run-esc-report/report?format=csv');
    assert.ok(!csv.text.includes(e.recoveryKey), 'no key in CSV');
    assert.match(csv.text.split('\r\n')[1]!, new RegExp(`,${e.volumeUuid} \\(root keyslot 2\\)$`));

    const batch = await s.admin('GET', '/api/v1/export?batch=crypt-line&format=csv');
    const lines = batch.text.trimEnd().split('\r\n');
    assert.equal(lines[0]!.split(',').at(-1), 'volumes');
    assert.ok(!batch.text.includes(e.recoveryKey));
    assert.ok(lines.find((l) => l.includes('run-esc-report'))!.endsWith(`,${e.volumeUuid} (root keyslot 2)`));
    assert.ok(lines.find((l) => l.includes('run-esc-other'))!.endsWith(','), 'a run without escrow has an empty volumes cell');
    const batchJson = (await s.admin('GET', '/api/v1/export?batch=crypt-line')).json as { runId: string; volumes: string }[];
    assert.equal(batchJson.find((r) => r.runId === 'run-esc-report')!.volumes, `${e.volumeUuid} (root keyslot 2)`);

    // Without a run id the key joins the device's current run.
    const noRun = escrow();
    assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${noRun.volumeUuid}`, { token: d.credential, body: { ...noRun, pcrs: undefined } })).status, 204);
    const listed = (await s.admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).json.find((x: { volumeUuid: string }) => x.volumeUuid === noRun.volumeUuid);
    assert.deepEqual([listed.runId, listed.pcrs], ['run-esc-report', null]);
  });
});

describe('recovery keys at rest', () => {
  it('a sealed key opens only for its device and volume, under its key; the same key sealed twice looks different', () => {
    const kek = randomBytes(32);
    const key = recoveryKey();
    const at = { deviceId: 'dev_a', volumeUuid: randomUUID() };
    const sealed = seal(kek, at, key);
    assert.equal(unseal(kek, at, sealed), key);
    assert.notEqual(seal(kek, at, key), sealed, 'a fresh IV per record');
    assert.ok(!sealed.includes(key));
    assert.throws(() => unseal(kek, { ...at, deviceId: 'dev_b' }, sealed), EscrowRecordDamagedError);
    assert.throws(() => unseal(kek, { ...at, volumeUuid: randomUUID() }, sealed), EscrowRecordDamagedError);
    const parts = sealed.split('.');
    const flipped = Buffer.from(parts[3]!, 'base64url');
    flipped[0]! ^= 1;
    assert.throws(() => unseal(kek, at, [...parts.slice(0, 3), flipped.toString('base64url'), parts[4]].join('.')), EscrowRecordDamagedError);
    assert.throws(() => unseal(randomBytes(32), at, sealed), EscrowKeyMismatchError);
  });

  it('are sealed in the database file, survive a restart with the key file, and fail clearly when the key file was replaced or lost', async () => {
    const data = tempDir('bootline-escrow-');
    let s = await startTestServer({ data });
    // Shown at the first start only: kept for the restarts.
    const token = s.adminToken;
    const admin = (method: string, path: string) => s.call(method, path, { token });
    try {
      const d = await enroll(s, 'ESC-REST');
      await s.call('POST', '/api/v1/device/events', { token: d.credential, body: { events: runEvents('run-rest') } });
      const e = escrow({ runId: 'run-rest' });
      assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: d.credential, body: e })).status, 204);
      const keyFile = join(data, 'secrets', 'escrow.key');
      assert.equal(statSync(keyFile).mode & 0o777, 0o600);
      assert.equal(statSync(join(data, 'secrets')).mode & 0o777, 0o700);
      assert.equal(statSync(keyFile).size, 32);
      await s.close();

      // The database files (and its WAL) hold no trace of the key in plain text.
      const dbFiles = readdirSync(data).filter((f) => f.startsWith('bootline.db'));
      assert.ok(dbFiles.includes('bootline.db'));
      for (const f of dbFiles) {
        const bytes = readFileSync(join(data, f));
        assert.equal(bytes.indexOf(e.recoveryKey), -1, `${f} does not contain the key`);
        assert.equal(bytes.indexOf(e.recoveryKey.replace(/-/g, '')), -1, `${f} does not contain the key without dashes`);
      }
      assert.ok(readFileSync(join(data, 'bootline.db')).indexOf(e.volumeUuid) >= 0, 'the file does hold the record (the search could find text)');

      s = await startTestServer({ data });
      const again = await admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
      assert.equal(again.status, 200, again.text);
      assert.equal(again.json.recoveryKey, e.recoveryKey, 'the key survives a restart');
      await s.close();

      const original = readFileSync(keyFile);
      writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
      s = await startTestServer({ data });
      const replaced = await admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
      assert.equal(replaced.status, 409, replaced.text);
      assert.equal(replaced.json.error, 'escrow-key-replaced');
      assert.match(replaced.json.message, /was sealed with escrow key [0-9a-f]{16}, but .*secrets\/escrow\.key holds key [0-9a-f]{16}: the escrow key file was replaced\. Put the original back from its backup/);
      assert.equal((await admin('GET', `/api/v1/devices/${d.deviceId}/recovery-keys`)).status, 200, 'the list still works');
      const report = await admin('GET', '/api/v1/runs/run-rest/report?recoveryKeys=true');
      assert.equal(report.status, 200, 'the run report still downloads');
      assert.equal(report.json.volumes[0].recoveryKey, null);
      assert.match(report.json.volumes[0].recoveryKeyError, /the escrow key file was replaced/);
      await s.close();

      // Lost: the server does not make a new key over sealed records.
      rmSync(keyFile);
      s = await startTestServer({ data });
      const next = escrow();
      const lost = await s.call('PUT', `/api/v1/device/recovery-keys/${next.volumeUuid}`, { token: d.credential, body: next });
      assert.equal(lost.status, 503, lost.text);
      assert.match(lost.json.message, /the escrow key .*escrow\.key is missing, but the database holds 1 sealed recovery key: restore the key file from its backup/);
      const lostReveal = await admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
      assert.equal(lostReveal.status, 503);
      await s.close();

      // Restored from the backup: everything opens again; a key file others can read is refused.
      writeFileSync(keyFile, original, { mode: 0o644 });
      chmodSync(keyFile, 0o644);
      s = await startTestServer({ data });
      const open = await admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
      assert.equal(open.status, 503);
      assert.match(open.json.message, /open to group or others \(mode 644\): chmod 600/);
      chmodSync(keyFile, 0o600);
      const restored = await admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`);
      assert.equal(restored.json.recoveryKey, e.recoveryKey, 'the restored key opens it again (the failed load was not cached)');
    } finally {
      await s.close();
    }
  });

  it(`takes the key file from ${ESCROW_KEY_ENV}, and refuses to start escrow when that file does not exist`, async () => {
    const dir = tempDir('bootline-escrow-env-');
    const keyFile = join(dir, 'kek.bin');
    process.env[ESCROW_KEY_ENV] = keyFile;
    try {
      let s = await startTestServer();
      const d = await enroll(s, 'ESC-ENV');
      const e = escrow();
      const r = await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: d.credential, body: e });
      assert.equal(r.status, 503);
      assert.match(r.json.message, new RegExp(`${ESCROW_KEY_ENV} names ${keyFile}, which does not exist: restore the escrow key there, or make a new one`));
      writeFileSync(keyFile, randomBytes(32), { mode: 0o600 });
      assert.equal((await s.call('PUT', `/api/v1/device/recovery-keys/${e.volumeUuid}`, { token: d.credential, body: e })).status, 204);
      assert.equal((await s.admin('POST', `/api/v1/devices/${d.deviceId}/recovery-keys/${e.volumeUuid}/reveal`)).json.recoveryKey, e.recoveryKey);
      assert.ok(!readdirSync(s.data).includes('secrets'), 'no key made in the data dir');
      await s.close();
      s = await startTestServer({ data: s.data });
      await s.close();
      // Given its data dir, the test server leaves it: this one is the test's to remove.
      rmSync(s.data, { recursive: true, force: true });
    } finally {
      delete process.env[ESCROW_KEY_ENV];
    }
  });
});
