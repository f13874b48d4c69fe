// Group commit: writes that arrive while a transaction is running wait for it, then go
// together into the next one, each inside its own savepoint.
//
// Why: SQLite has one writer, and the server's one connection runs its transactions one
// after the other anyway. What a transaction costs is mostly fixed (BEGIN, COMMIT, the WAL
// pages it dirties: a run's row and its device's row, index pages), so 500 devices posting
// event batches one transaction each spent most of their time there. Sharing a transaction
// shares that cost; a savepoint per write keeps each write all-or-nothing, so one device's
// bad batch (a foreign run id, say) fails alone.

/** Runs `fn` inside one transaction, committing when it resolves and rolling back when it throws. */
export type TransactionRunner<Db> = <T>(fn: (db: Db) => Promise<T>) => Promise<T>;

/** Opens, releases and rolls back to a named savepoint on `db`. */
export interface Savepoints<Db> {
  begin(db: Db, name: string): Promise<void>;
  release(db: Db, name: string): Promise<void>;
  rollback(db: Db, name: string): Promise<void>;
}

interface Pending<J, R> {
  job: J;
  resolve(r: R): void;
  reject(e: unknown): void;
}

export class GroupCommit<Db, J, R> {
  private queue: Pending<J, R>[] = [];
  private draining = false;

  /**
   * @param maxGroup writes per transaction at most, so that one commit never waits on an
   *   unbounded amount of work and a write's latency stays bounded.
   */
  constructor(
    private readonly runTx: TransactionRunner<Db>,
    private readonly savepoints: Savepoints<Db>,
    private readonly work: (db: Db, job: J) => Promise<R>,
    private readonly maxGroup = 200,
  ) {}

  /** Queues `job`; resolves with its result once the transaction holding it has committed. */
  submit(job: J): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      if (!this.draining) {
        this.draining = true;
        // Let the requests already parsed in this turn of the event loop join the group.
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, this.maxGroup);
        const outcomes: ({ ok: true; value: R } | { ok: false; error: unknown })[] = [];
        try {
          await this.runTx(async (db) => {
            // One name for all: each savepoint is released before the next begins, and the
            // same statement text is prepared once.
            const name = 'batch';
            for (const p of group) {
              await this.savepoints.begin(db, name);
              try {
                outcomes.push({ ok: true, value: await this.work(db, p.job) });
                await this.savepoints.release(db, name);
              } catch (error) {
                await this.savepoints.rollback(db, name);
                await this.savepoints.release(db, name);
                outcomes.push({ ok: false, error });
              }
            }
          });
        } catch (error) {
          // The transaction itself failed (BEGIN or COMMIT): nothing of the group was stored.
          for (const p of group) p.reject(error);
          continue;
        }
        for (const [i, p] of group.entries()) {
          const o = outcomes[i]!;
          if (o.ok) p.resolve(o.value);
          else p.reject(o.error);
        }
      }
    } finally {
      this.draining = false;
    }
  }
}
