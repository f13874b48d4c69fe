// `bootline secureboot ...` as a user runs it (the bundled CLI), compared with efitools,
// and the errors a user gets for bad input; plus `bootline run --dry-run` of the task.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { efitools, fixturePair } from './fixtures.ts';
import { decodeAuth, verifyAuth } from '../../src/secureboot/auth.ts';
import { certificatesFromBytes } from '../../src/secureboot/x509.ts';
import type { KeyVariable } from '../../src/secureboot/variables.ts';
import { authCommand, eslCommand, type AuthCommand } from '../../src/secureboot/commands.ts';

const BUNDLE = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
const dir = tempDir('bootline-sb-cli-');
const OWNER = 'a1b2c3d4-e5f6-4789-8abc-def012345678';
const PK = fixturePair('PK', 2048);
const KEK = fixturePair('KEK', 2048);
const DB = fixturePair('db', 2048);

function bootline(args: string[]) {
  return spawnSync(process.execPath, [BUNDLE, ...args], { encoding: 'utf8', timeout: 60_000 });
}

const p = (name: string) => join(dir, name);
const cert = (file: string) => certificatesFromBytes(readFileSync(file), file)[0]!;

test('keys create makes PK, KEK and db pairs whose lists and signed updates efitools agrees with', () => {
  const out = p('keys');
  const r = bootline(['secureboot', 'keys', 'create', '--out', out, '--owner', OWNER, '--subject-prefix', 'Acme Line 3', '--days', '30']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(readFileSync(join(out, 'GUID'), 'utf8').trim(), OWNER);
  for (const v of ['PK', 'KEK', 'db'] as const) {
    assert.equal(statSync(join(out, `${v}.key`)).mode & 0o777, 0o600, `${v}.key is private`);
    assert.deepEqual(readFileSync(join(out, `${v}.cer`)), cert(join(out, `${v}.crt`)), 'the DER and PEM certificate are the same');
    const x = spawnSync('openssl', ['x509', '-in', join(out, `${v}.crt`), '-noout', '-subject', '-enddate'], { encoding: 'utf8' });
    assert.match(x.stdout, new RegExp(`CN = Acme Line 3 ${{ PK: 'Platform Key', KEK: 'Key Exchange Key', db: 'Signature Database Key' }[v]}`));
    efitools('cert-to-efi-sig-list', ['-g', OWNER, join(out, `${v}.crt`), p(`${v}.ref.esl`)]);
    assert.deepEqual(readFileSync(join(out, `${v}.esl`)), readFileSync(p(`${v}.ref.esl`)), `${v}.esl`);
  }
  // The chain: PK and KEK signed by PK, db by KEK, each for its own variable.
  const signer = { PK: 'PK', KEK: 'PK', db: 'KEK' } as const;
  for (const v of ['PK', 'KEK', 'db'] as KeyVariable[]) {
    const a = decodeAuth(readFileSync(join(out, `${v}.auth`)), `${v}.auth`);
    const check = verifyAuth(a, v);
    assert.ok(check.ok, `${v}.auth verifies`);
    assert.deepEqual(check.signer, cert(join(out, `${signer[v as 'PK']}.crt`)));
    assert.deepEqual(a.esl, readFileSync(join(out, `${v}.esl`)));
  }
  // A second run into the same directory is refused, and the keys are untouched.
  const key = readFileSync(join(out, 'PK.key'));
  const again = bootline(['secureboot', 'keys', 'create', '--out', out]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /--out .*keys is not empty: keys are never overwritten by accident.*--force/);
  assert.deepEqual(readFileSync(join(out, 'PK.key')), key);
});

test('esl with several certificates (PEM and DER) equals the efitools lists concatenated', () => {
  const derFile = p('kek.der');
  writeFileSync(derFile, cert(KEK.crt));
  const r = bootline(['secureboot', 'esl', '--cert', DB.crt, '--cert', derFile, '--owner', OWNER, '-o', p('two.esl')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /2 signature\(s\)/);
  efitools('cert-to-efi-sig-list', ['-g', OWNER, DB.crt, p('a.esl')]);
  efitools('cert-to-efi-sig-list', ['-g', OWNER, KEK.crt, p('b.esl')]);
  assert.deepEqual(readFileSync(p('two.esl')), Buffer.concat([readFileSync(p('a.esl')), readFileSync(p('b.esl'))]));
});

test('auth equals sign-efi-sig-list for a replacement and for an append', () => {
  efitools('cert-to-efi-sig-list', ['-g', OWNER, DB.crt, p('db.esl')]);
  for (const append of [false, true]) {
    const ours = p(`db${append ? '-append' : ''}.auth`);
    const ref = `${ours}.ref`;
    const r = bootline(['secureboot', 'auth', '--var', 'db', '--esl', p('db.esl'), '--key', KEK.key, '--cert', KEK.crt, '--timestamp', '2026-07-08 09:10:11', ...(append ? ['--append'] : []), '-o', ours]);
    assert.equal(r.status, 0, r.stderr);
    efitools('sign-efi-sig-list', [...(append ? ['-a'] : []), '-t', '2026-07-08 09:10:11', '-k', KEK.key, '-c', KEK.crt, 'db', p('db.esl'), ref]);
    assert.deepEqual(readFileSync(ours), readFileSync(ref), append ? 'append' : 'replacement');
  }
});

test('bad input gets an error naming the file and what is wrong, and the output is left as it was', async () => {
  efitools('cert-to-efi-sig-list', [PK.crt, p('pk.esl')]);
  const out = p('keep.auth');
  writeFileSync(out, 'old');
  const garbled = p('garbled.crt');
  writeFileSync(garbled, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  // In-process (the same code the CLI runs; each bundle start costs half a second) ...
  const base = { variable: 'PK', esl: p('pk.esl'), key: PK.key, cert: PK.crt, append: false, out };
  const cases: Array<[Partial<AuthCommand>, RegExp]> = [
    [{ cert: garbled }, /certificate .*garbled\.crt is not a readable X\.509 certificate/],
    [{ cert: KEK.key }, /certificate .*KEK-2048\.key is PEM but holds no certificate \(it holds a PRIVATE KEY\)/],
    [{ key: PK.crt }, /private key .*PK-2048\.crt holds a certificate, not a private key/],
    [{ esl: PK.crt }, /signature list .*PK-2048\.crt: list 1 at byte 0/],
    [{ timestamp: '2026-13-01 00:00:00' }, /timestamp "2026-13-01 00:00:00" is not a real date/],
    [{ variable: 'Pk' }, /--var Pk: expected one of PK, KEK, db, dbx/],
  ];
  for (const [over, msg] of cases) {
    await assert.rejects(authCommand({ ...base, ...over }), msg, JSON.stringify(over));
    assert.equal(readFileSync(out, 'utf8'), 'old', `${JSON.stringify(over)} left the output alone`);
  }
  // ... and through the CLI: the message reaches the user, the status is 1.
  const cli = (args: string[]) => bootline(['secureboot', ...args]);
  const missing = cli(['auth', '--var', 'PK', '--esl', p('pk.esl'), '--key', PK.key, '--cert', p('missing.crt'), '-o', out]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /^bootline: cannot read certificate .*missing\.crt: no such file/);
  const mismatch = cli(['auth', '--var', 'PK', '--esl', p('pk.esl'), '--key', KEK.key, '--cert', PK.crt, '-o', out]);
  assert.equal(mismatch.status, 1);
  assert.match(mismatch.stderr, /private key .*KEK-2048\.key does not belong to certificate .*PK-2048\.crt "test PK 2048"/);
  assert.equal(readFileSync(out, 'utf8'), 'old');
  const g = cli(['esl', '--cert', PK.crt, '--owner', 'not-a-guid', '-o', p('x.esl')]);
  assert.equal(g.status, 1);
  assert.match(g.stderr, /--owner "not-a-guid" is not a GUID/);
  assert.equal(existsSync(p('x.esl')), false);
  await assert.rejects(eslCommand({ certs: [PK.crt], hashes: [], owner: OWNER, out: p('no/such/dir/x.esl') }), /cannot write .*x\.esl: its directory does not exist/);
  await assert.rejects(eslCommand({ certs: [], hashes: ['abc'], owner: OWNER, out: p('h.esl') }), /--sha256 "abc" is not a SHA-256 hash/);
});

test('run --dry-run shows which variables the task would write, in order, and writes nothing', () => {
  const keys = p('dry-keys');
  mkdirSync(keys);
  for (const [v, signer] of [['PK', PK], ['KEK', PK], ['db', KEK]] as const) {
    const src = { PK, KEK, db: DB }[v];
    efitools('cert-to-efi-sig-list', [src.crt, join(keys, `${v}.esl`)]);
    efitools('sign-efi-sig-list', ['-t', '2026-01-01 00:00:00', '-k', signer.key, '-c', signer.crt, v, join(keys, `${v}.esl`), join(keys, `${v}.auth`)]);
  }
  const efivars = p('efivars');
  mkdirSync(efivars);
  writeFileSync(join(efivars, 'SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c'), Buffer.from([6, 0, 0, 0, 1]));
  writeFileSync(join(efivars, 'SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c'), Buffer.from([6, 0, 0, 0, 0]));
  const cfg = p('plan.yaml');
  writeFileSync(
    cfg,
    `tasks:\n  - name: secure-boot\n    builtin: enroll-secure-boot\n    with:\n      pk: PK.auth\n      kek: KEK.auth\n      db: db.auth\n      installData: ${keys}\n      efivars: ${efivars}\n      mount: false\n`,
  );
  const r = bootline(['run', '--dry-run', '-c', cfg, '--state-dir', p('state')]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Task secure-boot \(enroll-secure-boot\) would:/);
  assert.match(r.stdout, /firmware: Setup Mode \(SetupMode=1, SecureBoot=0/);
  const writes = [...r.stdout.matchAll(/would write \S+\/(\w+)-[0-9a-f-]{36}: attributes 0x27 \+ (\d+) bytes/g)].map((m) => [m[1], Number(m[2])]);
  assert.deepEqual(writes, [['db', statSync(join(keys, 'db.auth')).size], ['KEK', statSync(join(keys, 'KEK.auth')).size], ['PK', statSync(join(keys, 'PK.auth')).size]]);
  assert.equal(existsSync(join(efivars, 'PK-8be4df61-93ca-11d2-aa0d-00e098032b8c')), false, 'nothing written');
});
