// A run's events as an agent sends them: for server tests and benchmarks.
import type { BootlineEvent } from '../../src/events.ts';

export function runEvents(runId: string, opts: { fail?: boolean; tasks?: string[] } = {}): BootlineEvent[] {
  const tasks = opts.tasks ?? ['deploy', 'finish'];
  const ts = () => new Date().toISOString();
  const count = tasks.length;
  const events: BootlineEvent[] = [];
  let seq = 0;
  events.push({
    type: 'run-start', runId, seq: seq++, ts: ts(), progress: 0, count,
    tasks: tasks.map((name) => ({ name, kind: 'script', effort: 1, share: 100 / count })), version: '0.1.0', hostname: 'dut', resumed: [],
  });
  tasks.forEach((task, index) => {
    const failed = opts.fail === true && index === count - 1;
    const base = (index / count) * 100;
    events.push({ type: 'task-start', runId, seq: seq++, ts: ts(), progress: base, task, index, count, attempt: 1, taskProgress: 0 });
    events.push({ type: 'task-progress', runId, seq: seq++, ts: ts(), progress: base + 50 / count, task, index, count, taskProgress: 50, bytesDone: 5, bytesTotal: 10 });
    events.push({ type: 'log', runId, seq: seq++, ts: ts(), progress: base + 50 / count, task, index, stream: 'stdout', level: 'info', message: `working on ${task}` });
    events.push({
      type: 'task-end', runId, seq: seq++, ts: ts(), progress: failed ? base : ((index + 1) / count) * 100, task, index, count,
      status: failed ? 'failed' : 'ok', attempt: 1, durationMs: 10, taskProgress: failed ? 50 : 100, optional: false, exitCode: failed ? 3 : 0,
      ...(failed ? { message: '=cmd|exit status 3, "disk full"' } : {}),
    });
  });
  const status = opts.fail ? 'failed' : 'ok';
  const startedAt = events[0]!.ts;
  events.push({
    type: 'run-end', runId, seq: seq++, ts: ts(), progress: opts.fail ? 50 : 100, status, durationMs: 50,
    report: {
      runId, status, startedAt, endedAt: ts(), durationMs: 50, progress: opts.fail ? 50 : 100,
      tasks: tasks.map((name, i) => ({ name, status: opts.fail && i === count - 1 ? 'failed' : 'ok', attempts: 1, durationMs: 10, optional: false, lastLines: [] })),
    },
  });
  return events;
}
