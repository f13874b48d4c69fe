// The progress meter: smoothed rate and ETA of a copy phase, reported on a timer, kept apart from the copy itself.
import type { CopyProgress } from './copy.ts';

const PROGRESS_MS = 250;
/** Time constant of the rate smoothing. */
const RATE_TAU_S = 3;

/** Smoothed rate and ETA, reported every PROGRESS_MS. */
export class Meter {
  done = 0;
  srcDone = 0;
  /** Identical bytes not written (skipIdentical); reported while writing. */
  skipped: number | undefined;
  private rate = 0;
  private srcRate = 0;
  private last = performance.now();
  private lastDone = 0;
  private lastSrc = 0;
  private timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    private readonly cb: ((p: CopyProgress) => void) | undefined,
    private phase: CopyProgress['phase'],
    private total: number | undefined,
    /** Compressed size: gives an ETA when the decompressed size is unknown. */
    private readonly srcTotal: number | undefined,
  ) {
    if (cb) {
      this.timer = setInterval(() => this.emit(), PROGRESS_MS);
      this.timer.unref();
    }
  }

  restart(phase: CopyProgress['phase'], total: number): void {
    this.phase = phase;
    this.total = total;
    this.done = 0;
    this.skipped = undefined;
    this.lastDone = 0;
    this.rate = 0;
  }

  private emit(final = false): void {
    if (!this.cb) return;
    const now = performance.now();
    const dt = (now - this.last) / 1000;
    // Skipped bytes count as done but not towards the rate: they cost nothing.
    const work = this.done - (this.skipped ?? 0);
    if (dt > 0) {
      const a = this.rate === 0 ? 1 : 1 - Math.exp(-dt / RATE_TAU_S);
      this.rate += a * ((work - this.lastDone) / dt - this.rate);
      this.srcRate += (this.srcRate === 0 ? 1 : a) * ((this.srcDone - this.lastSrc) / dt - this.srcRate);
    }
    this.last = now;
    this.lastDone = work;
    this.lastSrc = this.srcDone;
    let eta: number | undefined;
    if (final) eta = 0;
    else if (this.total !== undefined && this.rate > 0) eta = Math.max(0, (this.total - this.done) / this.rate);
    else if (this.total === undefined && this.srcTotal !== undefined && this.srcRate > 0) eta = Math.max(0, (this.srcTotal - this.srcDone) / this.srcRate);
    this.cb({
      bytesDone: this.done,
      ...(this.total !== undefined ? { bytesTotal: this.total } : {}),
      rate: Math.max(0, this.rate),
      ...(eta !== undefined ? { etaSeconds: eta } : {}),
      phase: this.phase,
      ...(this.skipped !== undefined && this.phase === 'writing' ? { bytesSkipped: this.skipped } : {}),
    });
  }

  stop(final: boolean): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (final) {
      this.total ??= this.done;
      this.emit(true);
    }
  }
}
