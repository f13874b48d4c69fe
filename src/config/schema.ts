// The one configuration schema. Every source (YAML/JSON file, Isar .conf lines,
// auto.install, kernel command line, server plan) is turned into a partial object of
// this shape, merged, then validated here; types come from the schema.
import { Type, type Static, type TObject } from '@sinclair/typebox';

const seconds = (description: string, dflt?: number) =>
  Type.Number({ exclusiveMinimum: 0, description, ...(dflt === undefined ? {} : { default: dflt }) });

export const TASK_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]*$';

export const TaskSchema = Type.Object(
  {
    name: Type.String({ pattern: TASK_NAME_PATTERN, description: 'unique name of the task' }),
    builtin: Type.Optional(Type.String({ minLength: 1, description: 'name of a built-in task' })),
    script: Type.Optional(Type.String({ minLength: 1, description: 'script run as ./script from workdir' })),
    with: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "the built-in's options" })),
    workdir: Type.Optional(Type.String({ minLength: 1, default: '.', description: 'directory the script runs in' })),
    args: Type.Optional(Type.Array(Type.String(), { default: [] })),
    env: Type.Optional(Type.Record(Type.String(), Type.String(), { default: {} })),
    effort: Type.Optional(Type.Number({ exclusiveMinimum: 0, default: 1, description: 'positive weight in overall progress' })),
    timeout: Type.Optional(seconds('seconds before the whole process group is killed')),
    retries: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
    retryDelay: Type.Optional(Type.Number({ minimum: 0, default: 2, description: 'seconds between attempts' })),
    optional: Type.Optional(Type.Boolean({ default: false, description: 'a failure is reported but the run goes on' })),
    rerun: Type.Optional(
      Type.Union([Type.Literal('if-unfinished'), Type.Literal('always')], {
        default: 'if-unfinished',
        description: 'always: run again even if the journal says it finished',
      }),
    ),
  },
  { additionalProperties: false },
);

export const FinalActionSchema = Type.Object(
  {
    action: Type.Optional(
      Type.Union([Type.Literal('none'), Type.Literal('reboot'), Type.Literal('poweroff'), Type.Literal('shell')], { default: 'none' }),
    ),
    delay: Type.Optional(Type.Number({ minimum: 0, default: 0, description: 'seconds to wait (and show) before the action' })),
    command: Type.Optional(Type.String({ minLength: 1, description: 'command that performs the action instead of the default' })),
  },
  { additionalProperties: false },
);

const common = {
  interval: Type.Optional(Type.Number({ minimum: 0, description: 'minimum milliseconds between progress events' })),
  events: Type.Optional(Type.Array(Type.String(), { description: 'event types to receive (default: all)' })),
};

export const ReporterSchemas = {
  console: Type.Object(
    {
      type: Type.Literal('console'),
      ...common,
      mode: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('tty'), Type.Literal('plain')], { default: 'auto' })),
      /** Extra TTYs (e.g. /dev/tty1 and /dev/ttyS0 on the installer) to mirror the console to. */
      ttys: Type.Optional(Type.Array(Type.String())),
    },
    { additionalProperties: false },
  ),
  json: Type.Object(
    {
      type: Type.Literal('json'),
      ...common,
      path: Type.Optional(Type.String({ minLength: 1 })),
      fd: Type.Optional(Type.Integer({ minimum: 0 })),
    },
    { additionalProperties: false },
  ),
  led: Type.Object(
    {
      type: Type.Literal('led'),
      ...common,
      root: Type.Optional(Type.String({ default: '/sys/class/leds' })),
      leds: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'LED names under root' }),
      patterns: Type.Optional(
        // Partial: overriding one state's pattern keeps the defaults of the others.
        Type.Partial(Type.Record(
          Type.Union([Type.Literal('running'), Type.Literal('success'), Type.Literal('failure')]),
          Type.Object(
            {
              mode: Type.Union([Type.Literal('on'), Type.Literal('off'), Type.Literal('blink')]),
              delayOn: Type.Optional(Type.Integer({ minimum: 1 })),
              delayOff: Type.Optional(Type.Integer({ minimum: 1 })),
              brightness: Type.Optional(Type.Integer({ minimum: 0 })),
            },
            { additionalProperties: false },
          ),
        )),
      ),
    },
    { additionalProperties: false },
  ),
  http: Type.Object(
    {
      type: Type.Literal('http'),
      ...common,
      url: Type.String({ minLength: 1 }),
      headers: Type.Optional(Type.Record(Type.String(), Type.String())),
      token: Type.Optional(Type.String()),
      batchSize: Type.Optional(Type.Integer({ minimum: 1, default: 100 })),
      queueSize: Type.Optional(Type.Integer({ minimum: 1, default: 1000 })),
      retries: Type.Optional(Type.Integer({ minimum: 0, default: 5 })),
      timeout: Type.Optional(seconds('seconds per request', 10)),
      flushTimeout: Type.Optional(seconds('seconds to deliver what is queued at the end', 15)),
      ca: Type.Optional(Type.String({ description: 'PEM CA bundle file' })),
    },
    { additionalProperties: false },
  ),
  psplash: Type.Object(
    {
      type: Type.Literal('psplash'),
      ...common,
      fifo: Type.Optional(Type.String({ default: '/run/psplash_fifo' })),
    },
    { additionalProperties: false },
  ),
  command: Type.Object(
    {
      type: Type.Literal('command'),
      ...common,
      command: Type.String({ minLength: 1, description: 'run with /bin/sh -c' }),
      timeout: Type.Optional(seconds('seconds per invocation', 10)),
    },
    { additionalProperties: false },
  ),
} satisfies Record<string, TObject>;

