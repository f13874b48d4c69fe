// The server's store, one suite run on SQLite (a temp file) and on a real PostgreSQL server.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { tempDir } from '../helpers.ts';
import { startPostgres, type PgServer } from './pg.ts';
import { openStore, parseDbUrl } from '../../src/server/db/connect.ts';
import type { KyselyStore } from '../../src/server/db/kysely-store.ts';
import { MIGRATION_NAMES } from '../../src/server/db/migrations.ts';
import { encodeMessage, openFeed, seqRanges, NOTIFY_MAX_BYTES, type FeedMessage, type PgFeed } from '../../src/server/db/feed.ts';
import { ForeignRunError, UnknownDeviceError, VolumeOfAnotherDeviceError, type Store } from '../../src/server/db/store.ts';
import type { BootlineEvent, RunReport } from '../../src/events.ts';
import type { Device } from '../../src/api/admin.ts';

// ---------------------------------------------------------------------------------
// Events as an agent makes them

const T0 = Date.parse('2025-03-01T08:00:00.000Z');
const at = (s: number): string => new Date(T0 + s * 1000).toISOString();

const runStart = (runId: string, seq: number, progress = 0): BootlineEvent => ({
  type: 'run-start',
  runId,
  seq,
  ts: at(seq),
  progress,
  count: 3,
  tasks: [],
  version: '0.1.0',
  hostname: 'installer',
  resumed: [],
});
const taskStart = (runId: string, seq: number, task: string, index: number, progress: number): BootlineEvent => ({
  type: 'task-start',
  runId,
  seq,
  ts: at(seq),
  progress,
  task,
  index,
  count: 3,
  attempt: 1,
  taskProgress: 0,
});
const taskProgress = (runId: string, seq: number, task: string, index: number, progress: number): BootlineEvent => ({
  type: 'task-progress',
  runId,
  seq,
  ts: at(seq),
  progress,
  task,
  index,
  count: 3,
  taskProgress: 50,
});
const taskEnd = (runId: string, seq: number, task: string, index: number, status: 'ok' | 'failed' | 'skipped', progress: number, message?: string): BootlineEvent => ({
  type: 'task-end',
  runId,
  seq,
  ts: at(seq),
  progress,
  task,
  index,
  count: 3,
  status,
  attempt: 1,
  durationMs: 1000,
  taskProgress: 100,
  optional: false,
  ...(message !== undefined ? { message } : {}),
});
const report = (runId: string, status: 'ok' | 'failed' | 'aborted'): RunReport => ({
  runId,
  status,
  startedAt: at(0),
  endedAt: at(100),
  durationMs: 100_000,
  progress: status === 'ok' ? 100 : 40,
  tasks: [{ name: 'partition', status: 'ok', attempts: 1, durationMs: 1000, optional: false, lastLines: ['done'] }],
});
const runEnd = (runId: string, seq: number, status: 'ok' | 'failed' | 'aborted', progress: number, message?: string): BootlineEvent => ({
  type: 'run-end',
  runId,
  seq,
  ts: at(seq),
  progress,
  status,
  durationMs: 100_000,
  report: report(runId, status),
  ...(message !== undefined ? { message } : {}),
});
const log = (runId: string, seq: number, message: string, progress = 0): BootlineEvent => ({
  type: 'log',
  runId,
  seq,
  ts: at(seq),
  progress,
  stream: 'stdout',
  level: 'info',
  message,
});

let serials = 0;
const hash = (s: string) => `hash-${s}`;
async function newDevice(store: Store, over: { serial?: string; macs?: string[]; hostname?: string; batch?: string } = {}): Promise<Device> {
  const serial = over.serial ?? `SN${++serials}`;
  return store.enrollDevice({ serial, macs: over.macs ?? [], ...(over.hostname ? { hostname: over.hostname } : {}) }, over.batch ?? 'line-a', hash(serial), at(0));
}

