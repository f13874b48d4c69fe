// `bootline image copy` as a one-task run: the copy's progress goes through the same
// reporters as the agent's (console bar or plain lines, and psplash for --psplash-pipe),
// so that a bmaptool user gets what the agent shows.
import { Emitter } from '../agent/emitter.ts';
import { Dispatcher, type Subscription } from '../agent/dispatcher.ts';
import { createReporter } from '../agent/reporters/create.ts';
import type { ReporterConfig } from '../config/schema.ts';
import { copyImageSpec, type ImageCopyOptions } from './image-copy.ts';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';

export interface CopyCommandOptions extends Omit<ImageCopyOptions, 'onProgress' | 'onLog' | 'signal'> {
  psplashPipe?: string;
  quiet?: boolean;
  version: string;
}

export async function runCopyCommand(o: CopyCommandOptions): Promise<number> {
  const warn = (m: string) => process.stderr.write(`bootline: warning: ${m}\n`);
  const reporters: ReporterConfig[] = [];
  if (!o.quiet) reporters.push({ type: 'console' });
  if (o.psplashPipe) reporters.push({ type: 'psplash', fifo: o.psplashPipe });
  const subs: Subscription[] = reporters.map((r) => ({ reporter: createReporter(r, { warn, stdout: process.stderr }), interval: r.type === 'psplash' ? 250 : 0 }));
  const dispatcher = new Dispatcher(subs, warn);
  const emitter = new Emitter(randomUUID(), undefined, [(e) => dispatcher.emit(e)]);
  const task = 'copy';
  const ref = { task, index: 0, count: 1 };
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
  const started = Date.now();
  emitter.emit({ type: 'run-start', progress: 0, count: 1, tasks: [{ name: task, kind: 'builtin', effort: 1, share: 100 }], version: o.version, hostname: hostname(), resumed: [] });
  emitter.emit({ type: 'task-start', progress: 0, ...ref, attempt: 1, taskProgress: 0 });
  let status: 'ok' | 'failed' = 'ok';
  let message: string | undefined;
  try {
    const r = await copyImageSpec({
      ...o,
      signal: stop.signal,
      onLog: (m) => emitter.emit({ type: 'log', progress: 0, ...ref, stream: 'agent', level: 'info', message: m }),
      onProgress: (p) => {
        const pct = p.bytesTotal ? Math.min(99.9, (p.bytesDone / p.bytesTotal) * 100) : 0;
        emitter.emit({
          type: 'task-progress',
          progress: pct,
          ...ref,
          taskProgress: pct,
          message: p.phase,
          bytesDone: p.bytesDone,
          ...(p.bytesTotal !== undefined ? { bytesTotal: p.bytesTotal } : {}),
          rate: p.rate,
          ...(p.etaSeconds !== undefined ? { etaSeconds: p.etaSeconds } : {}),
        });
      },
    });
    message = `wrote ${r.bytesWritten} bytes in ${r.seconds.toFixed(1)} s (${r.compression}${r.bmap ? ', bmap' : ''}${r.repairedRanges ? `, ${r.repairedRanges} range(s) repaired` : ''}${r.skippedRanges ? `, ${r.skippedRanges} range(s) (${r.skippedBytes} bytes) already on the target` : ''})`;
  } catch (e) {
    status = 'failed';
    message = stop.signal.aborted ? 'stopped' : (e as Error).message;
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  const durationMs = Date.now() - started;
  const progress = status === 'ok' ? 100 : 0;
  emitter.emit({ type: 'task-end', progress, ...ref, status, attempt: 1, durationMs, taskProgress: progress, optional: false, message });
  const now = new Date().toISOString();
  emitter.emit({
    type: 'run-end',
    progress,
    status,
    durationMs,
    message,
    report: { runId: emitter.runId, status, startedAt: new Date(started).toISOString(), endedAt: now, durationMs, progress, tasks: [{ name: task, status, attempts: 1, durationMs, optional: false, message, lastLines: [] }] },
  });
  await dispatcher.close(Date.now() + 2000);
  if (status !== 'ok') process.stderr.write(`bootline: image copy failed: ${message}\n`);
  else if (!o.quiet) process.stderr.write(`bootline: ${message}\n`);
  return status === 'ok' ? 0 : 1;
}
