// The live feed: every event batch stored by any server process reaches the dashboards of
// every process. SQLite means one process, so the feed is in-process; on PostgreSQL it is
// LISTEN/NOTIFY on one channel, and every process (the publisher too) receives messages only
// through its LISTEN connection, so each arrives once, in the order PostgreSQL delivers them.
import pg from 'pg';
import type { Device, StoredEvent } from '../../api/admin.ts';
import type { Store } from './store.ts';
import { parseDbUrl } from './connect.ts';

export interface FeedMessage {
  device: Device;
  events: StoredEvent[];
}

export interface LiveFeed {
  publish(msg: FeedMessage): Promise<void>;
  /** Calls `fn` for every message from now on; returns the unsubscribe function. */
  subscribe(fn: (msg: FeedMessage) => void): () => void;
  close(): Promise<void>;
}

export interface FeedOptions {
  /** Told about a failure that does not stop the feed (lost listener, unreadable notification). */
  onError?: (err: Error) => void;
  /** First reconnect delay in ms, doubled per failed attempt up to `maxReconnectMs` (default 200). */
  reconnectMs?: number;
  maxReconnectMs?: number;
  /** How often the listener's connection is checked with a round trip, in ms (default 15000). */
  checkEveryMs?: number;
}

export const FEED_CHANNEL = 'bootline_events';
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
export const NOTIFY_MAX_BYTES = 7999;

function deliver(subscribers: Set<(msg: FeedMessage) => void>, msg: FeedMessage, onError: (err: Error) => void): void {
  for (const fn of [...subscribers]) {
    try {
      fn(msg);
    } catch (e) {
      onError(e instanceof Error ? e : new Error(String(e)));
    }
  }
}

/** One process: publish hands the message to this process's subscribers. */
export class LocalFeed implements LiveFeed {
  private readonly subscribers = new Set<(msg: FeedMessage) => void>();

  constructor(private readonly onError: (err: Error) => void = () => undefined) {}

  async publish(msg: FeedMessage): Promise<void> {
    deliver(this.subscribers, msg, this.onError);
  }

  subscribe(fn: (msg: FeedMessage) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async close(): Promise<void> {
    this.subscribers.clear();
  }
}

// ---------------------------------------------------------------------------------
// What goes over NOTIFY

/** The message itself, when it fits. */
interface WholePayload {
  k: 'm';
  device: Device;
  events: StoredEvent[];
}
/** Where to read a message too large for NOTIFY: the device and runs' seq ranges (inclusive). */
interface PointerPayload {
  k: 'p';
  deviceId: string;
  runs: { runId: string; ranges: [number, number][] }[];
}
type Payload = WholePayload | PointerPayload;

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/** Consecutive seqs as [from, to] ranges. */
export function seqRanges(seqs: number[]): [number, number][] {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const out: [number, number][] = [];
  for (const s of sorted) {
    const last = out[out.length - 1];
    if (last && s === last[1] + 1) last[1] = s;
    else out.push([s, s]);
  }
  return out;
}

/**
 * The NOTIFY payloads for a message: itself when it fits, else pointers, as many as it
 * takes for each to fit (one unless the seqs are scattered over thousands of ranges).
 */
export function encodeMessage(msg: FeedMessage, maxBytes = NOTIFY_MAX_BYTES): string[] {
  const whole = JSON.stringify({ k: 'm', device: msg.device, events: msg.events } satisfies WholePayload);
  if (bytes(whole) <= maxBytes) return [whole];

  const byRun = new Map<string, number[]>();
  for (const e of msg.events) {
    const list = byRun.get(e.runId);
    if (list) list.push(e.seq);
    else byRun.set(e.runId, [e.seq]);
  }
  const payloads: string[] = [];
  let current: PointerPayload = { k: 'p', deviceId: msg.device.id, runs: [] };
  const size = (p: PointerPayload) => bytes(JSON.stringify(p));
  const flush = () => {
    if (current.runs.length > 0) payloads.push(JSON.stringify(current));
    current = { k: 'p', deviceId: msg.device.id, runs: [] };
  };
  for (const [runId, seqs] of byRun) {
    for (const range of seqRanges(seqs)) {
      let entry = current.runs.find((r) => r.runId === runId);
      if (!entry) {
        entry = { runId, ranges: [] };
        current.runs.push(entry);
      }
      entry.ranges.push(range);
      if (size(current) > maxBytes) {
        entry.ranges.pop();
        if (entry.ranges.length === 0) current.runs.pop();
        flush();
        current.runs.push({ runId, ranges: [range] });
        if (size(current) > maxBytes) throw new Error(`run id ${runId.slice(0, 80)}... is too long for a feed notification`);
      }
    }
  }
  flush();
  return payloads;
}

/** The message a payload stands for, reading pointers' events and device from the store. */
export async function decodePayload(text: string, store: Store): Promise<FeedMessage | undefined> {
  const p = JSON.parse(text) as Payload;
  if (p.k === 'm') return { device: p.device, events: p.events };
  const device = await store.getDevice(p.deviceId);
  if (!device) return undefined;
  const events: StoredEvent[] = [];
  for (const run of p.runs) {
    for (const [from, to] of run.ranges) events.push(...(await store.listEvents(run.runId, from - 1, to - from + 1)));
  }
  return { device, events };
}

// ---------------------------------------------------------------------------------

/** Several processes on one PostgreSQL: NOTIFY to publish, a LISTEN connection to receive. */
export class PgFeed implements LiveFeed {
  private readonly subscribers = new Set<(msg: FeedMessage) => void>();
  private readonly publisher: pg.Pool;
  private listener: pg.Client | undefined;
  private closed = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private checkTimer: NodeJS.Timeout | undefined;
  /** Notifications are handled one after the other: a pointer's reads keep their place. */
  private queue: Promise<void> = Promise.resolve();
  private readonly onError: (err: Error) => void;
  private readonly reconnectMs: number;
  private readonly maxReconnectMs: number;
  private readonly checkEveryMs: number;
  /** Connections made so far (the first one and each reconnect), for tests and logs. */
  connections = 0;

