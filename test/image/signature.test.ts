import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync, mkdirSync, mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  SignatureError,
  generateKeyPair,
  keyId,
  parseSignature,
  sha256Payload,
  sign,
  signatureCandidates,
  splitPublicKeys,
  verify,
  verifySha256Signature,
} from '../../src/image/signature.ts';
import { GpgError, extractClearsigned, gpgSignatureCandidates, isClearsigned, verifyGpg } from '../../src/image/gpg.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';
import { thrown, BMAPTOOL_FIXTURES } from '../helpers.ts';

const BMAP = readFileSync(join(BMAPTOOL_FIXTURES, 'test.image.bmap.v2.0'));
const signer = generateKeyPair();
const stranger = generateKeyPair();

const sigErrorOf = (fn: () => unknown): SignatureError => thrown(SignatureError, fn);

// ---- ed25519 ----

test('a bmap signed with a key the device trusts verifies, naming the key', () => {
  const text = sign(BMAP, signer.privatePem, 'bmap');
  assert.match(keyId(signer.publicPem), /^[0-9a-f]{16}$/);
  assert.equal(keyId(signer.privatePem), keyId(signer.publicPem), 'a private key has the id of its public key');
  const lines = text.trimEnd().split('\n');
  assert.deepEqual(
    lines.map((l) => l.split(':')[0]),
    ['bootline-signature', 'algorithm', 'key-id', 'signed', 'signature'],
  );
  assert.equal(lines[2], `key-id: ${keyId(signer.publicPem)}`);
  const r = verify(BMAP, text, [stranger.publicPem, signer.publicPem], 'product.wic.bmap.ed25519.sig', { dataName: 'product.wic.bmap', expect: 'bmap' });
  assert.deepEqual(r, { keyId: keyId(signer.publicPem), signed: 'bmap' });
});

test('a signature by a key that is not trusted is refused, naming both keys and what to do', () => {
  const text = sign(BMAP, stranger.privatePem, 'bmap');
  const e = sigErrorOf(() => verify(BMAP, text, [signer.publicPem], 'p.bmap.ed25519.sig', { trustedKeysLocation: '/etc/bootline/trusted-keys.pem' }));
  assert.equal(
    e.message,
    `p.bmap.ed25519.sig: signed by key ${keyId(stranger.publicPem)}, which is not among the trusted keys (${keyId(signer.publicPem)}) — ` +
      'install the right public key in /etc/bootline/trusted-keys.pem, or sign with a trusted key',
  );
  assert.match(sigErrorOf(() => verify(BMAP, text, [], 'p.sig')).message, /^p\.sig: no trusted public keys are configured/);
});

test('a bmap changed by one byte after signing is refused', () => {
  const text = sign(BMAP, signer.privatePem, 'bmap');
  const changed = Buffer.from(BMAP);
  changed[200] = changed[200]! ^ 1;
  const e = sigErrorOf(() => verify(changed, text, [signer.publicPem], 'product.wic.bmap.ed25519.sig', { dataName: 'product.wic.bmap' }));
  assert.equal(
    e.message,
    'product.wic.bmap.ed25519.sig: signature does not match product.wic.bmap — the bmap was changed after signing or the signature belongs to another file',
  );
});

