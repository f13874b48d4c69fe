// `bootline lab power-loss` and `bootline lab server-crash`: option parsing only; the trials
// are src/lab/power-loss.ts and src/lab/server-crash.ts.
import type { Command } from 'commander';
import { runPowerLoss } from '../lab/power-loss.ts';
import { runServerCrash } from '../lab/server-crash.ts';
import { wholeNumber as whole } from './whole-number.ts';

export function registerLabPowerLoss(lab: Command): void {
  lab
    .command('power-loss')
    .description('cut the power of a real agent (kill -9 of it and everything it started) at seeded random moments of its pipeline, restart it, and compare the device with a clean run')
    .option('--trials <n>', 'how many trials', '50')
    .option('--seed <n>', 'seed of the cut moments (printed per trial, so that one can be replayed)', '1')
    .option('--work <dir>', 'where the server data and the devices go (emptied first)', '/var/tmp/bootline-power-loss')
    .option('--image-mib <n>', 'size of the generated image, half of it mapped', '8')
    .addHelpText('after', '\nExit status: 0 when every trial ended identical to the clean run (same disk bytes, no finished task run again, each run-once task ended once, the server records the same tasks); 1 otherwise.')
    .action(async (opts: { trials: string; seed: string; work: string; imageMib: string }) => {
      const trials = whole('--trials', opts.trials, 1, 10_000);
      const seed = whole('--seed', opts.seed, 0, 0xffffffff);
      const imageMiB = whole('--image-mib', opts.imageMib, 2, 4096);
      const r = await runPowerLoss({ cli: process.argv[1]!, trials, seed, work: opts.work, imageMiB });
      process.exitCode = r.ok ? 0 : 1;
    });

  lab
    .command('server-crash')
    .description('kill -9 the line server several times while a fleet of real agents runs, restart it on the same data and port, and check that every event was stored exactly once')
    .option('--devices <n>', 'how many devices', '200')
    .option('--kills <n>', 'how often the server is killed', '5')
    .option('--seed <n>', 'seed of the kill moments and downtimes', '1')
    .option('--work <dir>', 'where the server data and the devices go (emptied first)', '/var/tmp/bootline-server-crash')
    .option('--image-mib <n>', 'size of the generated image, half of it mapped', '8')
    .option('--db <url>', 'a PostgreSQL URL for the server, or auto-postgres for a throwaway PostgreSQL; default SQLite')
    .addHelpText('after', '\nExit status: 0 when every kill fell during the run, every agent exited 0 with its image on disk, the server stored each of its events exactly once and recorded each run as it ended; 1 otherwise.')
    .action(async (opts: { devices: string; kills: string; seed: string; work: string; imageMib: string; db?: string }) => {
      const devices = whole('--devices', opts.devices, 1, 2000);
      const kills = whole('--kills', opts.kills, 0, 100);
      const seed = whole('--seed', opts.seed, 0, 0xffffffff);
      const imageMiB = whole('--image-mib', opts.imageMib, 2, 4096);
      const r = await runServerCrash({ cli: process.argv[1]!, devices, kills, seed, work: opts.work, imageMiB, ...(opts.db ? { db: opts.db } : {}) });
      process.exitCode = r.ok ? 0 : 1;
    });
}
