// The server's schema, as Kysely migrations kept in code (no migration folder to ship):
// built with Kysely's schema builder so that the same steps run on SQLite and PostgreSQL.
// Times are ISO 8601 text, JSON documents are text, numbers are integer or double precision
// (no BIGINT: pg hands those back as strings).
import { sql, type Kysely } from 'kysely';
import { Migrator, type Migration, type MigrationProvider } from 'kysely/migration';

export type Dialect = 'sqlite' | 'postgres';

// Generic over the database type: migrations see the schema as it was, not as it is now.
type AnyDb = Kysely<any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function migrations(dialect: Dialect): Record<string, Migration> {
  return {
    '001_initial': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('admin_tokens')
          .addColumn('hash', 'text', (c) => c.primaryKey())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('users')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('password_hash', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('enrollment_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('hash', 'text', (c) => c.notNull().unique())
          .addColumn('label', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('expires_at', 'text')
          .addColumn('revoked_at', 'text')
          .addColumn('uses', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();

        await db.schema
          .createTable('devices')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('serial', 'text', (c) => c.unique())
          .addColumn('uuid', 'text')
          .addColumn('macs', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('hostname', 'text')
          .addColumn('batch', 'text')
          .addColumn('credential_hash', 'text', (c) => c.unique())
          .addColumn('first_seen', 'text', (c) => c.notNull())
          .addColumn('last_seen', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull().defaultTo('enrolled'))
          .addColumn('progress', 'double precision', (c) => c.notNull().defaultTo(0))
          .addColumn('current_task', 'text')
          .addColumn('current_run', 'text')
          .addColumn('plan', 'text')
          .addColumn('message', 'text')
          .addColumn('inventory', 'text')
          .addColumn('inventory_at', 'text')
          .execute();
        // serial is indexed by its unique constraint.
        await db.schema.createIndex('devices_state').on('devices').columns(['state', 'last_seen']).execute();
        await db.schema.createIndex('devices_last_seen').on('devices').column('last_seen').execute();

        // One MAC, one device: what the iPXE script and a serial-less enrollment look up.
        await db.schema
          .createTable('device_macs')
          .addColumn('mac', 'text', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull().references('devices.id'))
          .execute();
        await db.schema.createIndex('device_macs_device').on('device_macs').column('device_id').execute();

        await db.schema
          .createTable('runs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull().references('devices.id'))
          .addColumn('plan', 'text')
          .addColumn('started_at', 'text', (c) => c.notNull())
          .addColumn('ended_at', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('progress', 'double precision', (c) => c.notNull().defaultTo(0))
          .addColumn('report', 'text')
          // Server time the run was first heard of: orders a device's runs whatever its clock says.
          .addColumn('created_at', 'text', (c) => c.notNull())
          // Highest seq applied to current_task (events arrive out of order after retries).
          .addColumn('last_seq', 'integer', (c) => c.notNull().defaultTo(-1))
          .addColumn('current_task', 'text')
          .addColumn('message', 'text')
          .execute();
        await db.schema.createIndex('runs_device').on('runs').columns(['device_id', 'created_at']).execute();
        await db.schema.createIndex('runs_started').on('runs').column('started_at').execute();

        // Append-only, idempotent on (run_id, seq); the primary key is also the by-run index.
        await db.schema
          .createTable('events')
          .addColumn('run_id', 'text', (c) => c.notNull().references('runs.id'))
          .addColumn('seq', 'integer', (c) => c.notNull())
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('ts', 'text', (c) => c.notNull())
          .addColumn('received_at', 'text', (c) => c.notNull())
          .addColumn('body', 'text', (c) => c.notNull())
          .addPrimaryKeyConstraint('events_pk', ['run_id', 'seq'])
          .execute();

        await db.schema
          .createTable('logs')
          .addColumn('run_id', 'text', (c) => c.primaryKey().references('runs.id'))
          .addColumn('device_id', 'text', (c) => c.notNull())
          .addColumn('content', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('plans')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('description', 'text')
          .addColumn('config', 'text', (c) => c.notNull())
          .addColumn('updated_at', 'text', (c) => c.notNull())
          .execute();

        await db.schema
          .createTable('rules')
          .addColumn('id', 'integer', (c) =>
            dialect === 'postgres' ? c.primaryKey().generatedByDefaultAsIdentity() : c.primaryKey().autoIncrement(),
          )
          .addColumn('priority', 'integer', (c) => c.notNull().defaultTo(100))
          .addColumn('match_kind', 'text', (c) => c.notNull())
          .addColumn('pattern', 'text')
          .addColumn('action', 'text', (c) => c.notNull().defaultTo('run'))
          .addColumn('plan', 'text')
          .execute();
        await db.schema.createIndex('rules_order').on('rules').columns(['priority', 'id']).execute();

        await db.schema
          .createTable('images')
          .addColumn('name', 'text', (c) => c.primaryKey())
          .addColumn('version', 'text')
          .addColumn('files', 'text', (c) => c.notNull())
          .addColumn('location', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .execute();
      },
    },
    // Recovery keys escrowed by encrypt-disk, sealed (AES-256-GCM) under the escrow key file.
    // One row per LUKS2 volume: a re-provisioned device's new key replaces the old one.
    '002_recovery_keys': {
      async up(db: AnyDb) {
        await db.schema
          .createTable('recovery_keys')
          .addColumn('volume_uuid', 'text', (c) => c.primaryKey())
          .addColumn('device_id', 'text', (c) => c.notNull().references('devices.id'))
          .addColumn('partition', 'text', (c) => c.notNull())
          .addColumn('label', 'text')
          .addColumn('keyslot', 'integer', (c) => c.notNull())
          .addColumn('pcrs', 'text')
          .addColumn('run_id', 'text')
          .addColumn('sealed', 'text', (c) => c.notNull())
          .addColumn('created_at', 'text', (c) => c.notNull())
          .addColumn('revealed_at', 'text')
          .addColumn('revealed_by', 'text')
          .addColumn('reveal_count', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();
        await db.schema.createIndex('recovery_keys_device').on('recovery_keys').columns(['device_id', 'created_at']).execute();
        await db.schema.createIndex('recovery_keys_run').on('recovery_keys').column('run_id').execute();
      },
    },
  };
}

class InCodeProvider implements MigrationProvider {
  constructor(private readonly dialect: Dialect) {}
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.dialect);
  }
}

/** Names of the migrations this build knows, in order. */
export const MIGRATION_NAMES: readonly string[] = Object.keys(migrations('sqlite'));

async function runMigrator<DB>(db: Kysely<DB>, dialect: Dialect): Promise<void> {
  const { error, results } = await new Migrator({ db, provider: new InCodeProvider(dialect) }).migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error');
    const msg = error instanceof Error ? error.message : String(error);
    throw new Error(`database migration${failed ? ` ${failed.migrationName}` : ''} failed: ${msg}`, { cause: error });
  }
}

/**
 * Applies the pending migrations. Safe to call from several processes at once:
 * - PostgreSQL: Kysely's migrator holds a session advisory lock (pg_advisory_lock) and
 *   runs the pending migrations in one transaction, so the second process waits and
 *   then finds nothing to do;
 * - SQLite: Kysely takes no lock there (one connection per process), so the whole
 *   migration runs inside BEGIN IMMEDIATE on the store's one connection (`beginImmediate`
 *   retries while another connection holds the write lock), and SQLite's transactional DDL makes a failed migration
 *   leave nothing behind.
 */
export async function migrate<DB>(db: Kysely<DB>, dialect: Dialect, beginImmediate: (conn: Kysely<DB>) => Promise<void>): Promise<void> {
  if (dialect === 'postgres') return runMigrator(db, dialect);
  await db.connection().execute(async (conn) => {
    await beginImmediate(conn);
    try {
      await runMigrator(conn, dialect);
      await sql`commit`.execute(conn);
    } catch (e) {
      await sql`rollback`.execute(conn).catch(() => undefined);
      throw e;
    }
  });
}
