// `bootline run`: option parsing only; the agent lives in src/agent/.
import type { Command } from 'commander';
import { runAgent, DEFAULT_STATE_DIR } from '../agent/agent.ts';
import { DEFAULT_CONFIG, DEFAULT_CMDLINE, DEFAULT_AUTO_INSTALL } from '../config/load.ts';

export function registerRun(program: Command, version: string): void {
  program
    .command('run')
    .description('run the bootstrapping pipeline on this device (the agent)')
    .option('-c, --config <path|url>', `config file: YAML, JSON or Isar .conf lines (default ${DEFAULT_CONFIG}, or bootline.config= on the kernel command line)`)
    .option('--cmdline <file>', `read the kernel command line from this file instead of ${DEFAULT_CMDLINE}`)
    .option('--auto-install <file>', `Isar's auto.install file (default ${DEFAULT_AUTO_INSTALL} if it exists)`)
    .option('--state-dir <dir>', `journal, report and logs (default ${DEFAULT_STATE_DIR})`)
    .option('--fresh', "ignore the journal (and the server's record of an interrupted run): run every task again")
    .option('--dry-run', 'print the resolved plan and where each setting came from; run nothing')
    .option('--events <file>', 'also write every event as one JSON object per line to this file')
    .option('--unattended', 'run without asking (same as unattended: true)')
    .option('--device-id <id>', 'identify this device in events and reports')
    .addHelpText(
      'after',
      '\nWith bootline.server=<url> bootline.token=<enrollment token> on the kernel command line the agent enrolls\n' +
        'with the server (credential kept in <state-dir>/device.json), runs the plan the server gives it and reports to it.\n' +
        '\nExit status: 0 all tasks succeeded (or the server has nothing to do), 1 a task failed, 2 config error or\n' +
        'server refused/unreachable (nothing ran), 3 stopped by a signal.',
    )
    .action(async (opts: Record<string, string | boolean | undefined>) => {
      process.exitCode = await runAgent({
        version,
        config: opts.config as string | undefined,
        cmdline: opts.cmdline as string | undefined,
        autoInstall: opts.autoInstall as string | undefined,
        stateDir: opts.stateDir as string | undefined,
        fresh: opts.fresh === true,
        dryRun: opts.dryRun === true,
        events: opts.events as string | undefined,
        unattended: opts.unattended === true ? true : undefined,
        deviceId: opts.deviceId as string | undefined,
      });
    });
}
