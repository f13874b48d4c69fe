// A throwaway PostgreSQL server for tests, benchmarks and `bootline lab sim --db auto-postgres`:
// Debian's `postgresql` package, a fresh cluster in a temp dir, listening on 127.0.0.1 on a
// free port (and a unix socket in the temp dir), removed when stopped or when this process
// is gone. PostgreSQL refuses to run as root, so as root the cluster belongs to the
// `postgres` user.
import { execFile as execFileCb, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFile = promisify(execFileCb);

export interface PgServer {
  /** postgres://postgres@127.0.0.1:PORT/bootline */
  url: string;
  port: number;
  /** A new empty database on this server; its URL. */
  createDatabase(name: string): Promise<string>;
  /** Stops the server (immediate mode) and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** The directory of PostgreSQL's server binaries: $PG_BIN, or the newest /usr/lib/postgresql/N/bin. */
export function postgresBinDir(): string {
  const fromEnv = process.env.PG_BIN;
  if (fromEnv && existsSync(join(fromEnv, 'initdb'))) return fromEnv;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => existsSync(join(base, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) {
    throw new Error(
      'PostgreSQL server binaries not found (looked for /usr/lib/postgresql/*/bin/initdb and $PG_BIN): ' +
        'install the Debian package `postgresql` (scripts/setup.sh does) to run the PostgreSQL tests',
    );
  }
  return join(base, versions[0]!, 'bin');
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root, but there is no `postgres` user to run PostgreSQL as (the Debian package creates it)');
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * A detached shell that stops the server and removes its directory once this process is
 * gone, however it went (a killed test file runs no exit handler).
 */
function startWatchdog(bin: string, asRoot: boolean, data: string, dir: string): ChildProcess {
  const script = [
    'while kill -0 "$1" 2>/dev/null; do sleep 1; done',
    'if [ "$5" = 1 ]; then runuser -u postgres -- "$4" stop -D "$2" -m immediate; else "$4" stop -D "$2" -m immediate; fi >/dev/null 2>&1',
    'rm -rf "$3"',
  ].join('\n');
  const child = spawn('sh', ['-c', script, 'pg-watchdog', String(process.pid), data, dir, join(bin, 'pg_ctl'), asRoot ? '1' : '0'], {
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  return child;
}

/** Every server started and not stopped yet: stopped on exit even if a test forgot to. */
const running = new Set<() => void>();
/** Registered with the first server (the CLI bundle loads this module for every command). */
let exitHookSet = false;
function stopAllOnExit(): void {
  if (exitHookSet) return;
  exitHookSet = true;
  process.on('exit', () => {
    for (const stop of running) stop();
  });
}

/**
 * Starts a PostgreSQL server with an empty database `bootline`. Takes a couple of seconds:
 * start one per test file (in `before`) and give each test its own database with
 * createDatabase when it needs a clean one.
 */
export async function startPostgres(): Promise<PgServer> {
  const bin = postgresBinDir();
  const asRoot = process.getuid?.() === 0;
  const owner = asRoot ? postgresUser() : undefined;
  const dir = mkdtempSync(join(tmpdir(), 'bootline-pg-'));
  // Commands run as the cluster's owner, from a directory it may enter.
  const run = (cmd: string, args: string[]) =>
    execFile(asRoot ? 'runuser' : join(bin, cmd), asRoot ? ['-u', 'postgres', '--', join(bin, cmd), ...args] : args, { cwd: dir, maxBuffer: 1 << 24 });
  const data = join(dir, 'data');
  const sock = join(dir, 'sock');
  const log = join(dir, 'server.log');
  mkdirSync(sock);
  if (owner) {
    chownSync(dir, owner.uid, owner.gid);
    chownSync(sock, owner.uid, owner.gid);
  }
  let port = 0;
  let started = false;
  let watchdog: ChildProcess | undefined;
  const stopSync = () => {
    watchdog?.kill();
    watchdog = undefined;
    if (started) {
      try {
        execFileSync(asRoot ? 'runuser' : join(bin, 'pg_ctl'), [...(asRoot ? ['-u', 'postgres', '--', join(bin, 'pg_ctl')] : []), 'stop', '-D', data, '-m', 'immediate', '-w'], {
          cwd: dir,
          stdio: 'ignore',
        });
      } catch {
        // already stopped
      }
      started = false;
    }
    rmSync(dir, { recursive: true, force: true });
    running.delete(stopSync);
  };
  running.add(stopSync);
  stopAllOnExit();

  try {
    await run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
    // A port found free may be taken before the server binds it: try a few.
    for (let attempt = 0; ; attempt++) {
      port = await freePort();
      const opts = [
        `-p ${port}`,
        `-k ${sock}`,
        "-c listen_addresses='127.0.0.1'",
        '-c fsync=off',
        '-c synchronous_commit=off',
        '-c full_page_writes=off',
        '-c max_connections=200',
      ].join(' ');
      try {
        await run('pg_ctl', ['start', '-D', data, '-l', log, '-w', '-t', '60', '-o', opts]);
        started = true;
        watchdog = startWatchdog(bin, asRoot, data, dir);
        break;
      } catch (e) {
        if (attempt >= 2) throw e;
      }
    }
    const createDatabase = async (name: string): Promise<string> => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`database name ${name}: lower-case letters, digits, underscore`);
      await run('createdb', ['-h', sock, '-p', String(port), '-U', 'postgres', name]);
      return `postgres://postgres@127.0.0.1:${port}/${name}`;
    };
    const url = await createDatabase('bootline');
    return {
      url,
      port,
      createDatabase,
      stop: async () => stopSync(),
    };
  } catch (e) {
    const serverLog = existsSync(log) ? readFileSync(log, 'utf8').slice(-2000) : '';
    stopSync();
    const err = e as Error & { stderr?: string };
    throw new Error(`cannot start PostgreSQL from ${bin}: ${err.stderr?.trim() || err.message}${serverLog ? `\nserver log:\n${serverLog}` : ''}`, { cause: e });
  }
}