test('malformed signature files are refused, naming the file and the line', () => {
  const good = sign(BMAP, signer.privatePem, 'bmap');
  const lines = good.split('\n');
  const bad = (mutate: (l: string[]) => string[], pattern: RegExp) => {
    const e = sigErrorOf(() => parseSignature(mutate([...lines]).join('\n'), 'x.sig'));
    assert.match(e.message, pattern);
    return e;
  };
  assert.equal(bad((l) => (l.splice(2, 0, 'this is not a field'), l), /^x\.sig:3: expected "<field>: <value>"/).line, 3);
  bad((l) => (l.splice(1, 0, 'signed: bmap'), l), /^x\.sig:5: "signed" given twice \(first on line 2\)/);
  bad((l) => [l[1]!, l[0]!, ...l.slice(2)], /^x\.sig:1: not a bootline signature file/);
  bad((l) => (l[0] = 'bootline-signature: 2', l), /^x\.sig:1: format version "2" is not supported/);
  bad((l) => (l[2] = 'key-id: ABC', l), /^x\.sig:3: key-id "ABC" is not 16 lowercase hex digits/);
  bad((l) => (l[3] = 'signed: image', l), /^x\.sig:4: signed "image" must be "bmap" or "sha256"/);
  bad((l) => (l[4] = l[4]!.slice(0, 40), l), /^x\.sig:5: signature is not the base64 of a 64-byte ed25519 signature/);
  bad((l) => (l[4] = `${l[4]!.slice(0, -3)}!!=`, l), /^x\.sig:5: signature is not the base64/);
  bad((l) => (l.splice(4, 1), l), /^x\.sig: the field "signature" is missing/);
  bad((l) => (l.splice(3, 0, 'comment: hi'), l), /^x\.sig:4: unknown field "comment"/);
  bad((l) => (l.splice(4, 0, `sha256: ${'a'.repeat(64)}`), l), /^x\.sig:5: a "sha256" field belongs only with "signed: sha256"/);
  assert.match(sigErrorOf(() => parseSignature('', 'x.sig')).message, /^x\.sig: is empty/);
  assert.match(sigErrorOf(() => parseSignature('-----BEGIN PGP SIGNATURE-----\n', 'x.sig')).message, /is a GPG signature/);
  // Comments, blank lines and CRLF are fine.
  assert.equal(parseSignature(`# made on the build server\n\n${good.replace(/\n/g, '\r\n')}`, 'x.sig').keyId, keyId(signer.publicPem));
});

test('a signature with an unknown algorithm is refused', () => {
  const text = sign(BMAP, signer.privatePem, 'bmap').replace('algorithm: ed25519', 'algorithm: rsa-pss');
  const e = sigErrorOf(() => verify(BMAP, text, [signer.publicPem], 'x.sig'));
  assert.equal(e.message, 'x.sig:2: algorithm "rsa-pss" is not supported; bootline signatures are ed25519');
});

test('an image without a bmap is signed through its sha256, checked before writing', () => {
  const digest = createHash('sha256').update('the decompressed image').digest('hex');
  const text = sign(sha256Payload(digest), signer.privatePem, 'sha256');
  assert.match(text, new RegExp(`\\nsigned: sha256\\nsha256: ${digest}\\n`));
  assert.deepEqual(verifySha256Signature(text, [signer.publicPem], 'a.wic.zst.ed25519.sig'), { keyId: keyId(signer.publicPem), sha256: digest });
  assert.equal(verifySha256Signature(text, [signer.publicPem], 's', { imageSha256: digest.toUpperCase() }).sha256, digest);
  // The digest in the file cannot be swapped: the signature covers it.
  const other = 'b'.repeat(64);
  assert.match(sigErrorOf(() => verifySha256Signature(text.replace(digest, other), [signer.publicPem], 's')).message, /^s: signature does not match sha256 b{64}/);
  assert.match(sigErrorOf(() => verifySha256Signature(text, [signer.publicPem], 's', { imageSha256: other, imageName: 'a.wic' })).message, /but a\.wic is expected to have sha256 b{64}/);
  // A bmap signature is not an image signature and the other way round.
  assert.match(sigErrorOf(() => verifySha256Signature(sign(BMAP, signer.privatePem, 'bmap'), [signer.publicPem], 's')).message, /signs a bmap, but the image is copied without one/);
  assert.match(sigErrorOf(() => verify(BMAP, text, [signer.publicPem], 's', { expect: 'bmap', dataName: 'a.bmap' })).message, /signs an image's sha256, but a\.bmap is checked through its bmap/);
  assert.throws(() => sign(BMAP, signer.privatePem, 'sha256'), /must be sha256Payload/);
});

test('keys that are not ed25519 are refused with a clear message', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  const rsaPub = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const rsaPriv = rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  assert.match(sigErrorOf(() => sign(BMAP, rsaPriv, 'bmap')).message, /is a rsa key; make an ed25519 one/);
  assert.match(sigErrorOf(() => verify(BMAP, sign(BMAP, signer.privatePem, 'bmap'), [rsaPub], 's')).message, /^trusted key 1: is a rsa key/);
  assert.match(sigErrorOf(() => keyId('not a key')).message, /not a PEM public key/);
});

