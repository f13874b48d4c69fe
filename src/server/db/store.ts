// What the server keeps, as one interface: the routes call this, and one implementation
// (Kysely) runs the same queries on SQLite and PostgreSQL.
import type { BootlineEvent } from '../../events.ts';
import type { Device, DeviceState, EnrollmentToken, Image, Plan, Rule, Run, StoredEvent } from '../../api/admin.ts';
import type { EscrowedVolume } from '../../api/recovery-key.ts';

export interface DeviceIdentity {
  serial?: string;
  uuid?: string;
  macs: string[];
  hostname?: string;
}

export interface DeviceFilter {
  state?: DeviceState;
  plan?: string;
  batch?: string;
  /** Substring of serial, id, hostname or a MAC. */
  q?: string;
  limit?: number;
  offset?: number;
}

export interface IngestResult {
  stored: number;
  duplicates: number;
  /** The events stored now (not the duplicates), in the order given: what the live stream publishes. */
  fresh: StoredEvent[];
  /** The device after the batch was applied (state, progress, current task). */
  device: Device;
}

/** An escrowed recovery key as stored: the listed fields, whose device, and the sealed key. */
export interface RecoveryKeyRecord extends EscrowedVolume {
  deviceId: string;
  /** The key sealed under the server's escrow key (escrow/seal.ts); never the key itself. */
  sealed: string;
}

export type NewRecoveryKey = Omit<RecoveryKeyRecord, 'revealedAt' | 'revealedBy' | 'revealCount'>;

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';
  /** Applies pending migrations; safe to call from several processes at once. */
  migrate(): Promise<void>;
  close(): Promise<void>;

  // Credentials (stored as sha256 hex of the secret: secrets are random, 256 bits).
  addAdminToken(hash: string): Promise<void>;
  hasAdminToken(hash: string): Promise<boolean>;
  countAdminTokens(): Promise<number>;
  setUser(name: string, passwordHash: string): Promise<void>;
  getUserHash(name: string): Promise<string | undefined>;

  createEnrollmentToken(t: { id: string; hash: string; label: string; expiresAt: string | null }): Promise<EnrollmentToken>;
  listEnrollmentTokens(): Promise<EnrollmentToken[]>;
  /** The token with this hash if it exists (expired or revoked ones too: the caller decides). */
  findEnrollmentToken(hash: string): Promise<EnrollmentToken | undefined>;
  revokeEnrollmentToken(id: string, at: string): Promise<boolean>;
  countTokenUse(id: string): Promise<void>;

  /**
   * Creates the device, or finds the one with the same serial (or, without a serial, a
   * shared MAC), and sets its credential hash. Returns its id.
   */
  enrollDevice(identity: DeviceIdentity, batch: string, credentialHash: string, now: string): Promise<Device>;
  findDeviceByCredential(hash: string): Promise<Device | undefined>;
  findDeviceByMac(mac: string): Promise<Device | undefined>;
  getDevice(id: string): Promise<Device | undefined>;
  listDevices(filter: DeviceFilter): Promise<Device[]>;
  countDevicesByState(): Promise<Record<DeviceState, number>>;
  setInventory(deviceId: string, inventory: Record<string, unknown>, now: string): Promise<void>;
  touchDevice(deviceId: string, now: string): Promise<void>;
  /** Marks a device to be bootstrapped again at its next network boot (state back to enrolled); false when unknown. */
  requestReprovision(deviceId: string, now: string): Promise<boolean>;

  /**
   * Stores a batch of one device's events, each at most once by (runId, seq), in one
   * transaction; creates/updates the runs they belong to (run-start creates, run-end
   * ends with its report) and the device's state, progress and current task.
   */
  ingestEvents(deviceId: string, events: BootlineEvent[], now: string, plan: string | null): Promise<IngestResult>;
  getRun(id: string): Promise<Run | undefined>;
  listRuns(deviceId: string): Promise<Run[]>;
  lastRun(deviceId: string): Promise<Run | undefined>;
  /** Events of a run in sequence order (from `afterSeq`, exclusive). */
  listEvents(runId: string, afterSeq?: number, limit?: number): Promise<StoredEvent[]>;
  /** Names of tasks of the run whose last task-end was ok. */
  completedTasks(runId: string): Promise<string[]>;
  setReport(runId: string, deviceId: string, report: Record<string, unknown>): Promise<boolean>;
  setLog(runId: string, deviceId: string, text: string): Promise<boolean>;
  getLog(runId: string): Promise<string | undefined>;
  /** Runs (with their device) started in [from, to), for a batch export. */
  listRunsForExport(filter: { batch?: string; from?: string; to?: string }): Promise<{ run: Run; device: Device }[]>;
  countEvents(): Promise<number>;
  /** When each of these runs started (runs not found are left out): the dashboard's elapsed times. */
  runStarts(runIds: string[]): Promise<Record<string, string>>;

  /**
   * Stores a sealed recovery key; a re-escrow of the same volume by the same device replaces
   * it (and its reveal record). Throws VolumeOfAnotherDeviceError, storing nothing, when the
   * volume is escrowed for another device.
   */
  putRecoveryKey(rec: NewRecoveryKey): Promise<'stored' | 'replaced'>;
  /** A device's escrowed volumes, newest first, without their keys. */
  listRecoveryKeys(deviceId: string): Promise<EscrowedVolume[]>;
  getRecoveryKey(deviceId: string, volumeUuid: string): Promise<RecoveryKeyRecord | undefined>;
  /** Records that these volumes' keys were shown to `by`. */
  recordRecoveryKeyReveal(deviceId: string, volumeUuids: string[], by: string, at: string): Promise<void>;
  /** The recovery keys escrowed during these runs (sealed). */
  recoveryKeysOfRuns(runIds: string[]): Promise<RecoveryKeyRecord[]>;
  countRecoveryKeys(): Promise<number>;
  deleteRecoveryKey(deviceId: string, volumeUuid: string): Promise<boolean>;

  listPlans(): Promise<Plan[]>;
  getPlan(name: string): Promise<Plan | undefined>;
  putPlan(plan: Plan, now: string): Promise<void>;
  deletePlan(name: string): Promise<boolean>;

  listRules(): Promise<Rule[]>;
  addRule(rule: Rule): Promise<Rule>;
  deleteRule(id: number): Promise<boolean>;

  listImages(): Promise<Image[]>;
  getImage(name: string): Promise<Image | undefined>;
  putImage(image: Image): Promise<void>;
  deleteImage(name: string): Promise<boolean>;
}

/** ingestEvents for a device the store does not know (deleted, or a stale credential). */
export class UnknownDeviceError extends Error {
  constructor(readonly deviceId: string) {
    super(`unknown device ${deviceId}`);
    this.name = 'UnknownDeviceError';
  }
}

/** ingestEvents with events of a run that belongs to another device: nothing is stored. */
export class ForeignRunError extends Error {
  constructor(
    readonly runId: string,
    readonly deviceId: string,
  ) {
    super(`run ${runId} belongs to another device than ${deviceId}`);
    this.name = 'ForeignRunError';
  }
}

/** putRecoveryKey for a volume another device escrowed: nothing is stored. */
export class VolumeOfAnotherDeviceError extends Error {
  constructor(
    readonly volumeUuid: string,
    readonly deviceId: string,
  ) {
    super(`volume ${volumeUuid} is escrowed for another device than ${deviceId}`);
    this.name = 'VolumeOfAnotherDeviceError';
  }
}