export type ReporterType = keyof typeof ReporterSchemas;
export const REPORTER_TYPES = Object.keys(ReporterSchemas) as ReporterType[];
export const ReporterSchema = Type.Union(Object.values(ReporterSchemas));
export type ReporterConfig = Static<typeof ReporterSchema>;
export type ReporterConfigOf<T extends ReporterType> = Static<(typeof ReporterSchemas)[T]>;

export const ConfigSchema = Type.Object(
  {
    unattended: Type.Optional(Type.Boolean({ default: false, description: 'run without asking anyone' })),
    abort: Type.Optional(
      Type.Object(
        {
          enable: Type.Optional(Type.Boolean({ default: false, description: 'offer a key press to switch to attended mode' })),
          timeout: Type.Optional(Type.Number({ minimum: 0, default: 5, description: 'seconds the countdown lasts' })),
        },
        { additionalProperties: false },
      ),
    ),
    deviceId: Type.Optional(Type.String({ minLength: 1 })),
    server: Type.Optional(Type.String({ minLength: 1, description: 'bootline server URL' })),
    token: Type.Optional(Type.String({ minLength: 1, description: 'enrollment token for the server' })),
    serverCa: Type.Optional(Type.String({ minLength: 1, description: "PEM CA bundle file the server's https certificate is checked with" })),
    stateDir: Type.Optional(Type.String({ minLength: 1 })),
    logs: Type.Optional(
      Type.Object(
        {
          eventsPerTask: Type.Optional(Type.Integer({ minimum: 0, default: 500, description: 'log events per task before they are cut' })),
          lineLength: Type.Optional(Type.Integer({ minimum: 16, default: 2000 })),
          reportLines: Type.Optional(Type.Integer({ minimum: 0, default: 20, description: 'last lines kept per task in the report' })),
        },
        { additionalProperties: false },
      ),
    ),
    tasks: Type.Array(TaskSchema),
    hooks: Type.Optional(
      Type.Object(
        {
          before: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: [] })),
          after: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: [] })),
          failRun: Type.Optional(Type.Boolean({ default: false, description: 'a failing hook fails the run' })),
          timeout: Type.Optional(seconds('seconds per hook', 60)),
        },
        { additionalProperties: false },
      ),
    ),
    reporters: Type.Optional(Type.Array(ReporterSchema)),
    onSuccess: Type.Optional(FinalActionSchema),
    onFailure: Type.Optional(FinalActionSchema),
  },
  { additionalProperties: false },
);

export type RawConfig = Static<typeof ConfigSchema>;
export type RawTask = Static<typeof TaskSchema>;
export type FinalAction = Required<Pick<Static<typeof FinalActionSchema>, 'action' | 'delay'>> & { command?: string };

/** A task with every default applied. */
export interface Task {
  name: string;
  kind: 'builtin' | 'script';
  builtin?: string;
  script?: string;
  with: Record<string, unknown>;
  workdir: string;
  args: string[];
  env: Record<string, string>;
  effort: number;
  timeout?: number;
  retries: number;
  retryDelay: number;
  optional: boolean;
  rerun: 'if-unfinished' | 'always';
}

/** The configuration the agent runs with: validated, every default applied. */
export interface Config {
  unattended: boolean;
  abort: { enable: boolean; timeout: number };
  deviceId?: string;
  server?: string;
  token?: string;
  serverCa?: string;
  stateDir?: string;
  logs: { eventsPerTask: number; lineLength: number; reportLines: number };
  tasks: Task[];
  hooks: { before: string[]; after: string[]; failRun: boolean; timeout: number };
  reporters: ReporterConfig[];
  onSuccess: FinalAction;
  onFailure: FinalAction;
}
