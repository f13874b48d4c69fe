// The enroll-secure-boot task on a fake efivarfs: a directory on ext4 (so that chattr's
// immutable flag is real) holding `<Name>-<guid>` files, and, where the test needs a
// firmware to answer, a stand-in that keeps the variables as UEFI would (the value
// without its authentication header; Setup Mode ends when PK is written). Real efivarfs
// with OVMF in Setup Mode is exercised by the lab test.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createPrivateKey } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import type { TaskContext, TaskProgress } from '../../src/agent/tasks/builtin.ts';
import { TaskError } from '../../src/agent/tasks/builtin.ts';
import { enroll, EnrollSecureBootOptions } from '../../src/agent/tasks/enroll-secure-boot/index.ts';
import { efivarfs, type EfiVariables, type StoredVariable } from '../../src/agent/tasks/enroll-secure-boot/efivarfs.ts';
import { decodeAuth, makeAuth } from '../../src/secureboot/auth.ts';
import { parseTimestamp } from '../../src/secureboot/efi-time.ts';
import { x509List } from '../../src/secureboot/esl.ts';
import { certificatesFromBytes } from '../../src/secureboot/x509.ts';
import { efivarfsName, type KeyVariable, type ModeVariable } from '../../src/secureboot/variables.ts';
import { fixturePair, type KeyPair } from '../secureboot/fixtures.ts';

type Opts = EnrollSecureBootOptions;
const OWNER = '0b0e0e0f-1111-2222-3333-444455556666';

// ---------------------------------------------------------------- keys and .auth files

const der = (p: KeyPair) => certificatesFromBytes(readFileSync(p.crt), p.crt)[0]!;
const ours = { PK: fixturePair('PK', 2048), KEK: fixturePair('KEK', 2048), db: fixturePair('db', 2048) };
const theirs = { PK: fixturePair('PK', 4096), KEK: fixturePair('KEK', 4096) };
const eslOf = (p: KeyPair) => x509List(der(p), OWNER);

function auth(variable: KeyVariable, esl: Buffer, signer: KeyPair, time = '2026-06-01 10:00:00'): Buffer {
  return makeAuth({ variable, esl, key: createPrivateKey(readFileSync(signer.key)), certDer: der(signer), time: parseTimestamp(time) });
}

const work = scratch('bootline-sb-task-');
const files = {
  PK: save('PK.auth', auth('PK', eslOf(ours.PK), ours.PK)),
  KEK: save('KEK.auth', auth('KEK', eslOf(ours.KEK), ours.PK)),
  db: save('db.auth', auth('db', eslOf(ours.db), ours.KEK)),
};

function save(name: string, bytes: Buffer): string {
  const p = join(work, name);
  writeFileSync(p, bytes);
  return p;
}

