// Signature lists and signed updates byte for byte equal to Debian's efitools
// (cert-to-efi-sig-list, sign-efi-sig-list) for the same inputs, and read back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, thrown } from '../helpers.ts';
import { efitools, fixturePair } from './fixtures.ts';
import { decodeAuth, makeAuth, verifyAuth } from '../../src/secureboot/auth.ts';
import { decodeEsl, compareEsl, sha256List, x509List, EslError } from '../../src/secureboot/esl.ts';
import { formatGuid, GUIDS, GuidError, parseGuid } from '../../src/secureboot/guid.ts';
import { decodeEfiTime, encodeEfiTime, parseTimestamp, TimestampError } from '../../src/secureboot/efi-time.ts';
import { certificatesFromBytes, selfSignedCertificate, CertificateError } from '../../src/secureboot/x509.ts';
import type { KeyVariable } from '../../src/secureboot/variables.ts';

const dir = tempDir('bootline-sb-enc-');
const OWNER = '12345678-9abc-def0-1234-56789abcdef0';
const TS = '2026-05-06 07:08:09';
const keys = {
  2048: { PK: fixturePair('PK', 2048), KEK: fixturePair('KEK', 2048), db: fixturePair('db', 2048) },
  4096: { PK: fixturePair('PK', 4096), KEK: fixturePair('KEK', 4096) },
} as const;
const der = (crt: string) => certificatesFromBytes(readFileSync(crt), crt)[0]!;

function referenceEsl(crt: string, owner?: string): Buffer {
  const out = join(dir, `ref-${Math.random().toString(36).slice(2)}.esl`);
  efitools('cert-to-efi-sig-list', [...(owner ? ['-g', owner] : []), crt, out]);
  return readFileSync(out);
}

function referenceAuth(variable: KeyVariable, esl: Buffer, signer: { key: string; crt: string }, append = false): Buffer {
  const inp = join(dir, `in-${Math.random().toString(36).slice(2)}.esl`);
  const out = `${inp}.auth`;
  writeFileSync(inp, esl);
  efitools('sign-efi-sig-list', [...(append ? ['-a'] : []), '-g', OWNER, '-t', TS, '-k', signer.key, '-c', signer.crt, variable, inp, out]);
  return readFileSync(out);
}

test('a certificate becomes the same signature list as cert-to-efi-sig-list makes (RSA 2048 and 4096, owner GUID or none)', () => {
  for (const pair of [keys[2048].PK, keys[2048].db, keys[4096].KEK]) {
    const cert = der(pair.crt);
    assert.deepEqual(x509List(cert, OWNER), referenceEsl(pair.crt, OWNER), `${pair.crt} with owner`);
    assert.deepEqual(x509List(cert), referenceEsl(pair.crt), `${pair.crt} without owner`);
    const [entry] = decodeEsl(x509List(cert, OWNER));
    assert.equal(entry!.kind, 'x509');
    assert.equal(entry!.owner, OWNER);
    assert.deepEqual(entry!.data, cert, 'the certificate comes back out');
  }
});

test('signed updates of PK, KEK, db and dbx are byte-identical to sign-efi-sig-list with the same timestamp', () => {
  for (const bits of [2048, 4096] as const) {
    const k = keys[bits];
    const pkEsl = x509List(der(k.PK.crt), OWNER);
    const kekEsl = x509List(der(k.KEK.crt), OWNER);
    const dbEsl = Buffer.concat([x509List(der(keys[2048].db.crt), OWNER), x509List(der(k.KEK.crt), OWNER)]);
    const cases: Array<[KeyVariable, Buffer, { key: string; crt: string }]> = [
      ['PK', pkEsl, k.PK],
      ['KEK', kekEsl, k.PK],
      ['db', dbEsl, k.KEK],
      ['dbx', sha256List([Buffer.alloc(32, 0xab), Buffer.alloc(32, 0xcd)], OWNER), k.KEK],
    ];
    for (const [variable, esl, signer] of cases) {
      const ours = makeAuth({ variable, esl, key: createPrivateKey(readFileSync(signer.key)), certDer: der(signer.crt), time: parseTimestamp(TS) });
      assert.deepEqual(ours, referenceAuth(variable, esl, signer), `${variable} signed with RSA ${bits}`);
    }
  }
});

test('an append update (sign-efi-sig-list -a) is byte-identical too, and is recognised as an append', () => {
  const esl = x509List(der(keys[2048].db.crt), OWNER);
  const ours = makeAuth({ variable: 'db', esl, key: createPrivateKey(readFileSync(keys[2048].KEK.key)), certDer: der(keys[2048].KEK.crt), time: parseTimestamp(TS), append: true });
  const ref = referenceAuth('db', esl, keys[2048].KEK, true);
  assert.deepEqual(ours, ref);
  const check = verifyAuth(decodeAuth(ref, 'db.auth'), 'db');
  assert.ok(check.ok && check.append && check.attributes === 0x67);
});