test('a trusted-keys file may hold several public keys', () => {
  const keys = splitPublicKeys(`# line 3\n${signer.publicPem}\n${stranger.publicPem}`, 'trusted.pem');
  assert.deepEqual(keys.map(keyId), [keyId(signer.publicPem), keyId(stranger.publicPem)]);
  assert.match(sigErrorOf(() => splitPublicKeys('nothing', 'trusted.pem')).message, /^trusted\.pem: holds no PEM public key/);
});

test('the ed25519 sidecar is <signed file>.ed25519.sig, keeping URL queries', () => {
  assert.deepEqual(signatureCandidates('out/product.wic.bmap'), ['out/product.wic.bmap.ed25519.sig']);
  assert.deepEqual(signatureCandidates('https://h/i/p.wic.bmap?token=x'), ['https://h/i/p.wic.bmap.ed25519.sig?token=x']);
  assert.deepEqual(signatureCandidates('s3://b/k/p.wic.zst'), ['s3://b/k/p.wic.zst.ed25519.sig']);
  assert.deepEqual(signatureCandidates('-'), []);
});

// ---- GPG (bmaptool's signed bmaps) through gpgv ----

const hasGpg = spawnSync('gpg', ['--version']).status === 0 && spawnSync('gpgv', ['--version']).status === 0;
const gpgSkip = hasGpg ? false : 'gpg/gpgv not installed: install the Debian packages gnupg and gpgv to run the GPG signature tests';

interface Gpg {
  dir: string;
  home: string;
  trustedFpr: string;
  trustedKeyring: string;
  trustedArmored: string;
  otherKeyring: string;
}
let g: Gpg | undefined;

function gpg(home: string, args: string[], input?: string): string {
  return execFileSync('gpg', ['--batch', '--quiet', '--no-tty', ...args], { env: { ...process.env, GNUPGHOME: home }, input, encoding: 'latin1', stdio: ['pipe', 'pipe', 'pipe'] });
}

before(() => {
  if (!hasGpg) return;
  // Not helpers' tempDir: an after() registered inside a hook runs when the hook ends.
  const dir = mkdtempSync(join(tmpdir(), 'bootline-gpg-test-'));
  g = { dir, home: join(dir, 'gnupg'), trustedFpr: '', trustedKeyring: '', trustedArmored: '', otherKeyring: '' };
  const home = join(dir, 'gnupg');
  mkdirSync(home);
  chmodSync(home, 0o700);
  const fprOf = (uid: string) => {
    gpg(home, ['--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', uid, 'ed25519', 'sign', 'never']);
    const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(gpg(home, ['--with-colons', '--list-keys', uid]));
    assert.ok(fpr, `no fingerprint for ${uid}`);
    return fpr[1]!;
  };
  const trustedFpr = fprOf('Line Signer <signer@example.com>');
  const otherFpr = fprOf('Someone Else <other@example.com>');
  const trustedKeyring = join(dir, 'trusted.gpg');
  const trustedArmored = join(dir, 'trusted.asc');
  const otherKeyring = join(dir, 'other.gpg');
  writeFileSync(trustedKeyring, Buffer.from(gpg(home, ['--export', trustedFpr]), 'latin1'));
  writeFileSync(trustedArmored, gpg(home, ['--export', '--armor', trustedFpr]));
  writeFileSync(otherKeyring, Buffer.from(gpg(home, ['--export', otherFpr]), 'latin1'));
  writeFileSync(join(dir, 'p.bmap'), BMAP);
  gpg(home, ['--local-user', trustedFpr, '--armor', '--detach-sign', '-o', join(dir, 'p.bmap.asc'), join(dir, 'p.bmap')]);
  gpg(home, ['--local-user', trustedFpr, '--detach-sign', '-o', join(dir, 'p.bmap.sig'), join(dir, 'p.bmap')]);
  gpg(home, ['--local-user', trustedFpr, '--clearsign', '-o', join(dir, 'clear.bmap'), join(dir, 'p.bmap')]);
  gpg(home, ['--local-user', otherFpr, '--armor', '--detach-sign', '-o', join(dir, 'other.asc'), join(dir, 'p.bmap')]);
  g = { dir, home, trustedFpr, trustedKeyring, trustedArmored, otherKeyring };
});

