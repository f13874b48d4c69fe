// The run journal: each task's outcome, written atomically (temp file, fsync, rename,
// fsync of the directory) so that after a crash or power loss the agent knows which
// tasks finished and re-runs only the interrupted one.
import { open, rename, readFile, mkdir, unlink } from 'node:fs/promises';
import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Task } from '../config/schema.ts';
import { clearWitness, hasWitness } from './exit-witness.ts';

export interface JournalEntry {
  status: 'ok' | 'failed' | 'skipped' | 'running';
  /** Hash of the task's definition: a changed task is not considered finished. */
  definition: string;
  attempts: number;
  startedAt?: string;
  endedAt?: string;
  durationMs?: number;
  /** Set when the journal had the task running and its exit witness showed it had ended ok. */
  witnessed?: boolean;
}

export interface JournalData {
  version: 1;
  runId: string;
  startedAt: string;
  tasks: Record<string, JournalEntry>;
  result?: 'ok' | 'failed' | 'aborted';
}

export const JOURNAL_FILE = 'journal.json';

export function taskDefinitionHash(t: Task): string {
  const { name, kind, builtin, script, with: options, workdir, args, env } = t;
  return createHash('sha256').update(JSON.stringify({ name, kind, builtin, script, options, workdir, args, env })).digest('hex').slice(0, 16);
}

export class Journal {
  readonly path: string;
  private data: JournalData;

  private constructor(path: string, data: JournalData) {
    this.path = path;
    this.data = data;
  }

  /**
   * Opens the journal in `stateDir`, or starts a new one when `fresh` or when none is readable.
   * `witnessed` names the tasks it had as running that had in fact ended ok (exit-witness.ts):
   * they are recorded as ok, so the run skips them.
   */
  static async open(stateDir: string, runId: string, fresh: boolean, warn: (m: string) => void): Promise<{ journal: Journal; previous?: JournalData; witnessed: string[] }> {
    const path = join(stateDir, JOURNAL_FILE);
    await mkdir(stateDir, { recursive: true });
    let previous: JournalData | undefined;
    if (!fresh) {
      try {
        const parsed = JSON.parse(await readFile(path, 'utf8')) as JournalData;
        if (parsed.version === 1 && parsed.tasks && typeof parsed.tasks === 'object') previous = parsed;
        else warn(`${path}: unknown journal format; starting afresh`);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT') warn(`${path}: unreadable journal (${(e as Error).message}); starting afresh`);
      }
    }
    const data: JournalData = { version: 1, runId, startedAt: new Date().toISOString(), tasks: previous ? structuredClone(previous.tasks) : {} };
    const witnessed = witnessedRunning(stateDir, data.tasks);
    for (const name of witnessed) data.tasks[name] = { ...data.tasks[name]!, status: 'ok', witnessed: true };
    const journal = new Journal(path, data);
    await journal.save();
    for (const name of witnessed) clearWitness(stateDir, data.tasks[name]!.definition);
    return { journal, ...(previous ? { previous } : {}), witnessed };
  }

  /** True when the journal says this exact task already finished successfully. */
  finished(t: Task): boolean {
    const e = this.data.tasks[t.name];
    return !!e && e.status === 'ok' && e.definition === taskDefinitionHash(t);
  }

  entry(name: string): JournalEntry | undefined {
    return this.data.tasks[name];
  }

  async record(t: Task, entry: Omit<JournalEntry, 'definition'>): Promise<void> {
    this.data.tasks[t.name] = { ...entry, definition: taskDefinitionHash(t) };
    await this.save();
  }

  async finish(result: JournalData['result']): Promise<void> {
    this.data.result = result;
    await this.save();
  }

  private async save(): Promise<void> {
    // Synchronous: between a task's end and this record a power cut runs the task again, and
    // each hop through the thread pool widens that window on a busy device (seen: ~100 ms
    // with a load of 9 on 2 cores). The journal is a few KiB.
    writeAtomicSync(this.path, JSON.stringify(this.data, null, 2) + '\n');
  }
}

/** The tasks `tasks` has as running whose exit witness in `stateDir` says they ended ok. */
function witnessedRunning(stateDir: string, tasks: Record<string, JournalEntry>): string[] {
  return Object.entries(tasks)
    .filter(([, e]) => e.status === 'running' && hasWitness(stateDir, e.definition))
    .map(([name]) => name);
}

/** The tasks a restarted agent would skip, read from a state dir: journalled ok, or witnessed. */
export function finishedTasks(stateDir: string): string[] {
  try {
    const j = JSON.parse(readFileSync(join(stateDir, JOURNAL_FILE), 'utf8')) as Partial<JournalData>;
    const tasks = j.tasks && typeof j.tasks === 'object' ? j.tasks : {};
    const ok = Object.entries(tasks)
      .filter(([, e]) => e.status === 'ok')
      .map(([name]) => name);
    return [...ok, ...witnessedRunning(stateDir, tasks)];
  } catch {
    return [];
  }
}

/** True when `stateDir` holds no journal that records any task (a fresh installer's RAM disk). */
export async function journalIsEmpty(stateDir: string): Promise<boolean> {
  try {
    const parsed = JSON.parse(await readFile(join(stateDir, JOURNAL_FILE), 'utf8')) as Partial<JournalData>;
    return !parsed.tasks || typeof parsed.tasks !== 'object' || Object.keys(parsed.tasks).length === 0;
  } catch {
    return true;
  }
}

/**
 * Writes a journal saying that `tasks` finished in run `runId`, exactly as the runner
 * records a finished task (status ok, the hash of the task's current definition), so
 * that the next run skips them. Used when the server knows what an interrupted run
 * finished and the local journal was lost with the RAM disk it lived on.
 */
export async function seedJournal(stateDir: string, runId: string, tasks: readonly Task[], at = new Date()): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  const data: JournalData = { version: 1, runId, startedAt: at.toISOString(), tasks: {} };
  for (const t of tasks) data.tasks[t.name] = { status: 'ok', definition: taskDefinitionHash(t), attempts: 1, endedAt: at.toISOString() };
  await writeAtomic(join(stateDir, JOURNAL_FILE), JSON.stringify(data, null, 2) + '\n');
}

/** writeAtomic without leaving the calling thread. */
export function writeAtomicSync(path: string, content: string, mode = 0o644): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    fchmodSync(fd, mode);
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * Replaces `path` so that a reader sees either the old or the new content, never a mix.
 * `mode` is set before any content is written (0o600 for a secret).
 */
export async function writeAtomic(path: string, content: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  const fh = await open(tmp, 'w', mode);
  try {
    // A temp file left over by an earlier process with this pid keeps its old mode.
    await fh.chmod(mode);
    await fh.writeFile(content);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw e;
  }
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
