// Opens the server's database from its URL: `sqlite:PATH` (embedded, the default) or
// `postgres://...` (several server processes sharing one database). Both go through
// Kysely, so the store's queries are the same code on either.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import pg from 'pg';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import type { Store } from './store.ts';
import { KyselyStore, type Database } from './kysely-store.ts';

export const ACCEPTED_DB_URLS = 'sqlite:PATH, sqlite::memory:, postgres://USER@HOST:PORT/DB or postgresql://...';

export type DbLocation = { dialect: 'sqlite'; path: string } | { dialect: 'postgres'; url: string };

/** What a database URL names; throws on anything but the accepted forms. */
export function parseDbUrl(url: string): DbLocation {
  if (/^postgres(ql)?:\/\//i.test(url)) return { dialect: 'postgres', url };
  if (url.startsWith('sqlite:')) {
    let path = url.slice('sqlite:'.length);
    // sqlite:///abs/path and sqlite://rel/path as other tools write them.
    if (path.startsWith('//')) path = path.slice(2);
    if (path === '') throw new Error(`database URL "${url}" has no path; accepted forms: ${ACCEPTED_DB_URLS}`);
    return { dialect: 'sqlite', path };
  }
  throw new Error(`unsupported database URL "${redact(url)}"; accepted forms: ${ACCEPTED_DB_URLS}`);
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*:)[^@/]*@/i, '$1***@');
}

/** SQLite's host-parameter limit in this build (999 before 3.32, 32766 since). */
function sqliteMaxVariables(db: BetterSqlite3.Database): number {
  const rows = db.prepare('pragma compile_options').all() as { compile_options: string }[];
  for (const r of rows) {
    const m = /^MAX_VARIABLE_NUMBER=(\d+)$/.exec(r.compile_options);
    if (m) return Number(m[1]);
  }
  return 999;
}

/**
 * better-sqlite3 with its statements cached by SQL text: Kysely prepares every query it
 * runs, and preparing costs more than running the small ones. Kysely runs statements
 * with all()/run() (and iterate() only for streams, which get a fresh statement).
 */
function withStatementCache(db: BetterSqlite3.Database, max = 500): BetterSqlite3.Database {
  const cache = new Map<string, BetterSqlite3.Statement>();
  const prepare = db.prepare.bind(db);
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop === 'prepare') {
        return (source: string) => {
          let stmt = cache.get(source);
          if (stmt === undefined || stmt.busy) {
            stmt = prepare(source);
            if (cache.size >= max) cache.delete(cache.keys().next().value as string);
            cache.set(source, stmt);
          }
          return stmt;
        };
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/** How long a statement waits for another process's write lock. */
const SQLITE_BUSY_TIMEOUT_MS = 10_000;

function openSqlite(path: string): KyselyStore {
  const memory = path === ':memory:';
  if (!memory) mkdirSync(dirname(resolve(path)), { recursive: true });
  const raw = new BetterSqlite3(path);
  try {
    raw.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    if (!memory) raw.pragma('journal_mode = WAL');
    raw.pragma('synchronous = NORMAL');
    raw.pragma('foreign_keys = ON');
  } catch (e) {
    raw.close();
    throw e;
  }
  // BEGIN IMMEDIATE without the busy wait: better-sqlite3 waits synchronously, which would
  // block the event loop, and deadlock a second connection of this process. The store
  // retries asynchronously instead.
  const tryBeginImmediate = (): boolean => {
    raw.pragma('busy_timeout = 0');
    try {
      raw.exec('BEGIN IMMEDIATE');
      return true;
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_BUSY') return false;
      throw e;
    } finally {
      raw.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
    }
  };
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(raw) }) });
  return new KyselyStore(db, 'sqlite', { maxVariables: sqliteMaxVariables(raw), tryBeginImmediate, lockTimeoutMs: SQLITE_BUSY_TIMEOUT_MS });
}

function openPostgres(url: string): KyselyStore {
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // An idle client losing its connection emits on the pool; without a listener that
  // would crash the process. The pool drops that client and the next query reconnects.
  pool.on('error', () => undefined);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  // PostgreSQL's limit is 65535 bind parameters per statement.
  return new KyselyStore(db, 'postgres', { maxVariables: 65535 });
}

/**
 * Opens (and checks it can reach) the database at `url`. The store is not migrated:
 * call `migrate()` before use.
 */
export async function openStore(url: string): Promise<Store> {
  const loc = parseDbUrl(url);
  const store = loc.dialect === 'sqlite' ? openSqlite(loc.path) : openPostgres(loc.url);
  try {
    await store.ping();
  } catch (e) {
    await store.close().catch(() => undefined);
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`cannot open database ${redact(url)}: ${msg}`, { cause: e });
  }
  return store;
}
