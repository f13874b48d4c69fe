// What a built-in task is: a named piece of agent code with its own option schema
// (checked when the config is loaded, before anything runs) and a run function.
import type { TObject, Static } from '@sinclair/typebox';

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