test("efitools' .auth reads back: its timestamp, its signature list, its signer, and for which variable it was signed", () => {
  const esl = x509List(der(keys[2048].KEK.crt), OWNER);
  const ref = referenceAuth('KEK', esl, keys[2048].PK);
  const a = decodeAuth(ref, 'KEK.auth');
  assert.deepEqual(a.esl, esl);
  assert.deepEqual(a.time, parseTimestamp(TS));
  const ok = verifyAuth(a, 'KEK');
  assert.ok(ok.ok && !ok.append && ok.attributes === 0x27);
  assert.deepEqual(ok.signer, der(keys[2048].PK.crt));
  const asDb = verifyAuth(a, 'db');
  assert.ok(!asDb.ok && /does not verify as an update of db/.test(asDb.why));
  // One changed byte of the list breaks the signature.
  const tampered = Buffer.from(ref);
  tampered[tampered.length - 10]! ^= 1;
  assert.equal(verifyAuth(decodeAuth(tampered, 'x'), 'KEK').ok, false);
  // An .esl given where an .auth belongs is named as such.
  assert.match(thrown(Error, () => decodeAuth(esl, 'KEK.esl')).message, /KEK\.esl is not an EFI_VARIABLE_AUTHENTICATION_2 \(\.auth\) file/);
});

test('a certificate made by bootline is accepted by efitools and openssl, and lists the same', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = selfSignedCertificate({ key: privateKey, commonName: 'bootline test PK', notBefore: new Date('2026-01-01T00:00:00Z'), notAfter: new Date('2060-01-01T00:00:00Z'), serial: Buffer.from('00ff0102', 'hex') });
  const crt = join(dir, 'ours.crt');
  writeFileSync(crt, `-----BEGIN CERTIFICATE-----\n${cert.toString('base64')}\n-----END CERTIFICATE-----\n`);
  assert.deepEqual(x509List(cert, OWNER), referenceEsl(crt, OWNER));
  const key = join(dir, 'ours.key');
  writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const esl = x509List(cert, OWNER);
  assert.deepEqual(makeAuth({ variable: 'PK', esl, key: privateKey, certDer: cert, time: parseTimestamp(TS) }), referenceAuth('PK', esl, { key, crt }));
});

test('GUIDs are written mixed-endian as efitools does, and a bad one is refused by name', () => {
  assert.equal(parseGuid(OWNER).toString('hex'), '78563412bc9af0de123456789abcdef0');
  assert.equal(formatGuid(parseGuid(GUIDS.imageSecurityDatabase)), GUIDS.imageSecurityDatabase);
  assert.equal(formatGuid(parseGuid(OWNER.toUpperCase())), OWNER);
  const e = thrown(GuidError, () => parseGuid('12345678-9abc-def0-1234-56789abcdefX', '--owner'));
  assert.match(e.message, /--owner "12345678-9abc-def0-1234-56789abcdefX" is not a GUID/);
});

test('timestamps: EFI_TIME layout, and impossible dates refused', () => {
  const t = parseTimestamp('2026-02-28 23:59:59');
  assert.equal(encodeEfiTime(t).toString('hex'), 'ea07021c173b3b000000000000000000');
  assert.deepEqual(decodeEfiTime(encodeEfiTime(t)), t);
  assert.match(thrown(TimestampError, () => parseTimestamp('2026-02-30 00:00:00')).message, /not a real date/);
  assert.match(thrown(TimestampError, () => parseTimestamp('2026-02-03T00:00:00')).message, /YYYY-MM-DD HH:MM:SS/);
});

test('signature lists: several lists decode in order, SHA-256 lists hold 48-byte entries, garbage is refused with where', () => {
  const a = x509List(der(keys[2048].PK.crt), OWNER);
  const h = sha256List([Buffer.alloc(32, 1), Buffer.alloc(32, 2)]);
  const all = decodeEsl(Buffer.concat([a, h]));
  assert.deepEqual(all.map((e) => e.kind), ['x509', 'sha256', 'sha256']);
  assert.equal(h.readUInt32LE(24), 48);
  assert.ok(compareEsl(all, [...all].reverse()).same, 'order does not matter');
  const c = compareEsl(all.slice(0, 2), all);
  assert.equal(c.same, false);
  assert.equal(c.unexpected.length, 1);
  assert.ok(compareEsl(all.slice(0, 2), all, true).same, 'as a subset (after an append) it is there');
  assert.match(thrown(EslError, () => decodeEsl(a.subarray(0, a.length - 5), 'PK.esl')).message, /PK\.esl: list 1 at byte 0: claims \d+ bytes/);
  assert.match(thrown(CertificateError, () => certificatesFromBytes(Buffer.from('hello'), 'x.crt')).message, /x\.crt is not a readable X\.509 certificate/);
});
