// The agent's conversation with the line's server, when the configuration names one
// (bootline.server=): enroll (or reuse the stored credential), fetch the plan as a
// configuration layer, send events through an http reporter, resume an interrupted run
// from what the server recorded, and upload the report and log at the end.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PlanResponse } from '../api/device.ts';
import type { RunReport } from '../events.ts';
import { configError, findOrigin, type Layer, type Origin } from '../config/layer.ts';
import { parseConfigText } from '../config/yaml-file.ts';
import type { Config, ReporterConfig } from '../config/schema.ts';
import { readDeviceIdentity, type IdentityOptions } from './device-identity.ts';
import { journalIsEmpty, seedJournal, writeAtomic } from './journal.ts';
import { ServerClient, ServerError, ServerUnreachableError, type ServerClientOptions } from './server-client.ts';

export const CREDENTIAL_FILE = 'device.json';
export const PLAN_SOURCE = 'server plan';

/** The server's event reporter never gives a batch up while the run goes on (its deadline at the end stops it). */
const SERVER_EVENT_RETRIES = Number.MAX_SAFE_INTEGER;
/** How long the agent waits at the end for the server to take the events still queued. */
const SERVER_FLUSH_SECONDS = 60;

/** Uploaded logs are cut to their last this-many bytes (the server's default limit is 64 MiB). */
const MAX_LOG_BYTES = 32 * 1024 * 1024;

export interface SessionOptions {
  /** Used when no source sets stateDir. */
  defaultStateDir: string;
  warn: (m: string) => void;
  info: (m: string) => void;
  identity?: IdentityOptions;
  /** Retries, timeouts (tests). */
  client?: Omit<ServerClientOptions, 'url' | 'credential'>;
}

/** What `<stateDir>/device.json` holds (mode 0600). */
export interface StoredCredential {
  server: string;
  deviceId: string;
  credential: string;
  enrolledAt: string;
}

/** The server's rules say this device has nothing to do. */
export class NothingToDo extends Error {
  constructor(readonly server: string) {
    super(`the server has nothing for this device to do (${server}) — nothing was run`);
    this.name = 'NothingToDo';
  }
}

export class ServerSession {
  private constructor(
    readonly client: ServerClient,
    readonly deviceId: string,
    readonly plan: PlanResponse,
    private readonly o: SessionOptions,
    /** The CA bundle file the server's certificate is checked with (bootline.serverCa=). */
    private readonly ca?: string,
  ) {}

  get server(): string {
    return this.client.shown;
  }

