// Builds a reporter from its (validated) config. The only place that knows every type.
import type { ReporterConfig } from '../../config/schema.ts';
import { CommandReporter } from './command.ts';
import { ConsoleReporter } from './console.ts';
import { HttpReporter } from './http.ts';
import { JsonReporter } from './json.ts';
import { LedReporter } from './led.ts';
import { PsplashReporter } from './psplash.ts';
import type { Reporter, Warn } from './reporter.ts';

export interface ReporterEnv {
  warn: Warn;
  /** Where console and `json` on fd 1 write; process.stdout by default. */
  stdout?: NodeJS.WritableStream;
  /** Overrides stdout's own isTTY for the console's auto mode. */
  isTTY?: boolean;
}

export function createReporter(cfg: ReporterConfig, env: ReporterEnv): Reporter {
  switch (cfg.type) {
    case 'console':
      return new ConsoleReporter(cfg, { warn: env.warn, stdout: env.stdout, isTTY: env.isTTY });
    case 'json':
      return new JsonReporter(cfg, { warn: env.warn, stdout: env.stdout });
    case 'led':
      return new LedReporter(cfg, { warn: env.warn });
    case 'http':
      return new HttpReporter(cfg, { warn: env.warn });
    case 'psplash':
      return new PsplashReporter(cfg, { warn: env.warn });
    case 'command':
      return new CommandReporter(cfg, { warn: env.warn });
    default: {
      const unknown: never = cfg;
      throw new Error(`unknown reporter type ${JSON.stringify((unknown as { type?: unknown }).type)}`);
    }
  }
}
