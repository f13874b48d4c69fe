// The one event vocabulary shared by the agent's reporters, the server's ingestion
// and storage, and the dashboard. Schemas are the source; types are derived from them.
import { Type, type Static, type TSchema } from '@sinclair/typebox';

export const TaskStatus = Type.Union([Type.Literal('ok'), Type.Literal('failed'), Type.Literal('skipped')]);
export type TaskStatus = Static<typeof TaskStatus>;

export const RunStatus = Type.Union([Type.Literal('ok'), Type.Literal('failed'), Type.Literal('aborted')]);
export type RunStatus = Static<typeof RunStatus>;

/** Fields every event carries: (runId, seq) is unique, so a receiver can drop a re-sent event. */
const base = {
  runId: Type.String({ minLength: 1 }),
  seq: Type.Integer({ minimum: 0 }),
  ts: Type.String({ description: 'ISO 8601 time the event was made' }),
  deviceId: Type.Optional(Type.String()),
  /** Overall run progress, 0-100, effort-weighted and never decreasing. */
  progress: Type.Number({ minimum: 0, maximum: 100 }),
};

const taskRef = {
  task: Type.String(),
  index: Type.Integer({ minimum: 0, description: '0-based position of the task in the plan' }),
  count: Type.Integer({ minimum: 0 }),
};

export const PlannedTask = Type.Object({
  name: Type.String(),
  kind: Type.Union([Type.Literal('builtin'), Type.Literal('script')]),
  effort: Type.Number(),
  /** Share of the whole run this task contributes, in percent. */
  share: Type.Number(),
});
export type PlannedTask = Static<typeof PlannedTask>;

/** The netboot installer the agent runs in (from its /etc/bootline/installer.json). */
export const InstallerInfo = Type.Object({
  version: Type.String(),
  /** Kernel release, e.g. 6.1.0-41-amd64. */
  kernel: Type.String(),
  /** Size of initrd.img as served (compressed). */
  initramfsBytes: Type.Integer({ minimum: 0 }),
  /** Seconds from kernel start to the agent's start (/proc/uptime). */
  bootSeconds: Type.Optional(Type.Number()),
});
export type InstallerInfo = Static<typeof InstallerInfo>;

export const RunStartEvent = Type.Object({
  type: Type.Literal('run-start'),
  ...base,
  count: Type.Integer({ minimum: 0 }),
  tasks: Type.Array(PlannedTask),
  version: Type.String(),
  hostname: Type.String(),
  /** Seconds since the kernel booted when the agent started (from /proc/uptime). */
  bootSeconds: Type.Optional(Type.Number()),
  /** Set when the agent runs in bootline's installer. */
  installer: Type.Optional(InstallerInfo),
  resumed: Type.Array(Type.String(), { description: 'tasks the journal says already finished' }),
});

export const TaskStartEvent = Type.Object({
  type: Type.Literal('task-start'),
  ...base,
  ...taskRef,
  attempt: Type.Integer({ minimum: 1 }),
  taskProgress: Type.Number({ minimum: 0, maximum: 100 }),
});

export const TaskProgressEvent = Type.Object({
  type: Type.Literal('task-progress'),
  ...base,
  ...taskRef,
  taskProgress: Type.Number({ minimum: 0, maximum: 100 }),
  message: Type.Optional(Type.String()),
  /** Optional detail for byte-moving tasks. */
  bytesDone: Type.Optional(Type.Number()),
  bytesTotal: Type.Optional(Type.Number()),
  rate: Type.Optional(Type.Number({ description: 'bytes per second' })),
  etaSeconds: Type.Optional(Type.Number()),
});

export const TaskEndEvent = Type.Object({
  type: Type.Literal('task-end'),
  ...base,
  ...taskRef,
  status: TaskStatus,
  attempt: Type.Integer({ minimum: 0 }),
  durationMs: Type.Number(),
  taskProgress: Type.Number({ minimum: 0, maximum: 100 }),
  optional: Type.Boolean(),
  exitCode: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  message: Type.Optional(Type.String()),
});

export const TaskReport = Type.Object({
  name: Type.String(),
  status: Type.Union([TaskStatus, Type.Literal('not-run')]),
  attempts: Type.Integer(),
  durationMs: Type.Number(),
  optional: Type.Boolean(),
  message: Type.Optional(Type.String()),
  lastLines: Type.Array(Type.String()),
});
export type TaskReport = Static<typeof TaskReport>;

export const RunReport = Type.Object({
  runId: Type.String(),
  deviceId: Type.Optional(Type.String()),
  status: RunStatus,
  startedAt: Type.String(),
  endedAt: Type.String(),
  durationMs: Type.Number(),
  progress: Type.Number(),
  tasks: Type.Array(TaskReport),
  message: Type.Optional(Type.String()),
});
export type RunReport = Static<typeof RunReport>;

export const RunEndEvent = Type.Object({
  type: Type.Literal('run-end'),
  ...base,
  status: RunStatus,
  durationMs: Type.Number(),
  message: Type.Optional(Type.String()),
  report: RunReport,
});

export const LogEvent = Type.Object({
  type: Type.Literal('log'),
  ...base,
  task: Type.Optional(Type.String()),
  index: Type.Optional(Type.Integer()),
  stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr'), Type.Literal('agent'), Type.Literal('hook')]),
  level: Type.Union([Type.Literal('debug'), Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')]),
  message: Type.String(),
});

export const BootlineEvent = Type.Union([RunStartEvent, TaskStartEvent, TaskProgressEvent, TaskEndEvent, RunEndEvent, LogEvent]);

export type RunStartEvent = Static<typeof RunStartEvent>;
export type TaskStartEvent = Static<typeof TaskStartEvent>;
export type TaskProgressEvent = Static<typeof TaskProgressEvent>;
export type TaskEndEvent = Static<typeof TaskEndEvent>;
export type RunEndEvent = Static<typeof RunEndEvent>;
export type LogEvent = Static<typeof LogEvent>;
export type BootlineEvent = Static<typeof BootlineEvent>;
export type EventType = BootlineEvent['type'];

export const EVENT_TYPES: readonly EventType[] = ['run-start', 'task-start', 'task-progress', 'task-end', 'run-end', 'log'];

/** An event without the fields the emitter stamps on (runId, seq, ts, deviceId). */
export type EventBody<E extends BootlineEvent = BootlineEvent> = E extends BootlineEvent
  ? Omit<E, 'runId' | 'seq' | 'ts' | 'deviceId'>
  : never;

/** Events that must never be dropped by a rate limit or a bounded queue. */
export function isMilestone(e: BootlineEvent): boolean {
  return e.type !== 'task-progress' && e.type !== 'log';
}

export const schemas: Record<EventType, TSchema> = {
  'run-start': RunStartEvent,
  'task-start': TaskStartEvent,
  'task-progress': TaskProgressEvent,
  'task-end': TaskEndEvent,
  'run-end': RunEndEvent,
  log: LogEvent,
};
