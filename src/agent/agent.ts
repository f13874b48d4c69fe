// `bootline run`: load the configuration, set up reporters, run the pipeline, report,
// then perform the final action. Returns the process exit status.
import { loadConfig, type LoadOptions } from '../config/load.ts';
import { ConfigError } from '../config/layer.ts';
import type { Config, ReporterConfig } from '../config/schema.ts';
import { builtins } from './tasks/registry.ts';
import { runPipeline } from './runner.ts';
import { Dispatcher, type Subscription } from './dispatcher.ts';
import { createReporter } from './reporters/create.ts';
import { ttyInteraction } from './interaction.ts';
import { performFinalAction } from './final-action.ts';
import { renderDryRun, renderTaskDryRuns } from './dry-run.ts';
import type { EventType } from '../events.ts';
import { NothingToDo, ServerSession } from './server-session.ts';

export const EXIT = { ok: 0, taskFailed: 1, configError: 2, aborted: 3, internal: 70 } as const;

export const DEFAULT_STATE_DIR = '/var/lib/bootline';

export interface AgentOptions {
  config?: string;
  cmdline?: string;
  autoInstall?: string;
  stateDir?: string;
  fresh?: boolean;
  dryRun?: boolean;
  events?: string;
  unattended?: boolean;
  deviceId?: string;
  version: string;
}

/** Default milliseconds between progress events, per reporter type. */
const DEFAULT_INTERVAL: Record<ReporterConfig['type'], number> = { console: 0, json: 0, led: 0, psplash: 250, http: 1000, command: 1000 };

export async function runAgent(o: AgentOptions): Promise<number> {
  // Set when a source names a server (bootline.server=): its plan is one of the sources.
  const held: { session?: ServerSession } = {};
  try {
    return await run(o, held);
  } finally {
    held.session?.close();
  }
}

async function run(o: AgentOptions, held: { session?: ServerSession }): Promise<number> {
  const warn = (m: string) => process.stderr.write(`bootline: warning: ${m}\n`);
  const info = (m: string) => process.stderr.write(`bootline: ${m}\n`);
  let loaded;
  try {
    const overrides: LoadOptions['overrides'] = {};
    if (o.unattended !== undefined) overrides.unattended = o.unattended;
    if (o.deviceId) overrides.deviceId = o.deviceId;
    if (o.stateDir) overrides.stateDir = o.stateDir;
    loaded = await loadConfig({
      ...(o.config ? { config: o.config } : {}),
      ...(o.cmdline ? { cmdline: o.cmdline } : {}),
      ...(o.autoInstall ? { autoInstall: o.autoInstall } : {}),
      overrides,
      builtins,
      skipScriptCheck: o.dryRun === true,
      plan: async (settings) => {
        held.session = await ServerSession.connect(settings, { defaultStateDir: DEFAULT_STATE_DIR, warn, info });
        if (held.session?.plan.action === 'none') throw new NothingToDo(held.session.server);
        return held.session?.planLayer();
      },
    });
  } catch (e) {
    if (e instanceof NothingToDo) {
      info(e.message);
      return EXIT.ok;
    }
    if (e instanceof ConfigError) {
      process.stderr.write(`bootline: config error — nothing was run:\n${e.message.split('\n').map((l) => `  ${l}`).join('\n')}\n`);
      return EXIT.configError;
    }
    throw e;
  }
  const { config, merged, sources } = loaded;
  const session = held.session;
  if (session) config.reporters = session.withServerReporter(config.reporters);
  if (o.dryRun) {
    process.stdout.write(renderDryRun(config, merged, sources));
    process.stdout.write(await renderTaskDryRuns(config, builtins));
    return EXIT.ok;
  }

  const stateDir = config.stateDir ?? DEFAULT_STATE_DIR;
  await session?.resume(config, stateDir, o.fresh === true);

  const subs = subscriptions(config, o.events, warn);
  const dispatcher = new Dispatcher(subs, warn);
  const stop = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    warn(`received ${sig}: stopping the current task`);
    stop.abort();
  };
  process.on('SIGTERM', onSignal).on('SIGINT', onSignal);
  let report;
  try {
    report = await runPipeline({
      config,
      stateDir,
      fresh: o.fresh === true,
      builtins,
      sinks: [(e) => dispatcher.emit(e)],
      interaction: ttyInteraction(),
      version: o.version,
      signal: stop.signal,
    });
  } finally {
    const flush = Math.max(5, ...config.reporters.map((r) => (r.type === 'http' ? (r.flushTimeout ?? 15) : 0)));
    await dispatcher.close(Date.now() + flush * 1000);
    process.off('SIGTERM', onSignal).off('SIGINT', onSignal);
  }
  await session?.upload(report, stateDir);
  if (report.status !== 'aborted') {
    await performFinalAction(report.status === 'ok' ? config.onSuccess : config.onFailure, (m) => process.stderr.write(`bootline: ${m}\n`));
  }
  return report.status === 'ok' ? EXIT.ok : report.status === 'aborted' ? EXIT.aborted : EXIT.taskFailed;
}

function subscriptions(config: Config, eventsFile: string | undefined, warn: (m: string) => void): Subscription[] {
  const all: ReporterConfig[] = [...config.reporters];
  if (eventsFile) all.push({ type: 'json', path: eventsFile });
  return all.map((r) => ({
    reporter: createReporter(r, { warn }),
    interval: r.interval ?? DEFAULT_INTERVAL[r.type],
    ...(r.events ? { events: r.events as EventType[] } : {}),
  }));
}