  constructor(
    private readonly url: string,
    private readonly store: Store,
    options: FeedOptions = {},
  ) {
    this.onError = options.onError ?? (() => undefined);
    this.reconnectMs = options.reconnectMs ?? 200;
    this.maxReconnectMs = options.maxReconnectMs ?? 5000;
    this.checkEveryMs = options.checkEveryMs ?? 15_000;
    this.publisher = new pg.Pool({ connectionString: url, max: 2, application_name: 'bootline-feed-publish' });
    this.publisher.on('error', (e) => this.onError(e));
  }

  /** Connects the listener; fails when the database cannot be reached. */
  async start(): Promise<void> {
    await this.connect();
    this.checkTimer = setInterval(() => void this.check(), this.checkEveryMs);
    this.checkTimer.unref();
  }

  private async connect(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, application_name: 'bootline-feed-listen' });
    client.on('notification', (n) => {
      if (n.channel === FEED_CHANNEL && n.payload !== undefined) this.enqueue(n.payload);
    });
    client.on('error', (e) => this.lost(client, e));
    client.on('end', () => this.lost(client, new Error('feed listener connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${FEED_CHANNEL}`);
    } catch (e) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw e;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return;
    }
    this.listener = client;
    this.attempt = 0;
    this.connections++;
  }

  /** The listener is gone: drop it and connect again after a delay (messages meanwhile are lost). */
  private lost(client: pg.Client, err: Error): void {
    if (this.listener !== client) return;
    this.listener = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    if (this.closed) return;
    this.onError(new Error(`live feed: listener connection lost (${err.message}); reconnecting`));
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const delay = Math.min(this.maxReconnectMs, this.reconnectMs * 2 ** this.attempt++);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      this.connect().catch((e: unknown) => {
        this.onError(new Error(`live feed: reconnect failed: ${e instanceof Error ? e.message : String(e)}`));
        this.scheduleReconnect();
      });
    }, delay);
  }

  /** A round trip on the listener, so that a silently dead connection is noticed. */
  private async check(): Promise<void> {
    const client = this.listener;
    if (!client) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        client.query('SELECT 1'),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('no answer in 10 s')), 10_000);
        }),
      ]);
    } catch (e) {
      this.lost(client, e instanceof Error ? e : new Error(String(e)));
    } finally {
      clearTimeout(timer);
    }
  }

  private enqueue(payload: string): void {
    this.queue = this.queue.then(async () => {
      try {
        const msg = await decodePayload(payload, this.store);
        if (msg && !this.closed) deliver(this.subscribers, msg, this.onError);
      } catch (e) {
        this.onError(new Error(`live feed: cannot read a notification: ${e instanceof Error ? e.message : String(e)}`));
      }
    });
  }

  async publish(msg: FeedMessage): Promise<void> {
    if (msg.events.length === 0) return;
    for (const payload of encodeMessage(msg)) {
      await this.publisher.query('SELECT pg_notify($1, $2)', [FEED_CHANNEL, payload]);
    }
  }

  subscribe(fn: (msg: FeedMessage) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.checkTimer);
    this.subscribers.clear();
    const client = this.listener;
    this.listener = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
    await this.publisher.end();
    await this.queue;
  }
}

/** The live feed for the database at `url`: in-process for SQLite, LISTEN/NOTIFY for PostgreSQL. */
export async function openFeed(url: string, store: Store, options: FeedOptions = {}): Promise<LiveFeed> {
  const loc = parseDbUrl(url);
  if (loc.dialect === 'sqlite') return new LocalFeed(options.onError);
  const feed = new PgFeed(loc.url, store, options);
  try {
    await feed.start();
  } catch (e) {
    await feed.close().catch(() => undefined);
    throw e;
  }
  return feed;
}