  /**
   * Connects when `settings` (every source but the plan, merged) name a server:
   * credential from `<stateDir>/device.json` or enrollment with the token, then the plan.
   * Undefined without a server. Every failure is a ConfigError naming the setting.
   */
  static async connect(settings: Layer, o: SessionOptions): Promise<ServerSession | undefined> {
    const { server, token, stateDir, serverCa } = settings.data;
    if (typeof server !== 'string' || server === '') return undefined;
    const serverOrigin = findOrigin(settings.origins, ['server']);
    const tokenOrigin = redactToken(findOrigin(settings.origins, ['token']));
    const dir = typeof stateDir === 'string' && stateDir !== '' ? stateDir : o.defaultStateDir;
    const credentialFile = join(dir, CREDENTIAL_FILE);

    let client: ServerClient;
    try {
      client = new ServerClient({ ...o.client, ...(typeof serverCa === 'string' ? { ca: serverCa } : {}), url: server, onRetry: o.warn });
    } catch (e) {
      throw configError(serverOrigin, 'server', `${(e as Error).message} — give the server's URL, e.g. bootline.server=http://192.168.1.10:8080`);
    }
    const shown = client.shown;

    const enroll = async (): Promise<StoredCredential> => {
      if (typeof token !== 'string' || token === '') {
        throw configError(
          serverOrigin,
          'token',
          `no enrollment token, and no credential for ${shown} in ${credentialFile}: add bootline.token=<an enrollment token of the line's server> to the kernel command line`,
        );
      }
      const identity = await readDeviceIdentity(o.identity);
      if (!identity.serial && identity.macs.length === 0) {
        throw configError(
          serverOrigin,
          'server',
          'this device has no readable serial number (SMBIOS) and no network interface with a MAC address, so the server cannot tell it from another: run the agent as root (the serial is root-only) on the device itself',
        );
      }
      let r;
      try {
        r = await client.enroll({ token, ...identity });
      } catch (e) {
        if (e instanceof ServerError && (e.status === 401 || e.status === 403)) {
          throw configError(
            tokenOrigin ?? serverOrigin,
            'token',
            `the server ${shown} refused the enrollment token (${e.serverMessage || e.status}) — it is wrong, expired or revoked: get a valid one from the line's server (admin API POST /api/v1/tokens) and put it in bootline.token=`,
          );
        }
        throw e;
      }
      const stored: StoredCredential = { server: shown, deviceId: r.deviceId, credential: r.credential, enrolledAt: new Date().toISOString() };
      o.info(`enrolled with ${shown} as device ${r.deviceId}${identity.serial ? ` (serial ${identity.serial})` : ''}`);
      try {
        await mkdir(dir, { recursive: true });
        await writeAtomic(credentialFile, JSON.stringify(stored, null, 2) + '\n', 0o600);
      } catch (e) {
        o.warn(`cannot keep the device credential in ${credentialFile} (${(e as Error).message}): the next start enrolls again`);
      }
      return stored;
    };

    try {
      const stored = await readCredential(credentialFile, shown);
      // It answered this device before (a restart after a power cut): an outage now is waited out.
      if (stored) client.reached = true;
      let cred = stored ?? (await enroll());
      client.credential = cred.credential;
      let plan: PlanResponse;
      try {
        plan = await client.plan();
      } catch (e) {
        if (!(stored && e instanceof ServerError && e.status === 401)) throw e;
        o.info(`${shown} no longer accepts the credential in ${credentialFile} (${e.serverMessage}): enrolling again`);
        cred = await enroll();
        client.credential = cred.credential;
        plan = await client.plan();
      }
      return new ServerSession(client, cred.deviceId, plan, o, typeof serverCa === 'string' ? serverCa : undefined);
    } catch (e) {
      client.close();
      if (e instanceof ServerUnreachableError) {
        throw configError(
          serverOrigin,
          'server',
          `cannot reach the server ${shown} (${e.what}: no answer after ${e.attempts} attempts, the last: ${e.lastError}) — check the URL, the network and that the server is running`,
        );
      }
      if (e instanceof ServerError) {
        const why = e.status === 404 || e.status === 409 ? `the server has no usable plan for this device: ${e.serverMessage}` : e.message;
        throw configError(serverOrigin, 'server', `${shown}: ${why}`);
      }
      throw e;
    }
  }

  /** The plan as a configuration layer ("server plan"), with the enrolled device id. */
  planLayer(): Layer {
    const layer = parseConfigText(JSON.stringify(this.plan.config, null, 2), PLAN_SOURCE);
    if (layer.data.deviceId === undefined) {
      layer.data.deviceId = this.deviceId;
      layer.origins.set('deviceId', { source: `enrollment with ${this.server}` });
    }
    return layer;
  }

