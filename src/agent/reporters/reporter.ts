// One interface for everything that is told about a run: console, json, led, http,
// psplash, command. The agent never awaits a reporter on its hot path and never lets
// a reporter's error fail or stall the run (see dispatcher.ts).
import type { BootlineEvent } from '../../events.ts';

export interface Reporter {
  /** Short name used in the agent's own messages, e.g. "http(https://line/api)". */
  readonly name: string;
  /** Receives each event in order. May be async; errors are caught by the dispatcher. */
  handle(event: BootlineEvent): void | Promise<void>;
  /** Delivers what is still queued, giving up at `deadline` (ms since epoch). */
  close?(deadline: number): Promise<void>;
}

/** Where reporters send their own diagnostics (never to other reporters: no loops). */
export type Warn = (message: string) => void;
