// Delivers events to reporters. The run never waits on a reporter: each reporter has
// its own bounded queue and delivery loop, its errors are caught and reported once per
// kind, and progress events are rate-limited per reporter — except that the first and
// the last progress event of every task always go out.
import type { BootlineEvent, EventType, TaskProgressEvent } from '../events.ts';
import { enqueueBounded } from './bounded-queue.ts';
import { untilDeadline } from './timing.ts';
import type { Reporter, Warn } from './reporters/reporter.ts';

export interface Subscription {
  reporter: Reporter;
  /** Minimum milliseconds between two progress events of one task. */
  interval: number;
  events?: readonly EventType[];
  /** Queue bound; beyond it the oldest progress/log events are dropped. */
  queueSize?: number;
}

class Delivery {
  private queue: BootlineEvent[] = [];
  private running = false;
  private idle: Array<() => void> = [];
  private lastSent = new Map<string, number>();
  private pending = new Map<string, TaskProgressEvent>();
  private timers = new Map<string, NodeJS.Timeout>();
  private warned = new Set<string>();
  private dropped = 0;

  constructor(
    private readonly sub: Subscription,
    private readonly warn: Warn,
    private readonly now: () => number,
  ) {}

  offer(e: BootlineEvent): void {
    if (this.sub.events && !this.sub.events.includes(e.type)) return;
    if (e.type === 'task-progress') return this.throttle(e);
    if (e.type === 'task-end' || e.type === 'run-end') this.flushPending(e.type === 'task-end' ? e.task : undefined);
    this.enqueue(e);
  }

  private throttle(e: TaskProgressEvent): void {
    const last = this.lastSent.get(e.task);
    const t = this.now();
    if (last === undefined || t - last >= this.sub.interval) {
      this.lastSent.set(e.task, t);
      this.pending.delete(e.task);
      this.enqueue(e);
      return;
    }
    this.pending.set(e.task, e);
    if (!this.timers.has(e.task)) {
      // Trailing edge: the newest value still goes out once the interval has passed.
      const timer = setTimeout(() => {
        this.timers.delete(e.task);
        const p = this.pending.get(e.task);
        if (p) {
          this.pending.delete(e.task);
          this.lastSent.set(e.task, this.now());
          this.enqueue(p);
        }
      }, this.sub.interval - (t - last));
      timer.unref();
      this.timers.set(e.task, timer);
    }
  }

  private flushPending(task: string | undefined): void {
    for (const [name, p] of [...this.pending]) {
      if (task !== undefined && name !== task) continue;
      this.pending.delete(name);
      clearTimeout(this.timers.get(name));
      this.timers.delete(name);
      this.enqueue(p);
    }
  }

  private enqueue(e: BootlineEvent): void {
    this.dropped += enqueueBounded(this.queue, e, this.sub.queueSize ?? 10_000);
    if (!this.running) void this.pump();
  }

  private async pump(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0) {
      const e = this.queue.shift()!;
      try {
        await this.sub.reporter.handle(e);
      } catch (err) {
        const msg = (err as Error).message;
        if (!this.warned.has(msg)) {
          this.warned.add(msg);
          this.warn(`reporter ${this.sub.reporter.name} failed on a ${e.type} event: ${msg} (the run goes on)`);
        }
      }
    }
    this.running = false;
    for (const f of this.idle.splice(0)) f();
  }

  async close(deadline: number): Promise<void> {
    this.flushPending(undefined);
    if (this.running || this.queue.length > 0) {
      await untilDeadline(new Promise<void>((r) => this.idle.push(r)), deadline);
    }
    if (this.queue.length > 0 || this.running) this.warn(`reporter ${this.sub.reporter.name}: ${this.queue.length} event(s) not delivered before the deadline`);
    if (this.dropped > 0) this.warn(`reporter ${this.sub.reporter.name}: dropped ${this.dropped} progress/log event(s) because it could not keep up`);
    if (this.sub.reporter.close) {
      try {
        await untilDeadline(this.sub.reporter.close(deadline), deadline);
      } catch (err) {
        this.warn(`reporter ${this.sub.reporter.name} failed to close: ${(err as Error).message}`);
      }
    }
  }
}

export class Dispatcher {
  private readonly deliveries: Delivery[];

  constructor(subs: readonly Subscription[], warn: Warn, now: () => number = Date.now) {
    this.deliveries = subs.map((s) => new Delivery(s, warn, now));
  }

  emit(e: BootlineEvent): void {
    for (const d of this.deliveries) d.offer(e);
  }

  /** Lets every reporter deliver what it has, until `deadline` (ms since epoch). */
  async close(deadline: number): Promise<void> {
    await Promise.all(this.deliveries.map((d) => d.close(deadline)));
  }
}
