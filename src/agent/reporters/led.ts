// The led reporter: shows the run's state on LEDs of the Linux LED class, so that a
// worker on the line sees from a distance which devices are busy, done or failed.
import { closeSync, constants, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { BootlineEvent } from '../../events.ts';
import type { ReporterConfigOf } from '../../config/schema.ts';
import type { Reporter, Warn } from './reporter.ts';

export type LedState = 'running' | 'success' | 'failure';

export interface LedPattern {
  mode: 'on' | 'off' | 'blink';
  delayOn?: number;
  delayOff?: number;
  brightness?: number;
}

export const DEFAULT_LED_PATTERNS: Readonly<Record<LedState, LedPattern>> = {
  running: { mode: 'blink', delayOn: 500, delayOff: 500 },
  success: { mode: 'on' },
  failure: { mode: 'blink', delayOn: 100, delayOff: 100 },
};

/** The LED state an event switches to, if any. */
export function ledStateFor(event: BootlineEvent): LedState | undefined {
  if (event.type === 'run-start') return 'running';
  if (event.type === 'run-end') return event.status === 'ok' ? 'success' : 'failure';
  return undefined;
}

export function resolvePattern(state: LedState, overrides?: Partial<Record<LedState, LedPattern>>): LedPattern {
  return { ...DEFAULT_LED_PATTERNS[state], ...overrides?.[state] };
}

/**
 * The sysfs writes for a pattern, in order. The trigger goes first: the kernel only
 * creates delay_on/delay_off once the timer trigger is active, and writing brightness
 * while a trigger is set would be undone by the trigger.
 */
export function ledWrites(p: LedPattern, maxBrightness: number): [file: string, value: string][] {
  switch (p.mode) {
    case 'on':
      return [
        ['trigger', 'none'],
        ['brightness', String(p.brightness ?? maxBrightness)],
      ];
    case 'off':
      return [
        ['trigger', 'none'],
        ['brightness', '0'],
      ];
    case 'blink': {
      const out: [string, string][] = [
        ['trigger', 'timer'],
        ['delay_on', String(p.delayOn ?? 500)],
        ['delay_off', String(p.delayOff ?? 500)],
      ];
      // A non-zero brightness while blinking sets the "on" level of the blink.
      if (p.brightness !== undefined && p.brightness > 0) out.push(['brightness', String(p.brightness)]);
      return out;
    }
  }
}

function hint(code: string | undefined, file: string): string {
  if (code === 'EACCES' || code === 'EPERM') return 'the agent must run as root to drive LEDs';
  if (code === 'ENOENT' && (file === 'delay_on' || file === 'delay_off')) return 'is the timer trigger available (CONFIG_LEDS_TRIGGER_TIMER)?';
  if (code === 'EINVAL' && file === 'trigger') return 'the kernel does not know this trigger (CONFIG_LEDS_TRIGGER_TIMER?)';
  return 'check the LED driver';
}

export class LedReporter implements Reporter {
  readonly name: string;
  private readonly root: string;
  private readonly leds: string[];
  private readonly patterns: Partial<Record<LedState, LedPattern>> | undefined;
  private readonly warn: Warn;
  private readonly warned = new Set<string>();

  constructor(cfg: ReporterConfigOf<'led'>, opts: { warn: Warn }) {
    this.root = cfg.root ?? '/sys/class/leds';
    this.leds = cfg.leds;
    this.patterns = cfg.patterns;
    this.warn = opts.warn;
    this.name = `led(${cfg.leds.join(',')})`;
  }

  handle(event: BootlineEvent): void {
    const state = ledStateFor(event);
    if (state) this.show(state);
  }

  /** Sets every LED to the pattern of `state`; problems are warned once per LED and cause. */
  show(state: LedState): void {
    const pattern = resolvePattern(state, this.patterns);
    for (const led of this.leds) {
      const dir = join(this.root, led);
      if (!existsSync(dir)) {
        this.warnOnce(
          `${led}:missing`,
          `${this.name}: ${dir} does not exist; check the LED name (ls ${this.root}) and that the LED's driver or device tree node is present`,
        );
        continue;
      }
      // Synchronous on purpose: sysfs attribute writes do not block, and the order matters.
      for (const [file, value] of ledWrites(pattern, this.maxBrightness(dir))) {
        const path = join(dir, file);
        try {
          // No O_CREAT: sysfs attributes exist or the kernel does not support them.
          const fd = openSync(path, constants.O_WRONLY | constants.O_TRUNC);
          try {
            writeSync(fd, value);
          } finally {
            closeSync(fd);
          }
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          this.warnOnce(`${led}:${file}:${code}`, `${this.name}: cannot write "${value}" to ${path} (${code ?? String(err)}); ${hint(code, file)}`);
          break;
        }
      }
    }
  }

  private maxBrightness(dir: string): number {
    try {
      const n = Number.parseInt(readFileSync(join(dir, 'max_brightness'), 'utf8').trim(), 10);
      return Number.isFinite(n) && n > 0 ? n : 1;
    } catch {
      return 1;
    }
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.warn(message);
  }
}
