// The documented environment of a task (scripts, built-ins and hooks all see it).

export interface TaskEnvInput {
  runId: string;
  task: string;
  /** 0-based; exported 1-based, as the console shows "Task 2/3". */
  index: number;
  count: number;
  stateDir: string;
  deviceId?: string;
  server?: string;
  unattended: boolean;
  progressPercent: number;
  /** Values published by earlier tasks (setOutput), e.g. target -> BOOTLINE_TARGET. */
  outputs: Record<string, string>;
  progressFifo?: string;
  logFile?: string;
}

export function outputVar(key: string): string {
  return `BOOTLINE_${key.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`;
}

export function taskEnv(i: TaskEnvInput): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(i.outputs)) env[outputVar(k)] = v;
  Object.assign(env, {
    BOOTLINE_RUN_ID: i.runId,
    BOOTLINE_TASK: i.task,
    BOOTLINE_TASK_INDEX: String(i.index + 1),
    BOOTLINE_TASK_COUNT: String(i.count),
    BOOTLINE_STATE_DIR: i.stateDir,
    BOOTLINE_DEVICE_ID: i.deviceId ?? '',
    BOOTLINE_SERVER: i.server ?? '',
    BOOTLINE_UNATTENDED: i.unattended ? '1' : '0',
    BOOTLINE_PROGRESS_PERCENT: String(Math.floor(i.progressPercent)),
  });
  if (i.progressFifo) env.BOOTLINE_PROGRESS = i.progressFifo;
  if (i.logFile) env.BOOTLINE_LOG = i.logFile;
  return env;
}
