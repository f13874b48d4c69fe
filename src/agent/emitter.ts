// Stamps events with the run id, a sequence number and the time, and hands them to
// every sink (the reporter dispatcher, the run's log file...).
import type { BootlineEvent, EventBody } from '../events.ts';

export type Sink = (e: BootlineEvent) => void;

export class Emitter {
  private seq = 0;
  constructor(
    readonly runId: string,
    private readonly deviceId: string | undefined,
    private readonly sinks: Sink[],
    private readonly clock: () => Date = () => new Date(),
  ) {}

  emit<E extends BootlineEvent>(body: EventBody<E>): E {
    const e = {
      ...body,
      runId: this.runId,
      seq: this.seq++,
      ts: this.clock().toISOString(),
      ...(this.deviceId ? { deviceId: this.deviceId } : {}),
    } as unknown as E;
    for (const s of this.sinks) s(e);
    return e;
  }

  addSink(s: Sink): void {
    this.sinks.push(s);
  }
}
