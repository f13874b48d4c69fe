// The command reporter: runs a shell command per event, for integrations nobody
// foresaw (a label printer, a relay, a line PLC). Commands run one at a time in event
// order, each in its own process group so a timeout can kill everything it started.
import type { BootlineEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import { enqueueBounded } from '../bounded-queue.ts';
import type { Reporter, Warn } from './reporter.ts';
import { runProcess } from '../process.ts';
import { untilDeadline } from '../timing.ts';

/** Events waiting for their command; old progress/log events go first when it fills. */
const QUEUE_LIMIT = 1000;
/** Between SIGTERM and SIGKILL of a command's process group. */
const KILL_GRACE_MS = 1000;

// eslint-disable-next-line no-control-regex
const noNul = (s: string) => s.replace(/\x00/g, '');

/** The environment a command sees for `event`: the agent's own plus BOOTLINE_*. */
export function commandEnv(event: BootlineEvent, base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...base,
    BOOTLINE_EVENT_TYPE: event.type,
    BOOTLINE_EVENT_JSON: JSON.stringify(event),
    BOOTLINE_RUN_ID: noNul(event.runId),
    BOOTLINE_SEQ: String(event.seq),
    BOOTLINE_PROGRESS_PERCENT: String(Math.floor(Math.max(0, Math.min(100, event.progress)))),
  };
  if (event.deviceId !== undefined) env.BOOTLINE_DEVICE_ID = noNul(event.deviceId);
  if ('task' in event && event.task !== undefined) env.BOOTLINE_TASK = noNul(event.task);
  if ('status' in event) env.BOOTLINE_STATUS = event.status;
  if ('message' in event && event.message !== undefined) env.BOOTLINE_MESSAGE = noNul(event.message);
  return env;
}

export class CommandReporter implements Reporter {
  readonly name: string;
  private readonly command: string;
  private readonly events: Set<string> | undefined;
  private readonly timeoutMs: number;
  private readonly warn: Warn;
  private readonly queue: BootlineEvent[] = [];
  private running: Promise<void> | undefined;
  private current: AbortController | undefined;
  private stopped = false;
  private warnedFull = false;

  constructor(cfg: ReporterConfigOf<'command'>, opts: { warn: Warn }) {
    this.command = cfg.command;
    this.events = cfg.events ? new Set(cfg.events) : undefined;
    this.timeoutMs = (cfg.timeout ?? 10) * 1000;
    this.warn = opts.warn;
    const short = cfg.command.length > 40 ? `${cfg.command.slice(0, 39)}…` : cfg.command;
    this.name = `command(${short})`;
  }

  handle(event: BootlineEvent): void {
    if (this.stopped || (this.events && !this.events.has(event.type))) return;
    if (enqueueBounded(this.queue, event, QUEUE_LIMIT) > 0 && !this.warnedFull) {
      this.warnedFull = true;
      this.warn(`${this.name}: the command is slower than the events; dropping old progress and log events`);
    }
    if (!this.running) {
      this.running = this.drain().finally(() => {
        this.running = undefined;
      });
    }
  }

  async close(deadline: number): Promise<void> {
    if (this.running) await untilDeadline(this.running, deadline);
    this.stopped = true;
    const notRun = this.queue.length + (this.current ? 1 : 0);
    this.current?.abort();
    this.queue.length = 0;
    if (notRun > 0) this.warn(`${this.name}: ${notRun} events not handled by the deadline; stopped the command`);
  }

  private async drain(): Promise<void> {
    for (let e = this.queue.shift(); e && !this.stopped; e = this.queue.shift()) await this.run(e);
  }

  private async run(event: BootlineEvent): Promise<void> {
    const what = `${event.type} #${event.seq}`;
    let stderrTail = '';
    this.current = new AbortController();
    const r = await runProcess({
      file: '/bin/sh',
      args: ['-c', this.command],
      env: commandEnv(event),
      input: `${JSON.stringify(event)}\n`,
      timeoutMs: this.timeoutMs,
      graceMs: KILL_GRACE_MS,
      signal: this.current.signal,
      onLine: (stream, line) => {
        if (stream === 'stderr' && line.trim() !== '') stderrTail = line.trim();
      },
    });
    this.current = undefined;
    if (r.spawnError) this.warn(`${this.name}: cannot run /bin/sh for ${what}: ${r.spawnError.message}`);
    else if (r.timedOut) this.warn(`${this.name}: timed out after ${this.timeoutMs / 1000} s on ${what}; killed its process group`);
    else if (r.exitCode !== 0 && !this.stopped) {
      const how = r.exitCode !== null ? `exited with code ${r.exitCode}` : `was killed by ${r.signal}`;
      this.warn(`${this.name}: ${how} on ${what}${stderrTail ? `: ${stderrTail}` : ''}`);
    }
  }
}