/** A temp dir on the test machine's disk (ext4: chattr works), unlocked and removed at the end. */
function scratch(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => {
    spawnSync('chattr', ['-R', '-i', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

// ---------------------------------------------------------------- a fake efivarfs tree, a firmware stand-in

interface Modes {
  SetupMode?: number;
  SecureBoot: number;
  AuditMode?: number;
  DeployedMode?: number;
}

function varFile(root: string, name: KeyVariable | ModeVariable): string {
  return join(root, efivarfsName(name));
}

/** A directory laid out as efivarfs: mode variables (attributes BS|RT) and stored keys (0x27 + list). */
function fakeTree(modes: Modes, stored: Partial<Record<KeyVariable, Buffer>> = {}): string {
  const root = scratch('bootline-efivars-');
  for (const [name, v] of Object.entries(modes)) if (v !== undefined) writeFileSync(varFile(root, name as ModeVariable), Buffer.from([6, 0, 0, 0, v as number]));
  for (const [name, esl] of Object.entries(stored)) writeFileSync(varFile(root, name as KeyVariable), Buffer.concat([Buffer.from([0x27, 0, 0, 0]), esl]));
  return root;
}

/**
 * Writes go to the tree through the real efivarfs code (attributes prefix, chattr); the
 * firmware's answers come from what it would store: the .auth's list, SetupMode 0 after PK.
 * `drop` names a variable this firmware silently does not keep (a broken firmware).
 */
function firmware(root: string, o: { drop?: KeyVariable; chattr?: string } = {}) {
  const real = efivarfs(root, { chattr: o.chattr ?? 'chattr' });
  const order: KeyVariable[] = [];
  const written: Partial<Record<KeyVariable, Buffer>> = {};
  const state = new Map<string, StoredVariable>();
  for (const f of readdirSync(root)) {
    const b = readFileSync(join(root, f));
    state.set(f.replace(/-[0-9a-f-]{36}$/, ''), { attributes: b.readUInt32LE(0), data: b.subarray(4) });
  }
  const vars: EfiVariables = {
    root,
    read: async (name) => state.get(name),
    async write(name, attributes, data) {
      const steps = await real.write(name, attributes, data);
      order.push(name);
      written[name] = readFileSync(varFile(root, name));
      if (name !== o.drop) state.set(name, { attributes, data: decodeAuth(data, name).esl });
      if (name === 'PK') state.set('SetupMode', { attributes: 6, data: Buffer.from([0]) });
      return steps;
    },
  };
  return { vars, order, written };
}

// ---------------------------------------------------------------- the task's context

function ctxFor(options: Partial<Opts>) {
  const opts = Value.Default(EnrollSecureBootOptions, structuredClone({ pk: files.PK, kek: files.KEK, db: files.db, mount: false, ...options })) as Opts;
  assert.ok(Value.Check(EnrollSecureBootOptions, opts), `test options must satisfy the schema: ${JSON.stringify(opts)}`);
  const logs: string[] = [];
  const progress: TaskProgress[] = [];
  const ctx: TaskContext<Opts> = {
    name: 'secure-boot',
    options: opts,
    env: {},
    stateDir: work,
    unattended: true,
    signal: new AbortController().signal,
    progress: (p) => progress.push(p),
    log: (level, m) => logs.push(`${level}: ${m}`),
    confirm: async () => true,
    setOutput: () => undefined,
  };
  return { ctx, logs, progress };
}

async function failure(p: Promise<unknown>): Promise<TaskError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof TaskError) return e;
    throw e;
  }
  assert.fail('expected the task to fail');
}

const lsattr = (file: string) => execFileSync('lsattr', [file], { encoding: 'utf8' }).split(/\s/)[0]!;
const snapshot = (root: string) => readdirSync(root).sort().map((f) => `${f}:${readFileSync(join(root, f)).toString('hex')}`);

// ---------------------------------------------------------------- tests

test('in Setup Mode the task writes db, then KEK, then PK last, each as attributes 0x27 followed by the .auth, and checks them', async () => {
  const root = fakeTree({ SetupMode: 1, SecureBoot: 0, AuditMode: 0, DeployedMode: 0 });
  const fw = firmware(root);
  const { ctx, logs, progress } = ctxFor({ efivars: root });
  await enroll(ctx, { vars: fw.vars });
  assert.deepEqual(fw.order, ['db', 'KEK', 'PK']);
  for (const v of ['db', 'KEK', 'PK'] as const) {
    const f = fw.written[v]!;
    assert.equal(f.readUInt32LE(0), 0x27, `${v}: attributes prefix`);
    assert.deepEqual(f.subarray(4), readFileSync(files[v]), `${v}: the .auth follows the attributes`);
  }
  assert.ok(logs.some((l) => /Secure Boot state: Setup Mode \(SetupMode=1, SecureBoot=0, AuditMode=0, DeployedMode=0\)/.test(l)), logs.join('\n'));
  assert.ok(logs.some((l) => /read back as intended; firmware now in User Mode/.test(l)), logs.join('\n'));
  assert.equal(progress.at(-1)!.taskProgress, 100);
  assert.ok(progress.some((p) => p.message === 'firmware in Setup Mode'));
});

test('an existing variable file that efivarfs made immutable is unlocked with chattr -i, written, and locked again', async () => {
  const root = fakeTree({ SetupMode: 1, SecureBoot: 0 }, { db: eslOf(theirs.KEK) });
  execFileSync('chattr', ['+i', varFile(root, 'db')]);
  const fw = firmware(root);
  const { ctx, logs } = ctxFor({ efivars: root });
  await enroll(ctx, { vars: fw.vars });
  assert.equal(fw.written.db!.readUInt32LE(0), 0x27);
  assert.deepEqual(fw.written.db!.subarray(4, 4 + readFileSync(files.db).length), readFileSync(files.db));
  assert.ok(logs.some((l) => /db: .*is immutable: chattr -i/.test(l)), logs.join('\n'));
  assert.match(lsattr(varFile(root, 'db')), /i/, 'the flag is back, as efivarfs had it');

  // Without a working chattr the write fails and says which command.
  const root2 = fakeTree({ SetupMode: 1, SecureBoot: 0 }, { db: eslOf(theirs.KEK) });
  execFileSync('chattr', ['+i', varFile(root2, 'db')]);
  const { ctx: ctx2 } = ctxFor({ efivars: root2, commands: { chattr: 'false' } });
  const e = await failure(enroll(ctx2, { vars: firmware(root2, { chattr: 'false' }).vars }));
  assert.match(e.message, /false -i .*db-d719b2cb-3d3a-4596-a3bc-dad00e67656f failed.*\(nothing was written\)/);
});

test('a firmware that does not keep what was written is caught on reading back', async () => {
  // Plain files, no firmware: the .auth stays as written and Setup Mode never ends.
  const root = fakeTree({ SetupMode: 1, SecureBoot: 0 });
  const { ctx } = ctxFor({ efivars: root });
  const e = await failure(enroll(ctx));
  assert.match(e.message, /after writing db, KEK, PK the firmware does not hold the intended keys/);
  assert.match(e.message, /still in Setup Mode/);
  assert.equal(readFileSync(varFile(root, 'PK')).readUInt32LE(0), 0x27, 'the real efivarfs writer put the attributes first');

  // A firmware that drops db: named, with the missing certificate.
  const fw = firmware(fakeTree({ SetupMode: 1, SecureBoot: 0 }), { drop: 'db' });
  const e2 = await failure(enroll(ctxFor({}).ctx, { vars: fw.vars }));
  assert.match(e2.message, /db: not set/);
});

test('outside Setup Mode the task refuses, naming the mode and what to do, and writes nothing', async () => {
  const root = fakeTree({ SetupMode: 0, SecureBoot: 1, AuditMode: 0, DeployedMode: 0 }, { PK: eslOf(theirs.PK), KEK: eslOf(theirs.KEK), db: eslOf(theirs.KEK) });
  const before = snapshot(root);
  const fw = firmware(root);
  const e = await failure(enroll(ctxFor({ efivars: root }).ctx, { vars: fw.vars }));
  assert.match(e.message, /the firmware is in User Mode, not Setup Mode, and holds other keys than intended/);
  assert.match(e.message, /PK: missing "test PK 2048".*not intended "test PK 4096"/);
  assert.match(e.message, /put the firmware in Setup Mode/);
  assert.deepEqual(fw.order, []);
  assert.deepEqual(snapshot(root), before);
});

test('ifAlreadyEnrolled: skip succeeds without writing when the intended keys are enrolled (a re-run after a power loss)', async () => {
  const stored = { PK: eslOf(ours.PK), KEK: eslOf(ours.KEK), db: eslOf(ours.db) };
  const root = fakeTree({ SetupMode: 0, SecureBoot: 1 }, stored);
  const fw = firmware(root);
  const { ctx, logs } = ctxFor({ efivars: root, ifAlreadyEnrolled: 'skip' });
  await enroll(ctx, { vars: fw.vars });
  assert.deepEqual(fw.order, []);
  assert.ok(logs.some((l) => /already holds exactly the intended PK, KEK, db: nothing to write/.test(l) || /already holds exactly the intended db, KEK, PK/.test(l)), logs.join('\n'));

  // The default (fail) refuses even then, and says how to accept it.
  const e = await failure(enroll(ctxFor({ efivars: root }).ctx, { vars: firmware(root).vars }));
  assert.match(e.message, /already holds exactly the intended keys.*ifAlreadyEnrolled: skip/);

  // Different keys: skip refuses.
  const other = fakeTree({ SetupMode: 0, SecureBoot: 1 }, { ...stored, db: eslOf(theirs.KEK) });
  const e2 = await failure(enroll(ctxFor({ efivars: other, ifAlreadyEnrolled: 'skip' }).ctx, { vars: firmware(other).vars }));
  assert.match(e2.message, /db: missing "test db 2048".*not intended "test KEK 4096"/);
});

test('ifAlreadyEnrolled: update writes only what differs when it is signed by the enrolled KEK; a stranger\'s update is refused first', async () => {
  const root = fakeTree({ SetupMode: 0, SecureBoot: 1 }, { PK: eslOf(ours.PK), KEK: eslOf(ours.KEK), db: eslOf(theirs.KEK) });
  const fw = firmware(root);
  await enroll(ctxFor({ efivars: root, ifAlreadyEnrolled: 'update' }).ctx, { vars: fw.vars });
  assert.deepEqual(fw.order, ['db']);

  const stranger = save('db-by-stranger.auth', auth('db', eslOf(ours.db), theirs.KEK));
  const root2 = fakeTree({ SetupMode: 0, SecureBoot: 1 }, { PK: eslOf(ours.PK), KEK: eslOf(ours.KEK), db: eslOf(theirs.KEK) });
  const fw2 = firmware(root2);
  const e = await failure(enroll(ctxFor({ efivars: root2, ifAlreadyEnrolled: 'update', db: stranger }).ctx, { vars: fw2.vars }));
  assert.match(e.message, /db-by-stranger\.auth is signed by "test KEK 4096".*not in the enrolled KEK or PK.*Nothing was written/);
  assert.deepEqual(fw2.order, []);
});

test('a .auth for another variable, or a file that is no .auth, is refused before anything is written', async () => {
  const root = fakeTree({ SetupMode: 1, SecureBoot: 0 });
  const fw = firmware(root);
  const e = await failure(enroll(ctxFor({ efivars: root, db: files.KEK }).ctx, { vars: fw.vars }));
  assert.match(e.message, /db update .*KEK\.auth cannot be used: its signature does not verify as an update of db/);
  const esl = save('db.esl', eslOf(ours.db));
  const e2 = await failure(enroll(ctxFor({ efivars: root, db: esl }).ctx, { vars: fw.vars }));
  assert.match(e2.message, /db\.esl is not an EFI_VARIABLE_AUTHENTICATION_2 \(\.auth\) file/);
  const e3 = await failure(enroll(ctxFor({ efivars: root, db: 'nowhere/db.auth', installData: work }).ctx, { vars: fw.vars }));
  assert.match(e3.message, /cannot read nowhere\/db\.auth: tried .*not found/);
  assert.deepEqual(fw.order, []);
});

test('the .auth files can come by URL from the server, with its token', async () => {
  const server = createServer((req, res) => {
    if (req.headers.authorization !== 'Bearer line-token') {
      res.writeHead(401).end('no');
      return;
    }
    const name = (req.url ?? '').split('/').pop() as 'PK.auth' | 'KEK.auth' | 'db.auth';
    const body = readFileSync(join(work, name));
    const range = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    if (range) {
      res.writeHead(206, { 'content-range': `bytes ${range[1]}-${range[2]}/${body.length}`, 'content-length': Number(range[2]) - Number(range[1]) + 1 });
      res.end(body.subarray(Number(range[1]), Number(range[2]) + 1));
    } else res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  after(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as { port: number }).port}/keys`;
  const urls = { pk: `${base}/PK.auth`, kek: `${base}/KEK.auth`, db: `${base}/db.auth` };
  const fw = firmware(fakeTree({ SetupMode: 1, SecureBoot: 0 }));
  await enroll(ctxFor({ ...urls, token: 'line-token' }).ctx, { vars: fw.vars });
  assert.deepEqual(fw.order, ['db', 'KEK', 'PK']);
  const e = await failure(enroll(ctxFor(urls).ctx, { vars: firmware(fakeTree({ SetupMode: 1, SecureBoot: 0 })).vars }));
  assert.match(e.message, /cannot fetch http:\/\/127\.0\.0\.1:\d+\/keys\/db\.auth: HTTP 401/);
});

test('when efivarfs is not mounted and cannot be, the task says so and that UEFI boot is needed', async () => {
  const dir = scratch('bootline-noefivars-');
  const e = await failure(enroll(ctxFor({ efivars: dir, mount: true, commands: { mount: 'false', modprobe: 'false' } }).ctx));
  assert.match(e.message, /cannot mount efivarfs at .*bootline-noefivars-.*booted in UEFI mode/);
  assert.equal(statSync(dir).isDirectory(), true);
});

test('the mode is named from the four variables, and a firmware without SetupMode is refused', async () => {
  const { modeOf, decide } = await import('../../src/agent/tasks/enroll-secure-boot/plan.ts');
  assert.equal(modeOf({ setupMode: 1, auditMode: 1 }), 'Audit Mode');
  assert.equal(modeOf({ setupMode: 0, deployedMode: 1 }), 'Deployed Mode');
  assert.equal(modeOf({ setupMode: 0, secureBoot: 1 }), 'User Mode');
  assert.equal(decide({ state: {}, intended: [], stored: {}, policy: 'skip' }).action, 'refuse');
  const root = fakeTree({ SecureBoot: 0 });
  const e = await failure(enroll(ctxFor({ efivars: root }).ctx, { vars: firmware(root).vars }));
  assert.match(e.message, /no SetupMode variable: it does not support Secure Boot/);
});