  /** The reporters with one that posts every event to the server (one the plan has for that URL gets the credential). */
  withServerReporter(reporters: readonly ReporterConfig[]): ReporterConfig[] {
    const url = this.client.endpoint('/device/events');
    const credential = this.client.credential!;
    const same = (r: ReporterConfig) => r.type === 'http' && sameUrl(r.url, url);
    if (reporters.some(same)) {
      return reporters.map((r) =>
        r.type === 'http' && same(r) && !r.token && !Object.keys(r.headers ?? {}).some((h) => h.toLowerCase() === 'authorization') ? { ...r, token: credential } : r,
      );
    }
    // Every event, not one progress event a second: the server keeps the whole run
    // (seq 0..N), and the batches keep that cheap. A batch is retried until it is stored,
    // however long the server is away (it restarts, it is replaced), and at the end the
    // agent waits up to a minute for it: the server stores a re-sent event once.
    return [
      ...reporters,
      { type: 'http', url, token: credential, interval: 0, queueSize: 10_000, retries: SERVER_EVENT_RETRIES, flushTimeout: SERVER_FLUSH_SECONDS, ...(this.ca ? { ca: this.ca } : {}) },
    ];
  }

  /**
   * Before the run: when the server's last run of this device is still running (it never
   * ended: a power loss) for this same plan, and the local journal is empty (the state
   * dir was in RAM), seeds the journal with the tasks that run finished so that they are
   * skipped. Returns their names.
   */
  async resume(config: Config, stateDir: string, fresh: boolean): Promise<string[]> {
    if (fresh) return [];
    let last;
    try {
      last = await this.client.lastRun();
    } catch (e) {
      this.o.warn(`cannot ask ${this.server} what the last run finished (${(e as Error).message}): every task runs`);
      return [];
    }
    if (last.status !== 'running' || !last.runId || last.plan !== this.plan.plan || last.completed.length === 0) return [];
    if (!(await journalIsEmpty(stateDir))) return [];
    const done = config.tasks.filter((t) => t.rerun !== 'always' && last.completed.includes(t.name));
    if (done.length === 0) return [];
    await seedJournal(stateDir, last.runId, done);
    this.o.info(`${this.server}: run ${last.runId} of plan ${last.plan} was interrupted after finishing ${done.map((t) => t.name).join(', ')}; they are not run again (--fresh runs everything)`);
    return done.map((t) => t.name);
  }

  /** After the run: the report and the log file, best effort (failures are warnings). */
  async upload(report: RunReport, stateDir: string): Promise<void> {
    try {
      await this.client.putReport(report);
    } catch (e) {
      this.o.warn(`could not upload the run report to ${this.server}: ${(e as Error).message} (it is in ${join(stateDir, 'report.json')})`);
    }
    const logFile = join(stateDir, 'logs', `${report.runId}.log`);
    let log: Buffer;
    try {
      log = await readFile(logFile);
    } catch {
      return;
    }
    if (log.length > MAX_LOG_BYTES) {
      const cut = log.length - MAX_LOG_BYTES;
      log = Buffer.concat([Buffer.from(`[bootline: the first ${cut} bytes of this log were cut; the whole log is ${logFile} on the device]\n`), log.subarray(cut)]);
    }
    try {
      await this.client.putLog(report.runId, log);
    } catch (e) {
      this.o.warn(`could not upload the run log to ${this.server}: ${(e as Error).message} (it is in ${logFile})`);
    }
  }

  close(): void {
    this.client.close();
  }
}

/** The stored credential for `server`, if `file` holds one. */
export async function readCredential(file: string, server: string): Promise<StoredCredential | undefined> {
  let parsed: Partial<StoredCredential>;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8')) as Partial<StoredCredential>;
  } catch {
    return undefined;
  }
  if (parsed.server !== server || typeof parsed.deviceId !== 'string' || typeof parsed.credential !== 'string') return undefined;
  return parsed as StoredCredential;
}

function sameUrl(a: string, b: string): boolean {
  try {
    return new URL(a).href.replace(/\/+$/, '') === new URL(b).href.replace(/\/+$/, '');
  } catch {
    return false;
  }
}

/** The token's origin without the token itself (it ends up in messages). */
function redactToken(o: Origin | undefined): Origin | undefined {
  if (!o?.param) return o;
  const i = o.param.indexOf('=');
  return { ...o, param: i < 0 ? o.param : `${o.param.slice(0, i + 1)}…` };
}
