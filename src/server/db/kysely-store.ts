// The Store on Kysely: one implementation, the same queries on SQLite and PostgreSQL.
// Dialect differences are kept to transactions (BEGIN IMMEDIATE on SQLite, SELECT ... FOR NO KEY
// UPDATE of the device row on PostgreSQL) and to what each returns for a count.
import { randomBytes } from 'node:crypto';
import { sql, type Compilable, type CompiledQuery, type Generated, type Kysely, type QueryResult, type Selectable, type Transaction } from 'kysely';
import type { BootlineEvent } from '../../events.ts';
import type { Device, DeviceState, EnrollmentToken, Image, Plan, Rule, Run, StoredEvent } from '../../api/admin.ts';
import type { EscrowedVolume } from '../../api/recovery-key.ts';
import type { DeviceFilter, DeviceIdentity, IngestResult, NewRecoveryKey, RecoveryKeyRecord, Store } from './store.ts';
import { ForeignRunError, UnknownDeviceError, VolumeOfAnotherDeviceError } from './store.ts';
import { migrate } from './migrations.ts';
import { GroupCommit } from './group-commit.ts';

// ---------------------------------------------------------------------------------
// Tables (as the migrations create them)

interface AdminTokensTable {
  hash: string;
  created_at: string;
}
interface UsersTable {
  name: string;
  password_hash: string;
  updated_at: string;
}
interface EnrollmentTokensTable {
  id: string;
  hash: string;
  label: string;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  uses: Generated<number>;
}
interface DevicesTable {
  id: string;
  serial: string | null;
  uuid: string | null;
  macs: string;
  hostname: string | null;
  batch: string | null;
  credential_hash: string | null;
  first_seen: string;
  last_seen: string;
  state: DeviceState;
  progress: number;
  current_task: string | null;
  current_run: string | null;
  plan: string | null;
  message: string | null;
  inventory: string | null;
  inventory_at: string | null;
}
interface DeviceMacsTable {
  mac: string;
  device_id: string;
}
type RunStatus = Run['status'];
interface RunsTable {
  id: string;
  device_id: string;
  plan: string | null;
  started_at: string;
  ended_at: string | null;
  status: RunStatus;
  progress: number;
  report: string | null;
  created_at: string;
  last_seq: number;
  current_task: string | null;
  message: string | null;
}
interface EventsTable {
  run_id: string;
  seq: number;
  device_id: string;
  type: string;
  ts: string;
  received_at: string;
  body: string;
}
interface LogsTable {
  run_id: string;
  device_id: string;
  content: string;
  updated_at: string;
}
interface PlansTable {
  name: string;
  description: string | null;
  config: string;
  updated_at: string;
}
interface RulesTable {
  id: Generated<number>;
  priority: number;
  match_kind: Rule['match'];
  pattern: string | null;
  action: Rule['action'];
  plan: string | null;
}
interface ImagesTable {
  name: string;
  version: string | null;
  files: string;
  location: string;
  created_at: string;
}
interface RecoveryKeysTable {
  volume_uuid: string;
  device_id: string;
  partition: string;
  label: string | null;
  keyslot: number;
  /** JSON array of PCR numbers. */
  pcrs: string | null;
  run_id: string | null;
  sealed: string;
  created_at: string;
  revealed_at: string | null;
  revealed_by: string | null;
  reveal_count: Generated<number>;
}

export interface Database {
  admin_tokens: AdminTokensTable;
  users: UsersTable;
  enrollment_tokens: EnrollmentTokensTable;
  devices: DevicesTable;
  device_macs: DeviceMacsTable;
  runs: RunsTable;
  events: EventsTable;
  logs: LogsTable;
  plans: PlansTable;
  rules: RulesTable;
  images: ImagesTable;
  recovery_keys: RecoveryKeysTable;
}

type Db = Kysely<Database>;
type DeviceRow = Selectable<DevicesTable>;
type RunRow = Selectable<RunsTable>;
type EventRow = Selectable<EventsTable>;

// ---------------------------------------------------------------------------------
// Rows to records

const parseJson = <T>(text: string | null): T | null => (text === null ? null : (JSON.parse(text) as T));

function toDevice(r: DeviceRow): Device {
  return {
    id: r.id,
    serial: r.serial,
    uuid: r.uuid,
    macs: JSON.parse(r.macs) as string[],
    hostname: r.hostname,
    batch: r.batch,
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
    state: r.state,
    progress: Number(r.progress),
    currentTask: r.current_task,
    currentRun: r.current_run,
    plan: r.plan,
    message: r.message,
    inventory: parseJson<Record<string, unknown>>(r.inventory),
  };
}

function toRun(r: RunRow): Run {
  return {
    id: r.id,
    deviceId: r.device_id,
    plan: r.plan,
    startedAt: r.started_at,
    endedAt: r.ended_at,
    status: r.status,
    progress: Number(r.progress),
    report: parseJson<Record<string, unknown>>(r.report),
  };
}

function toEvent(r: EventRow): StoredEvent {
  return {
    runId: r.run_id,
    seq: r.seq,
    deviceId: r.device_id,
    type: r.type,
    ts: r.ts,
    receivedAt: r.received_at,
    body: JSON.parse(r.body) as Record<string, unknown>,
  };
}

function toToken(r: Selectable<EnrollmentTokensTable>): EnrollmentToken {
  return {
    id: r.id,
    label: r.label,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    uses: Number(r.uses),
  };
}

