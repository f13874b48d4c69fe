// What a built-in task is: a named piece of agent code with its own option schema
// (checked when the config is loaded, before anything runs) and a run function.
import type { TObject, Static } from '@sinclair/typebox';
import type { RecoveryKeyEscrow } from '../../api/recovery-key.ts';

export interface TaskProgress {
  /** 0-100 within this task. */
  taskProgress: number;
  message?: string;
  bytesDone?: number;
  bytesTotal?: number;
  /** bytes per second */
  rate?: number;
  etaSeconds?: number;
}

export interface TaskContext<O = Record<string, unknown>> {
  /** The task's name in the plan. */
  name: string;
  /** The task's `with:` options, validated against the builtin's schema, defaults applied. */
  options: O;
  /** The documented BOOTLINE_* environment of this task (also given to scripts). */
  env: Record<string, string>;
  stateDir: string;
  unattended: boolean;
  /** Aborted when the task times out or the agent is stopped. */
  signal: AbortSignal;
  progress(p: TaskProgress): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
  /** Asks the person at the console (attended mode only); resolves false when there is nobody to ask. */
  confirm(question: string): Promise<boolean>;
  /** Publishes a value to later tasks, e.g. setOutput('target', '/dev/vda') -> BOOTLINE_TARGET. */
  setOutput(key: string, value: string): void;
  /** The agent's version (for documents the task produces). */
  agentVersion?: string;
  /** The line's server, when the agent is enrolled with one. */
  server?: DeviceServer;
  /**
   * The plan's tasks after this one (their options validated): deploy-image looks for an
   * encrypt-disk task there, to write the partitions it encrypts through dm-crypt.
   */
  following?: { name: string; builtin?: string; options: Record<string, unknown> }[];
}

/** What a built-in may send to the line's server on the device's behalf. */
export interface DeviceServer {
  /** Stores the device's inventory document on its record. */
  putInventory(doc: Record<string, unknown>): Promise<void>;
  /**
   * Escrows a LUKS2 volume's recovery key (sealed at rest on the server, shown only to
   * admins); a second escrow of the same volume replaces the first. Throws before sending
   * when the body is invalid (a malformed key), and on the server's refusal.
   */
  putRecoveryKey(escrow: RecoveryKeyEscrow): Promise<void>;
  /** The server, as it is shown in messages. */
  readonly shown: string;
}

/** A task failure with a message meant for the person reading the console. */
export class TaskError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TaskError';
  }
}

export interface BuiltinTask<S extends TObject = TObject> {
  name: string;
  description: string;
  /** Writes to disks: in attended mode the agent asks before running it. */
  destructive: boolean;
  optionsSchema: S;
  run(ctx: TaskContext<Static<S>>): Promise<void>;
  /**
   * For `bootline run --dry-run`: what the task would do with these options, read-only
   * (inputs checked, state read, nothing written). Optional.
   */
  dryRun?(options: Static<S>): Promise<string[]>;
}