after(() => {
  if (!g) return;
  // The agent gpg started for key generation, then the keys and files.
  spawnSync('gpgconf', ['--kill', 'gpg-agent'], { env: { ...process.env, GNUPGHOME: g.home } });
  rmSync(g.dir, { recursive: true, force: true });
});

async function gpgErrorOf(p: Promise<unknown>): Promise<GpgError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof GpgError) return e;
    throw e;
  }
  assert.fail('expected a GpgError');
}

test('gpg: a detached .asc signature by a trusted key verifies with gpgv', { skip: gpgSkip }, async () => {
  const { dir, trustedKeyring, trustedFpr } = g!;
  const r = await verifyGpg({ bmapPath: join(dir, 'p.bmap'), signaturePath: join(dir, 'p.bmap.asc'), keyring: trustedKeyring });
  assert.equal(r.signedText, BMAP.toString('utf8'));
  assert.equal(r.fingerprint, trustedFpr);
  assert.equal(r.clearsigned, false);
  assert.equal(r.signer, 'Line Signer <signer@example.com>');
});

test('gpg: a binary .sig verifies against an armored keyring too', { skip: gpgSkip }, async () => {
  const { dir, trustedArmored, trustedFpr } = g!;
  const r = await verifyGpg({ bmapText: BMAP, bmapName: 'p.bmap', signature: readFileSync(join(dir, 'p.bmap.sig')), signatureName: 'p.bmap.sig', keyring: trustedArmored });
  assert.equal(r.fingerprint, trustedFpr);
});

test('gpg: a clearsigned bmap is verified and its bmap extracted, checksum intact', { skip: gpgSkip }, async () => {
  const { dir, trustedKeyring, trustedFpr } = g!;
  const text = readFileSync(join(dir, 'clear.bmap'), 'utf8');
  assert.ok(isClearsigned(text));
  const r = await verifyGpg({ bmapText: text, bmapName: 'clear.bmap', keyring: trustedKeyring });
  assert.equal(r.clearsigned, true);
  assert.equal(r.fingerprint, trustedFpr);
  assert.equal(r.signedText, BMAP.toString('utf8'));
  assert.equal(parseBmap(r.signedText, 'clear.bmap').ranges.length, 48);
  // --no-sig-verify: the same text, without gpgv; dash-escaped lines are restored.
  assert.equal(extractClearsigned(text), r.signedText);
  const dashed = gpg(g!.home, ['--local-user', trustedFpr, '--clearsign'], '-- not XML\nline\n');
  assert.match(dashed, /\n- -- not XML\n/);
  assert.equal(extractClearsigned(dashed), '-- not XML\nline\n');
  assert.equal((await verifyGpg({ bmapText: dashed, keyring: trustedKeyring })).signedText, '-- not XML\nline\n');
});

test('gpg: a signature by a key outside the trusted keyring is refused', { skip: gpgSkip }, async () => {
  const { dir, trustedKeyring, otherKeyring } = g!;
  const e = await gpgErrorOf(verifyGpg({ bmapPath: join(dir, 'p.bmap'), signaturePath: join(dir, 'other.asc'), keyring: trustedKeyring }));
  assert.match(e.message, new RegExp(`^${join(dir, 'other.asc')}: signed by GPG key [0-9A-F]{16}, which is not in the trusted keyring \\(${trustedKeyring}\\) — add the signer's public key`));
  // And the trusted signature is refused by a keyring that holds only the other key.
  const e2 = await gpgErrorOf(verifyGpg({ bmapPath: join(dir, 'p.bmap'), signaturePath: join(dir, 'p.bmap.asc'), keyring: otherKeyring }));
  assert.match(e2.message, /which is not in the trusted keyring/);
});