function toRule(r: Selectable<RulesTable>): Rule {
  const rule: Rule = { id: Number(r.id), priority: r.priority, match: r.match_kind, action: r.action };
  if (r.pattern !== null) rule.pattern = r.pattern;
  if (r.plan !== null) rule.plan = r.plan;
  return rule;
}

function toPlan(r: Selectable<PlansTable>): Plan {
  const plan: Plan = { name: r.name, config: JSON.parse(r.config) as Record<string, unknown>, updatedAt: r.updated_at };
  if (r.description !== null) plan.description = r.description;
  return plan;
}

function toImage(r: Selectable<ImagesTable>): Image {
  const image: Image = { name: r.name, files: JSON.parse(r.files) as Image['files'], location: r.location, createdAt: r.created_at };
  if (r.version !== null) image.version = r.version;
  return image;
}

function toEscrowedVolume(r: Selectable<RecoveryKeysTable>): EscrowedVolume {
  return {
    volumeUuid: r.volume_uuid,
    partition: r.partition,
    label: r.label,
    keyslot: Number(r.keyslot),
    pcrs: parseJson<number[]>(r.pcrs),
    runId: r.run_id,
    createdAt: r.created_at,
    revealedAt: r.revealed_at,
    revealedBy: r.revealed_by,
    revealCount: Number(r.reveal_count),
  };
}

function toRecoveryKey(r: Selectable<RecoveryKeysTable>): RecoveryKeyRecord {
  return { ...toEscrowedVolume(r), deviceId: r.device_id, sealed: r.sealed };
}

const STATE_OF: Record<RunStatus, DeviceState> = { running: 'running', ok: 'succeeded', failed: 'failed', aborted: 'aborted' };
const DEVICE_STATES: readonly DeviceState[] = ['enrolled', 'running', 'succeeded', 'failed', 'aborted'];

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** `dev_` and 16 base32 characters: 80 random bits. */
export function newDeviceId(): string {
  const bytes = randomBytes(10);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return `dev_${out}`;
}

/** `%` and `_` and the escape itself taken literally in a LIKE pattern with ESCAPE '\'. */
const likeLiteral = (s: string): string => s.replace(/[\\%_]/g, (c) => `\\${c}`);

const key = (runId: string, seq: number): string => `${seq}\u0000${runId}`;

// ---------------------------------------------------------------------------------
// Ingestion's pure part: what a batch does to its runs and its device.

/** A run's row as ingestion updates it. */
interface RunState {
  row: RunRow;
  /** Created by this batch. */
  created: boolean;
  changed: boolean;
}

/**
 * Tasks a run finished, in plan order: the last task-end of each task decides, and a task
 * the run skipped because an earlier run had finished it (run-start's `resumed`) counts as
 * finished, so a second power loss does not lose the first run's work.
 */
export function completedFromEvents(events: readonly BootlineEvent[]): string[] {
  const order = new Map<string, number>();
  const done = new Map<string, boolean>();
  for (const e of events) {
    if (e.type === 'run-start') {
      e.tasks.forEach((t, i) => order.set(t.name, i));
      for (const t of e.resumed) done.set(t, true);
    } else if (e.type === 'task-end') {
      if (!order.has(e.task)) order.set(e.task, e.index);
      if (e.status === 'skipped') continue;
      done.set(e.task, e.status === 'ok');
    }
  }
  return [...done]
    .filter(([, ok]) => ok)
    .map(([task]) => task)
    .sort((a, b) => (order.get(a) ?? Infinity) - (order.get(b) ?? Infinity));
}

/** Applies one run's fresh events (in seq order) to its row; `plan` is the plan a run-start gets. */
function applyToRun(r: RunState, events: BootlineEvent[], plan: string | null): void {
  const row = r.row;
  for (const e of events) {
    if (e.progress > row.progress) row.progress = e.progress;
    if (e.type === 'run-start') {
      row.started_at = e.ts;
      // The run was created by events that overtook its run-start.
      if (row.plan === null) row.plan = plan;
    }
    if (e.type === 'run-end') {
      // Terminal whatever order it came in (logs after the end may have overtaken it).
      row.status = e.status;
      row.ended_at = e.ts;
      row.report = JSON.stringify(e.report);
      row.message = e.message ?? (e.status === 'ok' ? null : row.message);
    }
    if (e.seq > row.last_seq) {
      row.last_seq = e.seq;
      if (e.type === 'task-start' || e.type === 'task-progress') row.current_task = e.task;
      if (e.type === 'task-end' && e.status === 'failed' && e.message !== undefined && row.status === 'running') row.message = e.message;
    }
  }
  r.changed = true;
}

// ---------------------------------------------------------------------------------

export interface KyselyStoreOptions {
  /** Most bind parameters one statement may have. */
  maxVariables: number;
  /**
   * SQLite: BEGIN IMMEDIATE on the store's connection without waiting; false when another
   * connection holds the write lock. Without it, the store sends BEGIN IMMEDIATE through
   * Kysely and relies on the busy timeout.
   */
  tryBeginImmediate?: () => boolean;
  /** SQLite: how long to keep retrying BEGIN IMMEDIATE (default 10 s). */
  lockTimeoutMs?: number;
}

const EVENT_COLUMNS = 7;
/** Rows per INSERT at most, even where the parameter limit would allow more. */
const MAX_ROWS_PER_INSERT = 500;

