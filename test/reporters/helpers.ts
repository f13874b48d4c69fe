// Event factories shared by the reporter tests: a small plan with realistic fields.
import type {
  BootlineEvent,
  LogEvent,
  RunEndEvent,
  RunStartEvent,
  TaskEndEvent,
  TaskProgressEvent,
  TaskStartEvent,
} from '../../src/events.ts';

export const RUN_ID = 'run-1';
export const TASKS = ['partition', 'write-image', 'encrypt'];

export class Events {
  private seq = 0;
  constructor(private readonly t0 = Date.parse('2024-05-01T10:00:00Z')) {}

  private base(progress: number, atMs = 0) {
    return { runId: RUN_ID, seq: this.seq++, ts: new Date(this.t0 + atMs).toISOString(), progress };
  }

  runStart(tasks = TASKS, resumed: string[] = []): RunStartEvent {
    return {
      type: 'run-start',
      ...this.base(0),
      count: tasks.length,
      tasks: tasks.map((name) => ({ name, kind: 'builtin', effort: 1, share: 100 / tasks.length })),
      version: '0.1.0',
      hostname: 'dut-7',
      resumed,
    };
  }

  taskStart(index: number, progress: number, task = TASKS[index] ?? `t${index}`, count = TASKS.length): TaskStartEvent {
    return { type: 'task-start', ...this.base(progress), task, index, count, attempt: 1, taskProgress: 0 };
  }

  progress(index: number, taskProgress: number, progress: number, extra: Partial<TaskProgressEvent> = {}): TaskProgressEvent {
    const task = TASKS[index] ?? `t${index}`;
    return { type: 'task-progress', ...this.base(progress), task, index, count: TASKS.length, taskProgress, ...extra };
  }

  taskEnd(index: number, status: TaskEndEvent['status'], progress: number, extra: Partial<TaskEndEvent> = {}): TaskEndEvent {
    const task = TASKS[index] ?? `t${index}`;
    return {
      type: 'task-end',
      ...this.base(progress),
      task,
      index,
      count: TASKS.length,
      status,
      attempt: 1,
      durationMs: 1234,
      taskProgress: 100,
      optional: false,
      ...extra,
    };
  }

  log(message: string, extra: Partial<LogEvent> = {}): LogEvent {
    return { type: 'log', ...this.base(0), stream: 'stdout', level: 'info', message, ...extra };
  }

  runEnd(status: RunEndEvent['status'], progress = 100, failedTask?: string, message?: string): RunEndEvent {
    const b = this.base(progress);
    return {
      type: 'run-end',
      ...b,
      status,
      durationMs: 65_000,
      ...(message ? { message } : {}),
      report: {
        runId: RUN_ID,
        status,
        startedAt: new Date(this.t0).toISOString(),
        endedAt: b.ts,
        durationMs: 65_000,
        progress,
        tasks: TASKS.map((name) => ({
          name,
          status: name === failedTask ? 'failed' : failedTask && TASKS.indexOf(name) > TASKS.indexOf(failedTask) ? 'not-run' : 'ok',
          attempts: 1,
          durationMs: 1000,
          optional: false,
          ...(name === failedTask ? { message: 'exit code 2', lastLines: ['dd: error writing'] } : { lastLines: [] }),
        })),
      },
    };
  }

  /** A whole successful run. */
  fullRun(): BootlineEvent[] {
    return [
      this.runStart(),
      this.taskStart(0, 0),
      this.taskEnd(0, 'ok', 33),
      this.taskStart(1, 33),
      this.progress(1, 50, 50),
      this.taskEnd(1, 'ok', 66),
      this.taskStart(2, 66),
      this.taskEnd(2, 'ok', 100),
      this.runEnd('ok'),
    ];
  }
}

export function collectWarnings(): { warn: (m: string) => void; messages: string[] } {
  const messages: string[] = [];
  return { warn: (m) => messages.push(m), messages };
}

export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