test('gpg: a bmap changed after signing, or text added to a clearsigned one, is refused', { skip: gpgSkip }, async () => {
  const { dir, trustedKeyring } = g!;
  const changed = BMAP.toString('utf8').replace('<BlockSize> 4096', '<BlockSize> 4097');
  const e = await gpgErrorOf(verifyGpg({ bmapText: changed, bmapName: 'p.bmap', signaturePath: join(dir, 'p.bmap.asc'), signatureName: 'p.bmap.asc', keyring: trustedKeyring }));
  assert.match(e.message, /^p\.bmap\.asc: BAD GPG signature from Line Signer <signer@example\.com> over p\.bmap — the bmap was changed after signing/);
  const clear = readFileSync(join(dir, 'clear.bmap'), 'utf8');
  const inner = await gpgErrorOf(verifyGpg({ bmapText: clear.replace('<BlockSize> 4096', '<BlockSize> 4097'), bmapName: 'c.bmap', keyring: trustedKeyring }));
  assert.match(inner.message, /^c\.bmap: BAD GPG signature/);
  const tail = await gpgErrorOf(verifyGpg({ bmapText: `${clear}<Range> 0-1 </Range>\n`, bmapName: 'c.bmap', keyring: trustedKeyring }));
  assert.match(tail.message, /^c\.bmap: has text after "-----END PGP SIGNATURE-----"/);
  const twice = await gpgErrorOf(verifyGpg({ bmapText: clear + clear, bmapName: 'c.bmap', keyring: trustedKeyring }));
  assert.match(twice.message, /^c\.bmap: not a single clearsigned message/);
  const garbage = await gpgErrorOf(verifyGpg({ bmapText: BMAP, signature: 'hello\n', signatureName: 'p.bmap.sig', keyring: trustedKeyring }));
  assert.match(garbage.message, /^p\.bmap\.sig: holds no valid OpenPGP signature/);
});

test('gpg: bad inputs and a missing gpgv are explained', { skip: gpgSkip }, async () => {
  const { dir, trustedKeyring } = g!;
  const clear = readFileSync(join(dir, 'clear.bmap'));
  assert.match((await gpgErrorOf(verifyGpg({ bmapText: clear, bmapName: 'c.bmap', signature: 'x', keyring: trustedKeyring }))).message, /is clearsigned and already holds its signature/);
  assert.match((await gpgErrorOf(verifyGpg({ bmapText: BMAP, bmapName: 'p.bmap', keyring: trustedKeyring }))).message, /is not clearsigned and no detached signature/);
  const missing = join(dir, 'nope.gpg');
  assert.match(
    (await gpgErrorOf(verifyGpg({ bmapText: BMAP, signaturePath: join(dir, 'p.bmap.asc'), keyring: missing }))).message,
    new RegExp(`the trusted GPG keyring ${missing} cannot be read \\(ENOENT\\)`),
  );
  const path = process.env.PATH;
  process.env.PATH = join(dir, 'no-bin');
  try {
    const e = await gpgErrorOf(verifyGpg({ bmapText: BMAP, bmapName: 'p.bmap', signaturePath: join(dir, 'p.bmap.asc'), keyring: trustedKeyring }));
    assert.match(e.message, /the program `gpgv` is not installed; install the Debian package gpgv \(apt-get install gpgv\)/);
  } finally {
    process.env.PATH = path;
  }
});

test('gpg: sidecars and clearsign detection follow bmaptool', () => {
  assert.deepEqual(gpgSignatureCandidates('a/p.wic.bmap'), ['a/p.wic.bmap.asc', 'a/p.wic.bmap.sig']);
  assert.deepEqual(gpgSignatureCandidates('http://h/p.wic.bmap?t=1'), ['http://h/p.wic.bmap.asc?t=1', 'http://h/p.wic.bmap.sig?t=1']);
  assert.ok(isClearsigned(Buffer.from('-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n')));
  assert.ok(!isClearsigned(' -----BEGIN PGP SIGNED MESSAGE-----'), 'bmaptool compares the first bytes exactly');
  assert.ok(!isClearsigned(BMAP));
});