/** Marks a placeholder value in a query compiled once per shape (runShaped). */
const PLACEHOLDER = '\u0000bootline-param:';

interface IngestJob {
  deviceId: string;
  events: BootlineEvent[];
  now: string;
  plan: string | null;
}

export class KyselyStore implements Store {
  private readonly rowsPerInsert: number;
  /** Compiled queries by shape (runShaped). */
  private readonly shapes = new Map<string, CompiledQuery<unknown>>();
  private readonly ingestGroup: GroupCommit<Db, IngestJob, IngestResult> | undefined;
  private readonly tryBeginImmediate: (() => boolean) | undefined;
  private readonly lockTimeoutMs: number;

  constructor(
    readonly db: Db,
    readonly dialect: 'sqlite' | 'postgres',
    options: KyselyStoreOptions,
  ) {
    this.rowsPerInsert = Math.max(1, Math.min(MAX_ROWS_PER_INSERT, Math.floor(options.maxVariables / EVENT_COLUMNS)));
    this.tryBeginImmediate = options.tryBeginImmediate;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 10_000;
    if (dialect === 'sqlite') {
      this.ingestGroup = new GroupCommit<Db, IngestJob, IngestResult>(
        (fn) => this.tx(fn),
        {
          begin: (db, name) => sql`savepoint ${sql.id(name)}`.execute(db).then(() => undefined),
          release: (db, name) => sql`release savepoint ${sql.id(name)}`.execute(db).then(() => undefined),
          rollback: (db, name) => sql`rollback to savepoint ${sql.id(name)}`.execute(db).then(() => undefined),
        },
        (db, job) => this.ingestInTx(db, job),
      );
    }
  }

  /**
   * SQLite: BEGIN IMMEDIATE on `conn` (which holds Kysely's connection mutex, so nothing
   * else of this process runs on it meanwhile), retried asynchronously while another
   * connection or process holds the write lock.
   */
  private async beginImmediate(conn: Db): Promise<void> {
    const tryBegin = this.tryBeginImmediate;
    if (!tryBegin) {
      await sql`begin immediate`.execute(conn);
      return;
    }
    const deadline = Date.now() + this.lockTimeoutMs;
    for (let attempt = 0; !tryBegin(); attempt++) {
      if (Date.now() > deadline) throw new Error(`database is locked: another connection has held its write lock for ${this.lockTimeoutMs} ms`);
      await new Promise((r) => setTimeout(r, Math.min(20, 1 + attempt)));
    }
  }

  /** A round trip: fails when the database cannot be reached. */
  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  migrate(): Promise<void> {
    return migrate(this.db, this.dialect, (conn) => this.beginImmediate(conn));
  }

  close(): Promise<void> {
    return this.db.destroy();
  }

  /**
   * Runs `fn` in one transaction. SQLite: BEGIN IMMEDIATE takes the write lock first, so
   * a transaction that reads and then writes never fails on a lock upgrade (and waits on
   * busy_timeout for another process); Kysely's one SQLite connection serialises callers.
   */
  private async tx<T>(fn: (db: Db) => Promise<T>): Promise<T> {
    if (this.dialect === 'postgres') return this.db.transaction().execute((trx: Transaction<Database>) => fn(trx));
    return this.db.connection().execute(async (conn) => {
      await this.beginImmediate(conn);
      let result: T;
      try {
        result = await fn(conn);
      } catch (e) {
        await sql`rollback`.execute(conn).catch(() => undefined);
        throw e;
      }
      await sql`commit`.execute(conn);
      return result;
    });
  }

  /**
   * Runs a query that is built and compiled once per `shape`, then reused with new values:
   * the hot path (event ingestion) spent as much time building and compiling its queries
   * as SQLite spent running them. `build` gets `v(name)`, a placeholder value, and each
   * later run puts `values[name]` where that placeholder's parameter was.
   */
  private runShaped<R>(db: Db, shape: string, build: (v: (name: string) => never) => Compilable<R>, values: Record<string, unknown>): Promise<QueryResult<R>> {
    let compiled = this.shapes.get(shape) as CompiledQuery<R> | undefined;
    if (compiled === undefined) {
      compiled = build((name) => `${PLACEHOLDER}${name}` as never).compile();
      this.shapes.set(shape, compiled);
    }
    const parameters = compiled.parameters.map((p) => {
      if (typeof p !== 'string' || !p.startsWith(PLACEHOLDER)) return p;
      const name = p.slice(PLACEHOLDER.length);
      if (!(name in values)) throw new Error(`query shape ${shape}: no value for ${name}`);
      return values[name];
    });
    return db.executeQuery<R>({ ...compiled, parameters });
  }

  /** The device row, locked until the transaction ends on PostgreSQL (SQLite's is already exclusive). */
  private async lockDevice(db: Db, id: string): Promise<DeviceRow | undefined> {
    const r = await this.runShaped<DeviceRow>(
      db,
      'lock-device',
      (v) =>
        db
          .selectFrom('devices')
          .selectAll()
          .where('id', '=', v('id'))
          // NO KEY: the lock serialises this device's writers without blocking foreign-key checks.
          .$if(this.dialect === 'postgres', (q) => q.forNoKeyUpdate()),
      { id },
    );
    return r.rows[0];
  }

  // -------------------------------------------------------------------------------
  // Credentials

  async addAdminToken(hash: string): Promise<void> {
    await this.db
      .insertInto('admin_tokens')
      .values({ hash, created_at: new Date().toISOString() })
      .onConflict((oc) => oc.column('hash').doNothing())
      .execute();
  }

