// Effort-weighted overall progress. Pure: no clocks, no I/O.
//   overall = (effort of finished tasks + effort of current task x its fraction) / total x 100
// It never goes backwards (a retry does not undo what was shown) and is exactly 100
// only once the run has succeeded.

/** The most a run that has not (yet) succeeded may show. */
export const BELOW_DONE = 99.9;

export class ProgressTracker {
  private readonly efforts: readonly number[];
  private readonly total: number;
  private readonly finished: boolean[];
  private shown = 0;

  constructor(efforts: readonly number[]) {
    if (efforts.some((e) => !(e > 0) || !Number.isFinite(e))) throw new RangeError('efforts must be positive numbers');
    this.efforts = efforts;
    this.total = efforts.reduce((a, b) => a + b, 0);
    this.finished = efforts.map(() => false);
  }

  /** Percent of the whole run each task contributes. */
  shares(): number[] {
    return this.efforts.map((e) => (this.total === 0 ? 0 : (e / this.total) * 100));
  }

  /** Overall progress while task `index` is `taskPercent` (0-100) done. */
  update(index: number, taskPercent: number): number {
    const f = Math.min(100, Math.max(0, Number.isFinite(taskPercent) ? taskPercent : 0)) / 100;
    return this.show(this.doneEffort() + (this.finished[index] ? 0 : (this.efforts[index] ?? 0) * f));
  }

  /** Marks a task as finished (ok, skipped, or an optional one that failed). */
  finish(index: number): number {
    this.finished[index] = true;
    return this.show(this.doneEffort());
  }

  /** The run succeeded. */
  complete(): number {
    this.shown = 100;
    return 100;
  }

  get current(): number {
    return this.shown;
  }

  private doneEffort(): number {
    return this.efforts.reduce((sum, e, i) => (this.finished[i] ? sum + e : sum), 0);
  }

  private show(effortDone: number): number {
    const raw = this.total === 0 ? 0 : (effortDone / this.total) * 100;
    const capped = Math.min(BELOW_DONE, Math.round(raw * 100) / 100);
    this.shown = Math.max(this.shown, capped);
    return this.shown;
  }
}