async function waitFor<T>(what: string, get: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------

describe('database URLs', () => {
  it('accepts sqlite and postgres URLs and names the accepted forms otherwise', async () => {
    assert.deepEqual(parseDbUrl('sqlite:/var/lib/bootline/db.sqlite'), { dialect: 'sqlite', path: '/var/lib/bootline/db.sqlite' });
    assert.deepEqual(parseDbUrl('sqlite::memory:'), { dialect: 'sqlite', path: ':memory:' });
    assert.deepEqual(parseDbUrl('postgresql://u@h/db'), { dialect: 'postgres', url: 'postgresql://u@h/db' });
    await assert.rejects(openStore('mysql://root:secret@h/db'), (e: Error) => {
      assert.match(e.message, /unsupported database URL/);
      assert.match(e.message, /sqlite:PATH/);
      assert.match(e.message, /postgres:\/\//);
      assert.doesNotMatch(e.message, /secret/);
      return true;
    });
    await assert.rejects(openStore('sqlite:'), /no path/);
  });

  it('works in memory', async () => {
    const store = await openStore('sqlite::memory:');
    await store.migrate();
    const d = await newDevice(store);
    assert.equal((await store.getDevice(d.id))?.serial, d.serial);
    await store.close();
  });
});

describe('feed payloads', () => {
  it('makes seq ranges', () => {
    assert.deepEqual(seqRanges([5, 1, 2, 3, 7, 8, 3]), [
      [1, 3],
      [5, 5],
      [7, 8],
    ]);
  });

  it('splits pointers over several notifications when the seqs are scattered', () => {
    const events = Array.from({ length: 300 }, (_, i) => ({ runId: 'run-1', seq: i * 2, deviceId: 'd', type: 'log', ts: at(i), receivedAt: at(i), body: { pad: 'x'.repeat(50) } }));
    const device = { id: 'd' } as Device;
    const payloads = encodeMessage({ device, events }, 1000);
    assert.ok(payloads.length > 1, `${payloads.length} payloads`);
    const seqs: number[] = [];
    for (const p of payloads) {
      assert.ok(Buffer.byteLength(p) <= 1000);
      const ptr = JSON.parse(p) as { k: string; runs: { runId: string; ranges: [number, number][] }[] };
      assert.equal(ptr.k, 'p');
      for (const r of ptr.runs) for (const [a, b] of r.ranges) for (let s = a; s <= b; s++) seqs.push(s);
    }
    assert.deepEqual(seqs, events.map((e) => e.seq));
    // A small message goes whole.
    const small = encodeMessage({ device, events: events.slice(0, 2) });
    assert.equal(small.length, 1);
    assert.equal((JSON.parse(small[0]!) as { k: string }).k, 'm');
  });
});

interface Backend {
  name: 'sqlite' | 'postgres';
  /** A new empty database. */
  newUrl(name: string): Promise<string>;
}

let pgServer: PgServer | undefined;
let dbCount = 0;
const backends: Backend[] = [
  {
    name: 'sqlite',
    newUrl: async (name) => `sqlite:${join(sqliteDir, `${name}-${++dbCount}.sqlite`)}`,
  },
  {
    name: 'postgres',
    newUrl: async (name) => {
      pgServer ??= await startPostgres();
      return pgServer.createDatabase(`${name}_${++dbCount}`);
    },
  },
];
// Made here, at the top level, so that tempDir removes it when the file's tests end.
const sqliteDir = tempDir('bootline-store-');
after(async () => {
  await pgServer?.stop();
});

for (const backend of backends) {
  describe(`store on ${backend.name}`, () => {
    const open: Store[] = [];
    /** A migrated store on a new database. */
    async function fresh(name = 'store'): Promise<{ store: Store; url: string }> {
      const url = await backend.newUrl(name);
      const store = await openStore(url);
      open.push(store);
      await store.migrate();
      return { store, url };
    }
    before(async () => {
      // PostgreSQL starts here, so that its start-up is not in a test's time.
      if (backend.name === 'postgres') await backend.newUrl('warmup');
    });
    after(async () => {
      for (const s of open) await s.close().catch(() => undefined);
    });

    it('migrates idempotently, and several stores can migrate one new database at once', async () => {
      const url = await backend.newUrl('migrate');
      const stores = await Promise.all([1, 2, 3, 4].map(() => openStore(url)));
      open.push(...stores);
      assert.equal(stores[0]!.dialect, backend.name);
      await Promise.all(stores.map((s) => s.migrate()));
      await stores[0]!.migrate();
      const db = (stores[0] as KyselyStore).db;
      const names = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(db);
      assert.deepEqual(
        names.rows.map((r) => r.name),
        [...MIGRATION_NAMES],
      );
      // Each store works on the migrated schema.
      for (const [i, s] of stores.entries()) await newDevice(s, { serial: `M${i}` });
      assert.equal((await stores[3]!.listDevices({})).length, 4);
    });

    it('enrolls by serial, else by a shared MAC, else as a new device', async () => {
      const { store } = await fresh('enroll');
      const a = await store.enrollDevice({ serial: 'SN-A', macs: ['02:00:00:00:00:01'], hostname: 'box-a' }, 'line-a', 'cred-1', at(0));
      assert.match(a.id, /^dev_[a-z2-7]{16}$/);
      assert.equal(a.state, 'enrolled');
      assert.equal(a.batch, 'line-a');
      assert.equal(a.firstSeen, at(0));
      assert.deepEqual(await store.findDeviceByCredential('cred-1'), a);

      // Same serial, new MACs and batch: same device, credential replaced.
      const a2 = await store.enrollDevice({ serial: 'SN-A', macs: ['02:00:00:00:00:02'] }, 'line-b', 'cred-2', at(10));
      assert.equal(a2.id, a.id);
      assert.equal(a2.batch, 'line-b');
      assert.equal(a2.hostname, 'box-a');
      assert.deepEqual(a2.macs, ['02:00:00:00:00:02']);
      assert.equal(a2.firstSeen, at(0));
      assert.equal(a2.lastSeen, at(10));
      assert.equal(await store.findDeviceByCredential('cred-1'), undefined);
      assert.equal((await store.findDeviceByCredential('cred-2'))?.id, a.id);

      // Without a serial: the device with a shared MAC.
      const b = await store.enrollDevice({ macs: ['02:00:00:00:00:10', '02:00:00:00:00:11'] }, 'line-a', 'cred-3', at(20));
      assert.notEqual(b.id, a.id);
      const b2 = await store.enrollDevice({ macs: ['02:00:00:00:00:11', '02:00:00:00:00:12'] }, 'line-a', 'cred-4', at(30));
      assert.equal(b2.id, b.id);
      assert.equal((await store.findDeviceByMac('02:00:00:00:00:12'))?.id, b.id);
      assert.equal((await store.findDeviceByMac('02:00:00:00:00:02'))?.id, a.id);
      assert.equal(await store.findDeviceByMac('02:00:00:00:00:99'), undefined);

      // A different serial is a different device even with a known MAC.
      const c = await store.enrollDevice({ serial: 'SN-C', macs: ['02:00:00:00:00:10'] }, 'line-a', 'cred-5', at(40));
      assert.notEqual(c.id, b.id);
      assert.notEqual(c.id, a.id);
      // Nothing shared: new.
      const d = await store.enrollDevice({ macs: ['02:00:00:00:00:20'] }, 'line-a', 'cred-6', at(50));
      assert.equal(new Set([a.id, b.id, c.id, d.id]).size, 4);
      assert.equal((await store.listDevices({})).length, 4);

      // Two enrollments of one new serial at once make one device.
      const [x, y] = await Promise.all([
        store.enrollDevice({ serial: 'SN-RACE', macs: [] }, 'l', 'cred-7', at(60)),
        store.enrollDevice({ serial: 'SN-RACE', macs: [] }, 'l', 'cred-8', at(60)),
      ]);
      assert.equal(x.id, y.id);
    });

    it('keeps tokens, users and admin tokens; expired and revoked tokens are returned as such', async () => {
      const { store } = await fresh('tokens');
      assert.equal(await store.countAdminTokens(), 0);
      await store.addAdminToken('admin-hash');
      await store.addAdminToken('admin-hash');
      assert.equal(await store.countAdminTokens(), 1);
      assert.equal(await store.hasAdminToken('admin-hash'), true);
      assert.equal(await store.hasAdminToken('other'), false);

      await store.setUser('ann', 'pw1');
      await store.setUser('ann', 'pw2');
      assert.equal(await store.getUserHash('ann'), 'pw2');
      assert.equal(await store.getUserHash('bob'), undefined);

      const t1 = await store.createEnrollmentToken({ id: 'tok_1', hash: 'th1', label: 'line-a', expiresAt: null });
      assert.equal(t1.uses, 0);
      assert.equal(t1.revokedAt, null);
      await store.createEnrollmentToken({ id: 'tok_2', hash: 'th2', label: 'line-b', expiresAt: '2000-01-01T00:00:00.000Z' });
      await store.countTokenUse('tok_1');
      await store.countTokenUse('tok_1');
      assert.equal((await store.findEnrollmentToken('th1'))?.uses, 2);
      assert.equal((await store.findEnrollmentToken('th2'))?.expiresAt, '2000-01-01T00:00:00.000Z');
      assert.equal(await store.findEnrollmentToken('nope'), undefined);

      assert.equal(await store.revokeEnrollmentToken('tok_1', at(5)), true);
      assert.equal(await store.revokeEnrollmentToken('tok_1', at(9)), true);
      assert.equal(await store.revokeEnrollmentToken('tok_x', at(5)), false);
      const revoked = await store.findEnrollmentToken('th1');
      assert.equal(revoked?.revokedAt, at(5));
      assert.equal(revoked?.label, 'line-a');
      assert.deepEqual((await store.listEnrollmentTokens()).map((t) => t.id).sort(), ['tok_1', 'tok_2']);
    });

    it('ingests a run: the run and the device follow its events, the report is kept', async () => {
      const { store } = await fresh('ingest');
      const dev = await newDevice(store);
      const R = 'run-1';

      let r = await store.ingestEvents(dev.id, [runStart(R, 0), taskStart(R, 1, 'partition', 0, 0)], at(1), 'plan-a');
      assert.equal(r.stored, 2);
      assert.equal(r.duplicates, 0);
      assert.deepEqual(
        r.fresh.map((e) => [e.runId, e.seq, e.type, e.deviceId, e.receivedAt]),
        [
          [R, 0, 'run-start', dev.id, at(1)],
          [R, 1, 'task-start', dev.id, at(1)],
        ],
      );
      assert.equal(r.device.state, 'running');
      assert.equal(r.device.currentRun, R);
      assert.equal(r.device.currentTask, 'partition');
      assert.equal(r.device.plan, 'plan-a');
      assert.equal(r.device.lastSeen, at(1));
      let run = await store.getRun(R);
      assert.equal(run?.status, 'running');
      assert.equal(run?.plan, 'plan-a');
      assert.equal(run?.deviceId, dev.id);
      assert.equal(run?.startedAt, at(0));
      assert.equal(run?.endedAt, null);

      r = await store.ingestEvents(
        dev.id,
        [taskProgress(R, 2, 'partition', 0, 10), taskEnd(R, 3, 'partition', 0, 'ok', 20), taskStart(R, 4, 'deploy', 1, 20), taskProgress(R, 5, 'deploy', 1, 35)],
        at(5),
        null,
      );
      assert.equal(r.device.progress, 35);
      assert.equal(r.device.currentTask, 'deploy');
      assert.equal(r.device.plan, 'plan-a');
      assert.deepEqual(await store.getDevice(dev.id), r.device);

      r = await store.ingestEvents(dev.id, [taskEnd(R, 6, 'deploy', 1, 'failed', 40, 'no space left on /dev/sda'), runEnd(R, 7, 'failed', 40)], at(8), null);
      assert.equal(r.device.state, 'failed');
      assert.equal(r.device.message, 'no space left on /dev/sda');
      assert.equal(r.device.progress, 40);
      run = await store.getRun(R);
      assert.equal(run?.status, 'failed');
      assert.equal(run?.endedAt, at(7));
      assert.equal(run?.progress, 40);
      assert.deepEqual(run?.report, report(R, 'failed'));
      assert.deepEqual(await store.getDevice(dev.id), r.device);

      // Events as stored, in order, with the body as sent.
      const events = await store.listEvents(R);
      assert.deepEqual(
        events.map((e) => e.seq),
        [0, 1, 2, 3, 4, 5, 6, 7],
      );
      assert.deepEqual(events[6]!.body, taskEnd(R, 6, 'deploy', 1, 'failed', 40, 'no space left on /dev/sda'));
      assert.deepEqual(
        (await store.listEvents(R, 3, 2)).map((e) => e.seq),
        [4, 5],
      );
      assert.equal(await store.countEvents(), 8);

      // A new run resets progress and task; a successful end clears the failure message.
      r = await store.ingestEvents(dev.id, [runStart('run-2', 0)], at(20), 'plan-b');
      assert.equal(r.device.progress, 0);
      assert.equal(r.device.currentTask, null);
      assert.equal(r.device.message, null);
      assert.equal(r.device.state, 'running');
      assert.equal(r.device.plan, 'plan-b');
      r = await store.ingestEvents(dev.id, [taskStart('run-2', 1, 'partition', 0, 0), runEnd('run-2', 2, 'ok', 100)], at(21), null);
      assert.equal(r.device.state, 'succeeded');
      assert.equal(r.device.progress, 100);
      assert.equal((await store.lastRun(dev.id))?.id, 'run-2');
      assert.deepEqual(
        (await store.listRuns(dev.id)).map((x) => [x.id, x.status]),
        [
          ['run-2', 'ok'],
          ['run-1', 'failed'],
        ],
      );
    });

    it('stores a re-sent batch once and changes nothing', async () => {
      const { store } = await fresh('dupes');
      const dev = await newDevice(store);
      const batch = [runStart('r', 0), taskStart('r', 1, 'a', 0, 0), taskProgress('r', 2, 'a', 0, 30), log('r', 3, 'hello', 30)];
      const first = await store.ingestEvents(dev.id, batch, at(1), 'p');
      assert.deepEqual([first.stored, first.duplicates], [4, 0]);
      const eventsBefore = await store.listEvents('r');
      const runBefore = await store.getRun('r');
      const deviceBefore = await store.getDevice(dev.id);

      const again = await store.ingestEvents(dev.id, batch, at(50), 'other-plan');
      assert.deepEqual([again.stored, again.duplicates], [0, 4]);
      assert.deepEqual(again.fresh, []);
      assert.deepEqual(again.device, deviceBefore);
      assert.deepEqual(await store.listEvents('r'), eventsBefore);
      assert.deepEqual(await store.getRun('r'), runBefore);
      assert.deepEqual(await store.getDevice(dev.id), deviceBefore);
      assert.equal(await store.countEvents(), 4);

      // Partly new: only the new ones are stored, and a seq twice in one batch counts once.
      const mixed = await store.ingestEvents(dev.id, [taskProgress('r', 2, 'a', 0, 30), log('r', 4, 'one', 31), log('r', 4, 'two', 31)], at(60), null);
      assert.deepEqual([mixed.stored, mixed.duplicates], [1, 2]);
      assert.deepEqual(
        mixed.fresh.map((e) => [e.seq, e.body.message]),
        [[4, 'one']],
      );
      assert.equal(await store.countEvents(), 5);

      // A batch larger than one INSERT takes (the route allows 1000 events).
      const many = Array.from({ length: 1200 }, (_, i) => log('big', i, `line ${i}`, i / 12));
      const big = await store.ingestEvents(dev.id, many, at(70), null);
      assert.deepEqual([big.stored, big.duplicates], [1200, 0]);
      assert.deepEqual(
        big.fresh.map((e) => e.seq),
        many.map((e) => e.seq),
      );
      const bigAgain = await store.ingestEvents(dev.id, [...many.slice(600), log('big', 1200, 'last', 100)], at(71), null);
      assert.deepEqual([bigAgain.stored, bigAgain.duplicates], [1, 600]);
      assert.equal(bigAgain.device.progress, 100);
      assert.equal(await store.countEvents(), 5 + 1201);
    });

    it('takes batches out of order: a run without its run-start yet, and late events of an older run', async () => {
      const { store } = await fresh('order');
      const dev = await newDevice(store);
      // The second batch comes first: the run is created from it.
      let r = await store.ingestEvents(dev.id, [taskStart('r1', 3, 'deploy', 1, 40), taskProgress('r1', 4, 'deploy', 1, 45)], at(10), null);
      assert.equal(r.stored, 2);
      assert.equal(r.device.state, 'running');
      assert.equal(r.device.currentRun, 'r1');
      assert.equal(r.device.currentTask, 'deploy');
      assert.equal(r.device.progress, 45);
      let run = await store.getRun('r1');
      assert.equal(run?.status, 'running');
      assert.equal(run?.startedAt, at(3));

      // Then the first: progress does not go back, the current task stays the later one.
      r = await store.ingestEvents(dev.id, [runStart('r1', 0), taskStart('r1', 1, 'partition', 0, 0), taskEnd('r1', 2, 'partition', 0, 'ok', 40)], at(11), 'plan-a');
      assert.equal(r.stored, 3);
      assert.equal(r.device.progress, 45);
      assert.equal(r.device.currentTask, 'deploy');
      assert.equal(r.device.state, 'running');
      assert.equal(r.device.plan, 'plan-a');
      run = await store.getRun('r1');
      assert.equal(run?.startedAt, at(0));
      assert.equal(run?.plan, 'plan-a');
      assert.deepEqual(
        (await store.listEvents('r1')).map((e) => e.seq),
        [0, 1, 2, 3, 4],
      );

      // The run-end overtaken by a later log: still ends the run.
      r = await store.ingestEvents(dev.id, [log('r1', 7, 'after the end', 100)], at(12), null);
      r = await store.ingestEvents(dev.id, [runEnd('r1', 6, 'ok', 100), taskEnd('r1', 5, 'deploy', 1, 'ok', 90)], at(13), null);
      assert.equal(r.device.state, 'succeeded');
      assert.equal((await store.getRun('r1'))?.status, 'ok');

      // A new run; then a late batch of the old one is stored but leaves the device alone.
      r = await store.ingestEvents(dev.id, [runStart('r2', 0), taskStart('r2', 1, 'partition', 0, 5)], at(20), 'plan-a');
      assert.equal(r.device.currentRun, 'r2');
      assert.equal(r.device.progress, 5);
      r = await store.ingestEvents(dev.id, [log('r1', 8, 'very late', 100)], at(21), null);
      assert.equal(r.stored, 1);
      assert.equal(r.device.currentRun, 'r2');
      assert.equal(r.device.progress, 5);
      assert.equal(r.device.state, 'running');
      assert.equal(r.device.currentTask, 'partition');
      assert.equal(r.fresh[0]?.runId, 'r1');
    });

    it('refuses events of another device’s run and of an unknown device, storing nothing', async () => {
      const { store } = await fresh('owner');
      const a = await newDevice(store);
      const b = await newDevice(store);
      await store.ingestEvents(a.id, [runStart('ra', 0)], at(1), null);
      await assert.rejects(store.ingestEvents(b.id, [log('rb', 0, 'mine'), log('ra', 1, 'not mine')], at(2), null), ForeignRunError);
      await assert.rejects(store.ingestEvents('dev_nobody', [runStart('rx', 0)], at(2), null), UnknownDeviceError);
      assert.equal(await store.countEvents(), 1);
      assert.equal(await store.getRun('rb'), undefined);
      assert.equal((await store.getDevice(b.id))?.state, 'enrolled');
    });

    it('batches posted at the same moment are each stored once, and a bad one fails alone', async () => {
      // On SQLite these share one transaction (group commit), each in its own savepoint.
      const { store } = await fresh('together');
      const devices = await Promise.all(Array.from({ length: 40 }, () => newDevice(store)));
      await store.ingestEvents(devices[0]!.id, [runStart('taken', 0)], at(1), null);
      const results = await Promise.allSettled([
        ...devices.map((d, i) => store.ingestEvents(d.id, [runStart(`g${i}`, 0), log(`g${i}`, 1, 'a'), log(`g${i}`, 2, 'b')], at(2), null)),
        // A new run of its own, then a foreign run: nothing of this batch may stay.
        store.ingestEvents(devices[1]!.id, [log('g1-new', 0, 'mine'), log('taken', 1, 'not mine')], at(2), null),
        // The same batch twice at once: stored once.
        store.ingestEvents(devices[2]!.id, [log('g2', 4, 'again')], at(2), null),
        store.ingestEvents(devices[2]!.id, [log('g2', 4, 'again')], at(2), null),
      ]);
      const rejected = results.flatMap((r, i) => (r.status === 'rejected' ? [[i, r.reason] as const] : []));
      assert.equal(rejected.length, 1, `one batch refused, got ${rejected.map(([i, e]) => `${i}: ${String(e)}`).join('; ')}`);
      assert.ok(rejected[0]![1] instanceof ForeignRunError);
      const stored = results.map((r) => (r.status === 'fulfilled' ? r.value.stored : -1));
      assert.deepEqual(stored.slice(0, 40), Array(40).fill(3));
      assert.deepEqual(stored.slice(41).sort(), [0, 1]);
      assert.equal(await store.countEvents(), 1 + 40 * 3 + 1);
      assert.deepEqual(
        (await store.listEvents('g1')).map((e) => e.seq),
        [0, 1, 2],
      );
      assert.equal(await store.getRun('g1-new'), undefined);
      for (const [i, d] of devices.entries()) assert.equal((await store.getDevice(d.id))?.currentRun, `g${i}`);
    });

    it('lists completed tasks by their last task-end, in plan order', async () => {
      const { store } = await fresh('completed');
      const dev = await newDevice(store);
      const R = 'run-c';
      await store.ingestEvents(
        dev.id,
        [
          runStart(R, 0),
          taskEnd(R, 1, 'partition', 0, 'ok', 10),
          taskEnd(R, 2, 'deploy', 2, 'failed', 20, 'io error'),
          taskEnd(R, 3, 'format', 1, 'ok', 30),
          taskEnd(R, 4, 'format', 1, 'failed', 30),
          taskEnd(R, 5, 'deploy', 2, 'ok', 60),
          taskEnd(R, 6, 'verify', 3, 'skipped', 60),
        ],
        at(1),
        null,
      );
      assert.deepEqual(await store.completedTasks(R), ['partition', 'deploy']);
      assert.deepEqual(await store.completedTasks('no-such-run'), []);
    });

    it('keeps reports, logs and inventory, and exports runs by batch and time', async () => {
      const { store } = await fresh('reports');
      const a = await newDevice(store, { batch: 'line-a' });
      const b = await newDevice(store, { batch: 'line-b' });
      await store.ingestEvents(a.id, [runStart('ra', 0), taskStart('ra', 1, 'x', 0, 10)], at(1), 'p');
      await store.ingestEvents(b.id, [runStart('rb', 100)], at(2), 'p');

      // A report without its run-end event ends the run.
      assert.equal(await store.setReport('ra', a.id, report('ra', 'ok')), true);
      assert.equal(await store.setReport('ra', b.id, report('ra', 'ok')), false);
      assert.equal(await store.setReport('nope', a.id, report('nope', 'ok')), false);
      const ra = await store.getRun('ra');
      assert.equal(ra?.status, 'ok');
      assert.deepEqual(ra?.report, report('ra', 'ok'));
      assert.equal((await store.getDevice(a.id))?.state, 'succeeded');

      assert.equal(await store.setLog('ra', a.id, 'line 1\nline 2\n'), true);
      assert.equal(await store.setLog('ra', a.id, 'line 1\nline 2\nline 3\n'), true);
      assert.equal(await store.setLog('ra', b.id, 'x'), false);
      assert.equal(await store.getLog('ra'), 'line 1\nline 2\nline 3\n');
      assert.equal(await store.getLog('rb'), undefined);

      await store.setInventory(a.id, { cpu: { model: 'Atom' }, disks: [{ name: 'sda', size: 64e9 }] }, at(30));
      const withInventory = await store.getDevice(a.id);
      assert.deepEqual(withInventory?.inventory, { cpu: { model: 'Atom' }, disks: [{ name: 'sda', size: 64e9 }] });
      assert.equal(withInventory?.lastSeen, at(30));
      await store.touchDevice(a.id, at(40));
      assert.equal((await store.getDevice(a.id))?.lastSeen, at(40));

      assert.deepEqual(
        (await store.listRunsForExport({})).map((x) => [x.run.id, x.device.id]),
        [
          ['ra', a.id],
          ['rb', b.id],
        ],
      );
      assert.deepEqual(
        (await store.listRunsForExport({ batch: 'line-b' })).map((x) => x.run.id),
        ['rb'],
      );
      assert.deepEqual(
        (await store.listRunsForExport({ from: at(50), to: at(200) })).map((x) => x.run.id),
        ['rb'],
      );
      assert.deepEqual(
        (await store.listRunsForExport({ to: at(50) })).map((x) => x.run.id),
        ['ra'],
      );
    });

    it('lists devices by state, plan, batch and text, newest first, in pages', async () => {
      const { store } = await fresh('list');
      const d1 = await store.enrollDevice({ serial: 'ABC-001', macs: ['02:aa:00:00:00:01'], hostname: 'Press-Left' }, 'line-a', 'c1', at(1));
      const d2 = await store.enrollDevice({ serial: 'ABC-002', macs: ['02:aa:00:00:00:02'] }, 'line-a', 'c2', at(2));
      const d3 = await store.enrollDevice({ serial: 'XYZ_003', macs: ['02:bb:00:00:00:03'] }, 'line-b', 'c3', at(3));
      await store.ingestEvents(d1.id, [runStart('r1', 0)], at(10), 'plan-a');
      await store.ingestEvents(d2.id, [runStart('r2', 0), runEnd('r2', 1, 'failed', 0)], at(11), 'plan-b');
      const ids = async (f: Parameters<Store['listDevices']>[0]) => (await store.listDevices(f)).map((d) => d.id);

      assert.deepEqual(await ids({}), [d2.id, d1.id, d3.id]);
      assert.deepEqual(await ids({ state: 'running' }), [d1.id]);
      assert.deepEqual(await ids({ state: 'failed' }), [d2.id]);
      assert.deepEqual(await ids({ state: 'enrolled' }), [d3.id]);
      assert.deepEqual(await ids({ plan: 'plan-b' }), [d2.id]);
      assert.deepEqual(await ids({ batch: 'line-a' }), [d2.id, d1.id]);
      assert.deepEqual(await ids({ batch: 'line-a', state: 'failed' }), [d2.id]);
      assert.deepEqual(await ids({ q: 'abc-' }), [d2.id, d1.id]);
      assert.deepEqual(await ids({ q: 'press' }), [d1.id]);
      assert.deepEqual(await ids({ q: '02:bb' }), [d3.id]);
      assert.deepEqual(await ids({ q: d2.id.slice(4, 12) }), [d2.id]);
      // LIKE's wildcards are taken literally.
      assert.deepEqual(await ids({ q: 'ABC_' }), []);
      assert.deepEqual(await ids({ q: 'XYZ_' }), [d3.id]);
      assert.deepEqual(await ids({ q: '%' }), []);
      assert.deepEqual(await ids({ limit: 2 }), [d2.id, d1.id]);
      assert.deepEqual(await ids({ limit: 2, offset: 2 }), [d3.id]);
      assert.deepEqual(await ids({ offset: 1 }), [d1.id, d3.id]);

      assert.deepEqual(await store.countDevicesByState(), { enrolled: 1, running: 1, succeeded: 0, failed: 1, aborted: 0 });
    });

    it('keeps plans, rules and images', async () => {
      const { store } = await fresh('crud');
      await store.putPlan({ name: 'plan-a', description: 'first', config: { tasks: [{ name: 'x' }] } }, at(1));
      await store.putPlan({ name: 'plan-b', config: {} }, at(2));
      await store.putPlan({ name: 'plan-a', config: { tasks: [] } }, at(3));
      assert.deepEqual(await store.getPlan('plan-a'), { name: 'plan-a', config: { tasks: [] }, updatedAt: at(3) });
      assert.deepEqual(
        (await store.listPlans()).map((p) => p.name),
        ['plan-a', 'plan-b'],
      );
      assert.equal(await store.deletePlan('plan-b'), true);
      assert.equal(await store.deletePlan('plan-b'), false);
      assert.equal(await store.getPlan('plan-b'), undefined);

      const r1 = await store.addRule({ priority: 100, match: 'default', action: 'run', plan: 'plan-a' });
      const r2 = await store.addRule({ priority: 10, match: 'serial', pattern: 'ABC-*', action: 'none' });
      const r3 = await store.addRule({ priority: 100, match: 'mac', pattern: '02:00:00:00:00:01', action: 'run', plan: 'plan-a' });
      assert.equal(typeof r1.id, 'number');
      assert.ok(r3.id! > r1.id!);
      assert.deepEqual(await store.listRules(), [
        { id: r2.id, priority: 10, match: 'serial', pattern: 'ABC-*', action: 'none' },
        { id: r1.id, priority: 100, match: 'default', action: 'run', plan: 'plan-a' },
        { id: r3.id, priority: 100, match: 'mac', pattern: '02:00:00:00:00:01', action: 'run', plan: 'plan-a' },
      ]);
      assert.equal(await store.deleteRule(r1.id!), true);
      assert.equal(await store.deleteRule(r1.id!), false);
      assert.equal((await store.listRules()).length, 2);

      const image = {
        name: 'line-a',
        version: '2025.03',
        files: [{ name: 'disk.wic.zst', size: 1234, sha256: 'ab'.repeat(32), bmap: 'disk.wic.bmap' }],
        location: 'local',
        createdAt: at(5),
      };
      await store.putImage(image);
      assert.deepEqual(await store.getImage('line-a'), image);
      await store.putImage({ ...image, version: undefined, location: 's3://bucket/line-a/' });
      assert.deepEqual(await store.getImage('line-a'), { name: 'line-a', files: image.files, location: 's3://bucket/line-a/', createdAt: at(5) });
      assert.deepEqual(
        (await store.listImages()).map((i) => i.name),
        ['line-a'],
      );
      assert.equal(await store.deleteImage('line-a'), true);
      assert.equal(await store.deleteImage('line-a'), false);
      assert.deepEqual(await store.listImages(), []);
    });

    it('keeps sealed recovery keys: one record per volume, replaced by its device, refused to another, reveals counted', async () => {
      const { store } = await fresh('escrow');
      const a = await newDevice(store);
      const b = await newDevice(store);
      await store.ingestEvents(a.id, [runStart('run-crypt', 0)], at(1), 'p');
      const vol = '0f3c1a52-3b5e-4c1d-9a7e-2d4b6c8e0f11';
      const rec = { deviceId: a.id, volumeUuid: vol, partition: '/dev/vda3', label: 'data', keyslot: 2, pcrs: [7, 11], runId: 'run-crypt', sealed: 'bl-escrow-1.x.1', createdAt: at(2) };
      assert.equal(await store.putRecoveryKey(rec), 'stored');
      assert.equal(await store.countRecoveryKeys(), 1);
      await assert.rejects(store.putRecoveryKey({ ...rec, deviceId: b.id, sealed: 'bl-escrow-1.x.other' }), VolumeOfAnotherDeviceError);
      assert.equal((await store.getRecoveryKey(a.id, vol))?.sealed, 'bl-escrow-1.x.1', 'the other device changed nothing');
      assert.equal(await store.getRecoveryKey(b.id, vol), undefined);

      await store.recordRecoveryKeyReveal(a.id, [vol], 'alice', at(3));
      await store.recordRecoveryKeyReveal(b.id, [vol], 'mallory', at(4));
      await store.recordRecoveryKeyReveal(a.id, [vol], 'bob', at(5));
      const listed = await store.listRecoveryKeys(a.id);
      assert.deepEqual(listed, [
        { volumeUuid: vol, partition: '/dev/vda3', label: 'data', keyslot: 2, pcrs: [7, 11], runId: 'run-crypt', createdAt: at(2), revealedAt: at(5), revealedBy: 'bob', revealCount: 2 },
      ]);
      assert.ok(!('sealed' in listed[0]!), 'the list carries no sealed key either');
      assert.deepEqual(
        (await store.recoveryKeysOfRuns(['run-crypt', 'run-none'])).map((k) => [k.deviceId, k.volumeUuid, k.sealed]),
        [[a.id, vol, 'bl-escrow-1.x.1']],
      );

      // Re-provisioned: the same device's new key replaces the record and its reveal history.
      assert.equal(await store.putRecoveryKey({ ...rec, keyslot: 1, pcrs: null, label: null, runId: null, sealed: 'bl-escrow-1.x.2', createdAt: at(6) }), 'replaced');
      assert.deepEqual(await store.getRecoveryKey(a.id, vol), {
        deviceId: a.id, volumeUuid: vol, partition: '/dev/vda3', label: null, keyslot: 1, pcrs: null, runId: null, sealed: 'bl-escrow-1.x.2', createdAt: at(6), revealedAt: null, revealedBy: null, revealCount: 0,
      });
      assert.deepEqual(await store.recoveryKeysOfRuns(['run-crypt']), []);
      assert.equal(await store.deleteRecoveryKey(b.id, vol), false);
      assert.equal(await store.deleteRecoveryKey(a.id, vol), true);
      assert.equal(await store.countRecoveryKeys(), 0);
      assert.equal(await store.putRecoveryKey({ ...rec, deviceId: b.id }), 'stored', 'once forgotten, another device may escrow it');
    });

    it('feeds stored events to subscribers', async () => {
      const { store, url } = await fresh('feed');
      const feed = await openFeed(url, store);
      const got: FeedMessage[] = [];
      const unsubscribe = feed.subscribe((m) => got.push(m));
      const dev = await newDevice(store);
      const r = await store.ingestEvents(dev.id, [runStart('rf', 0), log('rf', 1, 'hi')], at(1), null);
      await feed.publish({ device: r.device, events: r.fresh });
      const msg = await waitFor('the message', () => got[0]);
      assert.deepEqual(msg.device, r.device);
      assert.deepEqual(msg.events, r.fresh);
      unsubscribe();
      await feed.publish({ device: r.device, events: r.fresh });
      await sleep(100);
      assert.equal(got.length, 1);
      await feed.close();
    });

    if (backend.name === 'postgres') {
      it('feeds every process: a message published by one reaches another, once each, large ones by pointer', async () => {
        const { store: storeA, url } = await fresh('feed2');
        const storeB = await openStore(url);
        open.push(storeB);
        const errors: Error[] = [];
        const feedA = await openFeed(url, storeA, { onError: (e) => errors.push(e) });
        const feedB = await openFeed(url, storeB, { onError: (e) => errors.push(e) });
        const atA: FeedMessage[] = [];
        const atB: FeedMessage[] = [];
        feedA.subscribe((m) => atA.push(m));
        feedB.subscribe((m) => atB.push(m));
        try {
          const dev = await newDevice(storeA);
          const small = await storeA.ingestEvents(dev.id, [runStart('rp', 0), taskStart('rp', 1, 'deploy', 0, 3)], at(1), 'plan-a');
          await feedA.publish({ device: small.device, events: small.fresh });
          const first = await waitFor('the small message at B', () => atB[0]);
          assert.deepEqual(first, { device: small.device, events: small.fresh });
          await waitFor('the small message at A', () => atA[0]);

          // Larger than NOTIFY takes: B reads the events and device from the database.
          const lines = Array.from({ length: 40 }, (_, i) => log('rp', 2 + i, `output line ${i} ${'é'.repeat(150)}`, 4));
          const big = await storeA.ingestEvents(dev.id, lines, at(2), null);
          const bigMsg = { device: big.device, events: big.fresh };
          assert.ok(Buffer.byteLength(JSON.stringify(bigMsg)) > 8000);
          const payloads = encodeMessage(bigMsg);
          assert.equal(payloads.length, 1);
          assert.ok(payloads[0]!.startsWith('{"k":"p"') && Buffer.byteLength(payloads[0]!) <= NOTIFY_MAX_BYTES);
          await feedA.publish(bigMsg);
          const second = await waitFor('the large message at B', () => atB[1]);
          assert.equal(second.events.length, 40);
          assert.deepEqual(second.events, big.fresh);
          assert.deepEqual(second.device, big.device);
          await waitFor('the large message at A', () => atA[1]);
          await sleep(200);
          assert.equal(atA.length, 2, 'the publisher receives its message once');
          assert.equal(atB.length, 2);

          // B's listener connection dies: it reconnects and gets what is published after.
          const pgFeedB = feedB as PgFeed;
          assert.equal(pgFeedB.connections, 1);
          const db = (storeA as KyselyStore).db;
          const killed = await sql<{ ok: boolean }>`select pg_terminate_backend(pid) as ok from pg_stat_activity
            where application_name = 'bootline-feed-listen' and datname = current_database()`.execute(db);
          assert.equal(killed.rows.length, 2, 'the two listeners');
          await waitFor('B reconnected', () => (pgFeedB.connections >= 2 ? true : undefined));
          await waitFor('A reconnected', () => ((feedA as PgFeed).connections >= 2 ? true : undefined));
          const third = await storeA.ingestEvents(dev.id, [taskEnd('rp', 42, 'deploy', 0, 'ok', 100)], at(3), null);
          await feedA.publish({ device: third.device, events: third.fresh });
          const after3 = await waitFor('a message after the reconnect', () => atB[2]);
          assert.equal(after3.events[0]?.seq, 42);
          assert.ok(errors.some((e) => /listener connection lost/.test(e.message)));
        } finally {
          await feedA.close();
          await feedB.close();
        }
      });
    }
  });
}