  async hasAdminToken(hash: string): Promise<boolean> {
    const r = await this.db.selectFrom('admin_tokens').select('hash').where('hash', '=', hash).executeTakeFirst();
    return r !== undefined;
  }

  async countAdminTokens(): Promise<number> {
    const r = await this.db.selectFrom('admin_tokens').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async setUser(name: string, passwordHash: string): Promise<void> {
    const updated_at = new Date().toISOString();
    await this.db
      .insertInto('users')
      .values({ name, password_hash: passwordHash, updated_at })
      .onConflict((oc) => oc.column('name').doUpdateSet({ password_hash: passwordHash, updated_at }))
      .execute();
  }

  async getUserHash(name: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('users').select('password_hash').where('name', '=', name).executeTakeFirst();
    return r?.password_hash;
  }

  async createEnrollmentToken(t: { id: string; hash: string; label: string; expiresAt: string | null }): Promise<EnrollmentToken> {
    const row = await this.db
      .insertInto('enrollment_tokens')
      .values({ id: t.id, hash: t.hash, label: t.label, created_at: new Date().toISOString(), expires_at: t.expiresAt, revoked_at: null, uses: 0 })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toToken(row);
  }

  async listEnrollmentTokens(): Promise<EnrollmentToken[]> {
    const rows = await this.db.selectFrom('enrollment_tokens').selectAll().orderBy('created_at', 'desc').orderBy('id').execute();
    return rows.map(toToken);
  }

  async findEnrollmentToken(hash: string): Promise<EnrollmentToken | undefined> {
    const r = await this.db.selectFrom('enrollment_tokens').selectAll().where('hash', '=', hash).executeTakeFirst();
    return r && toToken(r);
  }

  async revokeEnrollmentToken(id: string, at: string): Promise<boolean> {
    // A token revoked twice keeps its first revocation time.
    const r = await this.db
      .updateTable('enrollment_tokens')
      .set((eb) => ({ revoked_at: eb.fn.coalesce('revoked_at', eb.val(at)) }))
      .where('id', '=', id)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async countTokenUse(id: string): Promise<void> {
    await this.db
      .updateTable('enrollment_tokens')
      .set((eb) => ({ uses: eb('uses', '+', 1) }))
      .where('id', '=', id)
      .execute();
  }

  // -------------------------------------------------------------------------------
  // Devices

  async enrollDevice(identity: DeviceIdentity, batch: string, credentialHash: string, now: string): Promise<Device> {
    const macs = [...new Set(identity.macs.map((m) => m.toLowerCase()))];
    return this.tx(async (db) => {
      let existing: DeviceRow | undefined;
      if (identity.serial !== undefined) {
        existing = await db.selectFrom('devices').selectAll().where('serial', '=', identity.serial).executeTakeFirst();
      } else if (macs.length > 0) {
        existing = await db
          .selectFrom('device_macs')
          .innerJoin('devices', 'devices.id', 'device_macs.device_id')
          .selectAll('devices')
          .where('device_macs.mac', 'in', macs)
          .orderBy('devices.last_seen', 'desc')
          .limit(1)
          .executeTakeFirst();
      }
      let row: DeviceRow;
      if (existing) {
        const known = JSON.parse(existing.macs) as string[];
        const merged = macs.length > 0 ? macs : known;
        row = await db
          .updateTable('devices')
          .set({
            credential_hash: credentialHash,
            macs: JSON.stringify(merged),
            uuid: identity.uuid ?? existing.uuid,
            hostname: identity.hostname ?? existing.hostname,
            batch,
            last_seen: now,
          })
          .where('id', '=', existing.id)
          .returningAll()
          .executeTakeFirstOrThrow();
      } else {
        const values = {
          id: newDeviceId(),
          serial: identity.serial ?? null,
          uuid: identity.uuid ?? null,
          macs: JSON.stringify(macs),
          hostname: identity.hostname ?? null,
          batch,
          credential_hash: credentialHash,
          first_seen: now,
          last_seen: now,
          state: 'enrolled' as const,
          progress: 0,
        };
        // Two enrollments of one serial at once on PostgreSQL: the second becomes an update.
        row = await db
          .insertInto('devices')
          .values(values)
          .onConflict((oc) =>
            oc.column('serial').doUpdateSet({
              credential_hash: credentialHash,
              macs: values.macs,
              uuid: values.uuid,
              hostname: values.hostname,
              batch,
              last_seen: now,
            }),
          )
          .returningAll()
          .executeTakeFirstOrThrow();
      }
      if (macs.length > 0) {
        await db
          .insertInto('device_macs')
          .values(macs.map((mac) => ({ mac, device_id: row.id })))
          .onConflict((oc) => oc.column('mac').doUpdateSet((eb) => ({ device_id: eb.ref('excluded.device_id') })))
          .execute();
      }
      return toDevice(row);
    });
  }

  async findDeviceByCredential(hash: string): Promise<Device | undefined> {
    const r = await this.db.selectFrom('devices').selectAll().where('credential_hash', '=', hash).executeTakeFirst();
    return r && toDevice(r);
  }

  async findDeviceByMac(mac: string): Promise<Device | undefined> {
    const r = await this.db
      .selectFrom('device_macs')
      .innerJoin('devices', 'devices.id', 'device_macs.device_id')
      .selectAll('devices')
      .where('device_macs.mac', '=', mac.toLowerCase())
      .executeTakeFirst();
    return r && toDevice(r);
  }

  async getDevice(id: string): Promise<Device | undefined> {
    const r = await this.db.selectFrom('devices').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toDevice(r);
  }

  async listDevices(filter: DeviceFilter): Promise<Device[]> {
    let q = this.db.selectFrom('devices').selectAll();
    if (filter.state !== undefined) q = q.where('state', '=', filter.state);
    if (filter.plan !== undefined) q = q.where('plan', '=', filter.plan);
    if (filter.batch !== undefined) q = q.where('batch', '=', filter.batch);
    if (filter.q !== undefined && filter.q !== '') {
      // Case-insensitive on both databases (SQLite's LIKE is, PostgreSQL's is not).
      const pattern = `%${likeLiteral(filter.q.toLowerCase())}%`;
      const like = (col: 'id' | 'serial' | 'hostname' | 'macs') => sql<boolean>`lower(${sql.ref(col)}) like ${pattern} escape '\\'`;
      q = q.where((eb) => eb.or([like('id'), like('serial'), like('hostname'), like('macs')]));
    }
    q = q.orderBy('last_seen', 'desc').orderBy('id');
    // SQLite needs a LIMIT for an OFFSET.
    if (filter.limit !== undefined || filter.offset !== undefined) q = q.limit(filter.limit ?? 2 ** 31 - 1);
    if (filter.offset !== undefined) q = q.offset(filter.offset);
    return (await q.execute()).map(toDevice);
  }

  async countDevicesByState(): Promise<Record<DeviceState, number>> {
    const rows = await this.db
      .selectFrom('devices')
      .select(['state', (eb) => eb.fn.countAll().as('n')])
      .groupBy('state')
      .execute();
    const out = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as Record<DeviceState, number>;
    for (const r of rows) out[r.state] = Number(r.n);
    return out;
  }

  async setInventory(deviceId: string, inventory: Record<string, unknown>, now: string): Promise<void> {
    await this.db
      .updateTable('devices')
      .set({ inventory: JSON.stringify(inventory), inventory_at: now, last_seen: now })
      .where('id', '=', deviceId)
      .execute();
  }

  async requestReprovision(deviceId: string, now: string): Promise<boolean> {
    const r = await this.db
      .updateTable('devices')
      .set({ state: 'enrolled', progress: 0, current_task: null, message: `reprovision requested at ${now}` })
      .where('id', '=', deviceId)
      .executeTakeFirst();
    return Number(r.numUpdatedRows) > 0;
  }

  async touchDevice(deviceId: string, now: string): Promise<void> {
    await this.db.updateTable('devices').set({ last_seen: now }).where('id', '=', deviceId).execute();
  }

  // -------------------------------------------------------------------------------
  // Events and runs

  /**
   * Stores a batch of events once each. SQLite: batches arriving together share one
   * transaction (group-commit.ts), each in its own savepoint; PostgreSQL: a transaction
   * each, run side by side on the pool.
   */
  ingestEvents(deviceId: string, events: BootlineEvent[], now: string, plan: string | null): Promise<IngestResult> {
    const job: IngestJob = { deviceId, events, now, plan };
    if (this.ingestGroup) return this.ingestGroup.submit(job);
    return this.tx((db) => this.ingestInTx(db, job));
  }

  private async ingestInTx(db: Db, { deviceId, events, now, plan }: IngestJob): Promise<IngestResult> {
    // One of each (runId, seq): the first wins, the rest count as duplicates.
    const seen = new Set<string>();
    const unique: BootlineEvent[] = [];
    for (const e of events) {
      const k = key(e.runId, e.seq);
      if (!seen.has(k)) {
        seen.add(k);
        unique.push(e);
      }
    }
    const runIds = [...new Set(unique.map((e) => e.runId))];

    const deviceRow = await this.lockDevice(db, deviceId);
    if (!deviceRow) throw new UnknownDeviceError(deviceId);

    // The runs this batch belongs to; the missing ones are created (a lost or late run-start too).
    const runs = new Map<string, RunState>();
    const existing =
      runIds.length === 0
        ? []
        : (await this.runShaped<RunRow>(db, `runs-by-id:${runIds.length}`, (v) => db.selectFrom('runs').selectAll().where('id', 'in', runIds.map((_, i) => v(`r${i}`))), Object.fromEntries(runIds.map((id, i) => [`r${i}`, id])))).rows;
    for (const row of existing) runs.set(row.id, { row, created: false, changed: false });
    const missing = runIds.filter((id) => !runs.has(id));
    if (missing.length > 0) {
      const rows: RunRow[] = missing.map((id) => {
        const own = unique.filter((e) => e.runId === id);
        const start = own.find((e) => e.type === 'run-start');
        const startedAt = start?.ts ?? own.reduce((min, e) => (e.ts < min ? e.ts : min), own[0]!.ts);
        return { id, device_id: deviceId, plan, started_at: startedAt, ended_at: null, status: 'running', progress: 0, report: null, created_at: now, last_seq: -1, current_task: null, message: null };
      });
      const created = await db
        .insertInto('runs')
        .values(rows)
        .onConflict((oc) => oc.column('id').doNothing())
        .returning('id')
        .execute();
      const createdIds = new Set(created.map((r) => r.id));
      for (const row of rows) if (createdIds.has(row.id)) runs.set(row.id, { row, created: true, changed: false });
      // Created meanwhile by another transaction (PostgreSQL): read what it wrote.
      const raced = missing.filter((id) => !createdIds.has(id));
      if (raced.length > 0) {
        for (const row of await db.selectFrom('runs').selectAll().where('id', 'in', raced).execute()) {
          runs.set(row.id, { row, created: false, changed: false });
        }
      }
    }
    for (const r of runs.values()) if (r.row.device_id !== deviceId) throw new ForeignRunError(r.row.id, deviceId);
    // A new run means the device's earlier unfinished runs were cut short (a power loss, a
    // reboot): they end as aborted instead of running forever.
    const createdNow = [...runs.values()].filter((r) => r.created).map((r) => r.row.id);
    if (createdNow.length > 0) {
      await db
        .updateTable('runs')
        .set({ status: 'aborted', ended_at: now, message: 'interrupted: the device started a newer run' })
        .where('device_id', '=', deviceId)
        .where('status', '=', 'running')
        .where('id', 'not in', createdNow)
        .execute();
    }

    // The events: stored at most once each, the conflicts are the duplicates.
    const freshKeys = new Set<string>();
    for (let i = 0; i < unique.length; i += this.rowsPerInsert) {
      const chunk = unique.slice(i, i + this.rowsPerInsert);
      const values: Record<string, unknown> = { device: deviceId, now };
      chunk.forEach((e, i) => Object.assign(values, { [`r${i}`]: e.runId, [`s${i}`]: e.seq, [`t${i}`]: e.type, [`ts${i}`]: e.ts, [`b${i}`]: JSON.stringify(e) }));
      const inserted = await this.runShaped<{ run_id: string; seq: number }>(
        db,
        `insert-events:${chunk.length}`,
        (v) =>
          db
            .insertInto('events')
            .values(chunk.map((_, i) => ({ run_id: v(`r${i}`), seq: v(`s${i}`), device_id: v('device'), type: v(`t${i}`), ts: v(`ts${i}`), received_at: v('now'), body: v(`b${i}`) })))
            .onConflict((oc) => oc.columns(['run_id', 'seq']).doNothing())
            .returning(['run_id', 'seq']),
        values,
      );
      for (const r of inserted.rows) freshKeys.add(key(r.run_id, Number(r.seq)));
    }
    const freshEvents = unique.filter((e) => freshKeys.has(key(e.runId, e.seq)));
    const fresh: StoredEvent[] = freshEvents.map((e) => ({
      runId: e.runId,
      seq: e.seq,
      deviceId,
      type: e.type,
      ts: e.ts,
      receivedAt: now,
      body: e as unknown as Record<string, unknown>,
    }));
    const result = (device: DeviceRow): IngestResult => ({
      stored: fresh.length,
      duplicates: events.length - fresh.length,
      fresh,
      device: toDevice(device),
    });
    // A re-sent batch changes nothing.
    if (fresh.length === 0) return result(deviceRow);

    // Runs: each updated once from its fresh events in seq order.
    const byRun = new Map<string, BootlineEvent[]>();
    for (const e of freshEvents) {
      const list = byRun.get(e.runId);
      if (list) list.push(e);
      else byRun.set(e.runId, [e]);
    }
    for (const [id, list] of byRun) applyToRun(runs.get(id)!, list.sort((a, b) => a.seq - b.seq), plan);
    for (const r of runs.values()) {
      if (!r.changed) continue;
      const { row } = r;
      await this.runShaped(
        db,
        'update-run',
        (v) =>
          db
            .updateTable('runs')
            .set({
              plan: v('plan'),
              started_at: v('started_at'),
              ended_at: v('ended_at'),
              status: v('status'),
              progress: v('progress'),
              report: v('report'),
              last_seq: v('last_seq'),
              current_task: v('current_task'),
              message: v('message'),
            })
            .where('id', '=', v('id')),
        row,
      );
    }

    // The device follows its current run: the newest run heard of (by arrival, not by the
    // device's clock). Events of an older run are stored but leave the device alone.
    const device: DeviceRow = { ...deviceRow, last_seen: now };
    let current: RunState | undefined;
    for (const id of runIds) {
      const r = runs.get(id);
      if (r?.created && byRun.has(id)) current = r;
    }
    if (current) device.current_run = current.row.id;
    else if (device.current_run !== null) current = runs.get(device.current_run);
    if (current?.changed) {
      if (current.row.plan !== null) device.plan = current.row.plan;
      device.state = STATE_OF[current.row.status];
      device.progress = current.row.progress;
      device.current_task = current.row.current_task;
      device.message = current.row.message;
    }
    await this.runShaped(
      db,
      'update-device-run-state',
      (v) =>
        db
          .updateTable('devices')
          .set({
            last_seen: v('last_seen'),
            current_run: v('current_run'),
            plan: v('plan'),
            state: v('state'),
            progress: v('progress'),
            current_task: v('current_task'),
            message: v('message'),
          })
          .where('id', '=', v('id')),
      device,
    );
    return result(device);
  }

  async getRun(id: string): Promise<Run | undefined> {
    const r = await this.db.selectFrom('runs').selectAll().where('id', '=', id).executeTakeFirst();
    return r && toRun(r);
  }

  async listRuns(deviceId: string): Promise<Run[]> {
    const rows = await this.db
      .selectFrom('runs')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .orderBy('started_at', 'desc')
      .execute();
    return rows.map(toRun);
  }

  async lastRun(deviceId: string): Promise<Run | undefined> {
    const device = await this.db.selectFrom('devices').select('current_run').where('id', '=', deviceId).executeTakeFirst();
    if (device?.current_run) {
      const run = await this.getRun(device.current_run);
      if (run) return run;
    }
    const r = await this.db
      .selectFrom('runs')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .orderBy('started_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    return r && toRun(r);
  }

  async listEvents(runId: string, afterSeq?: number, limit?: number): Promise<StoredEvent[]> {
    let q = this.db.selectFrom('events').selectAll().where('run_id', '=', runId);
    if (afterSeq !== undefined) q = q.where('seq', '>', afterSeq);
    q = q.orderBy('seq');
    if (limit !== undefined) q = q.limit(limit);
    return (await q.execute()).map(toEvent);
  }

  async completedTasks(runId: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('events')
      .select('body')
      .where('run_id', '=', runId)
      .where('type', 'in', ['task-end', 'run-start'])
      .orderBy('seq')
      .execute();
    return completedFromEvents(rows.map((r) => JSON.parse(r.body) as BootlineEvent));
  }

  async setReport(runId: string, deviceId: string, report: Record<string, unknown>): Promise<boolean> {
    return this.tx(async (db) => {
      const device = await this.lockDevice(db, deviceId);
      const run = await db.selectFrom('runs').selectAll().where('id', '=', runId).where('device_id', '=', deviceId).executeTakeFirst();
      if (!device || !run) return false;
      const set: Partial<RunRow> = { report: JSON.stringify(report) };
      // The report ends a run whose run-end event was lost.
      const status = report.status;
      if (run.status === 'running' && (status === 'ok' || status === 'failed' || status === 'aborted')) {
        set.status = status;
        set.ended_at = typeof report.endedAt === 'string' ? report.endedAt : new Date().toISOString();
        if (typeof report.progress === 'number' && report.progress > run.progress) set.progress = report.progress;
        if (typeof report.message === 'string') set.message = report.message;
        if (device.current_run === runId) {
          await db
            .updateTable('devices')
            .set({ state: STATE_OF[status], progress: set.progress ?? run.progress, message: set.message ?? run.message })
            .where('id', '=', deviceId)
            .execute();
        }
      }
      await db.updateTable('runs').set(set).where('id', '=', runId).execute();
      return true;
    });
  }

  async setLog(runId: string, deviceId: string, text: string): Promise<boolean> {
    const run = await this.db.selectFrom('runs').select('id').where('id', '=', runId).where('device_id', '=', deviceId).executeTakeFirst();
    if (!run) return false;
    const updated_at = new Date().toISOString();
    await this.db
      .insertInto('logs')
      .values({ run_id: runId, device_id: deviceId, content: text, updated_at })
      .onConflict((oc) => oc.column('run_id').doUpdateSet({ content: text, updated_at }))
      .execute();
    return true;
  }

  async getLog(runId: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('logs').select('content').where('run_id', '=', runId).executeTakeFirst();
    return r?.content;
  }

  async runStarts(runIds: string[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    // In slices: SQLite takes at most 32766 parameters, and a line has a few hundred devices.
    for (let i = 0; i < runIds.length; i += 500) {
      const slice = runIds.slice(i, i + 500);
      const rows = await this.db.selectFrom('runs').select(['id', 'started_at']).where('id', 'in', slice).execute();
      for (const r of rows) out[r.id] = r.started_at;
    }
    return out;
  }

  async listRunsForExport(filter: { batch?: string; from?: string; to?: string }): Promise<{ run: Run; device: Device }[]> {
    let q = this.db
      .selectFrom('runs')
      .innerJoin('devices', 'devices.id', 'runs.device_id')
      .selectAll('devices')
      .select([
        'runs.id as run_id',
        'runs.device_id as run_device_id',
        'runs.plan as run_plan',
        'runs.started_at as run_started_at',
        'runs.ended_at as run_ended_at',
        'runs.status as run_status',
        'runs.progress as run_progress',
        'runs.report as run_report',
      ]);
    if (filter.batch !== undefined) q = q.where('devices.batch', '=', filter.batch);
    if (filter.from !== undefined) q = q.where('runs.started_at', '>=', filter.from);
    if (filter.to !== undefined) q = q.where('runs.started_at', '<', filter.to);
    const rows = await q.orderBy('runs.started_at').orderBy('runs.id').execute();
    return rows.map((r) => ({
      run: {
        id: r.run_id,
        deviceId: r.run_device_id,
        plan: r.run_plan,
        startedAt: r.run_started_at,
        endedAt: r.run_ended_at,
        status: r.run_status,
        progress: Number(r.run_progress),
        report: parseJson<Record<string, unknown>>(r.run_report),
      },
      device: toDevice(r),
    }));
  }

  async countEvents(): Promise<number> {
    const r = await this.db.selectFrom('events').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  // -------------------------------------------------------------------------------
  // Escrowed recovery keys

  async putRecoveryKey(rec: NewRecoveryKey): Promise<'stored' | 'replaced'> {
    return this.tx(async (db) => {
      const values = {
        partition: rec.partition,
        label: rec.label,
        keyslot: rec.keyslot,
        pcrs: rec.pcrs === null ? null : JSON.stringify(rec.pcrs),
        run_id: rec.runId,
        sealed: rec.sealed,
        created_at: rec.createdAt,
        revealed_at: null,
        revealed_by: null,
        reveal_count: 0,
      };
      // Insert first: two first escrows of one volume racing on PostgreSQL meet on the primary key, not in a lost update.
      const inserted = await db
        .insertInto('recovery_keys')
        .values({ volume_uuid: rec.volumeUuid, device_id: rec.deviceId, ...values })
        .onConflict((oc) => oc.column('volume_uuid').doNothing())
        .executeTakeFirst();
      if (Number(inserted.numInsertedOrUpdatedRows ?? 0) > 0) return 'stored';
      const existing = await db
        .selectFrom('recovery_keys')
        .select('device_id')
        .where('volume_uuid', '=', rec.volumeUuid)
        .$if(this.dialect === 'postgres', (q) => q.forUpdate())
        .executeTakeFirstOrThrow();
      if (existing.device_id !== rec.deviceId) throw new VolumeOfAnotherDeviceError(rec.volumeUuid, rec.deviceId);
      await db.updateTable('recovery_keys').set(values).where('volume_uuid', '=', rec.volumeUuid).execute();
      return 'replaced';
    });
  }

  async listRecoveryKeys(deviceId: string): Promise<EscrowedVolume[]> {
    const rows = await this.db
      .selectFrom('recovery_keys')
      .selectAll()
      .where('device_id', '=', deviceId)
      .orderBy('created_at', 'desc')
      .orderBy('volume_uuid')
      .execute();
    return rows.map(toEscrowedVolume);
  }

  async getRecoveryKey(deviceId: string, volumeUuid: string): Promise<RecoveryKeyRecord | undefined> {
    const r = await this.db.selectFrom('recovery_keys').selectAll().where('volume_uuid', '=', volumeUuid).where('device_id', '=', deviceId).executeTakeFirst();
    return r && toRecoveryKey(r);
  }

  async recordRecoveryKeyReveal(deviceId: string, volumeUuids: string[], by: string, at: string): Promise<void> {
    if (volumeUuids.length === 0) return;
    await this.db
      .updateTable('recovery_keys')
      .set((eb) => ({ revealed_at: at, revealed_by: by, reveal_count: eb('reveal_count', '+', 1) }))
      .where('device_id', '=', deviceId)
      .where('volume_uuid', 'in', volumeUuids)
      .execute();
  }

  async recoveryKeysOfRuns(runIds: string[]): Promise<RecoveryKeyRecord[]> {
    const out: RecoveryKeyRecord[] = [];
    for (let i = 0; i < runIds.length; i += 500) {
      const rows = await this.db
        .selectFrom('recovery_keys')
        .selectAll()
        .where('run_id', 'in', runIds.slice(i, i + 500))
        .orderBy('created_at')
        .orderBy('volume_uuid')
        .execute();
      out.push(...rows.map(toRecoveryKey));
    }
    return out;
  }

  async countRecoveryKeys(): Promise<number> {
    const r = await this.db.selectFrom('recovery_keys').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow();
    return Number(r.n);
  }

  async deleteRecoveryKey(deviceId: string, volumeUuid: string): Promise<boolean> {
    const r = await this.db.deleteFrom('recovery_keys').where('volume_uuid', '=', volumeUuid).where('device_id', '=', deviceId).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  // -------------------------------------------------------------------------------
  // Plans, rules, images

  async listPlans(): Promise<Plan[]> {
    return (await this.db.selectFrom('plans').selectAll().orderBy('name').execute()).map(toPlan);
  }

  async getPlan(name: string): Promise<Plan | undefined> {
    const r = await this.db.selectFrom('plans').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toPlan(r);
  }

  async putPlan(plan: Plan, now: string): Promise<void> {
    const values = { description: plan.description ?? null, config: JSON.stringify(plan.config), updated_at: now };
    await this.db
      .insertInto('plans')
      .values({ name: plan.name, ...values })
      .onConflict((oc) => oc.column('name').doUpdateSet(values))
      .execute();
  }

  async deletePlan(name: string): Promise<boolean> {
    const r = await this.db.deleteFrom('plans').where('name', '=', name).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async listRules(): Promise<Rule[]> {
    return (await this.db.selectFrom('rules').selectAll().orderBy('priority').orderBy('id').execute()).map(toRule);
  }

  async addRule(rule: Rule): Promise<Rule> {
    const row = await this.db
      .insertInto('rules')
      .values({ priority: rule.priority, match_kind: rule.match, pattern: rule.pattern ?? null, action: rule.action, plan: rule.plan ?? null })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toRule(row);
  }

  async deleteRule(id: number): Promise<boolean> {
    const r = await this.db.deleteFrom('rules').where('id', '=', id).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }

  async listImages(): Promise<Image[]> {
    return (await this.db.selectFrom('images').selectAll().orderBy('name').execute()).map(toImage);
  }

  async getImage(name: string): Promise<Image | undefined> {
    const r = await this.db.selectFrom('images').selectAll().where('name', '=', name).executeTakeFirst();
    return r && toImage(r);
  }

  async putImage(image: Image): Promise<void> {
    const values = { version: image.version ?? null, files: JSON.stringify(image.files), location: image.location, created_at: image.createdAt };
    await this.db
      .insertInto('images')
      .values({ name: image.name, ...values })
      .onConflict((oc) => oc.column('name').doUpdateSet(values))
      .execute();
  }

  async deleteImage(name: string): Promise<boolean> {
    const r = await this.db.deleteFrom('images').where('name', '=', name).executeTakeFirst();
    return Number(r.numDeletedRows) > 0;
  }
}
