// `bootline lab sim`: option parsing only; the fleet is src/lab/fleet-sim.ts.
import type { Command } from 'commander';
import { runFleet } from '../lab/fleet-sim.ts';
import { wholeNumber } from './whole-number.ts';

export function registerLabSim(lab: Command): void {
  lab
    .command('sim')
    .description('run a fleet of simulated devices (real agents as processes, sparse files as disks) against a real line server')
    .option('--devices <n>', 'how many devices', '10')
    .option('--work <dir>', 'where the server data and the devices go (emptied first)', '/var/tmp/bootline-sim')
    .option('--image-mib <n>', 'size of the generated image, half of it mapped', '16')
    .option('--db <url>', 'a PostgreSQL URL for the server (default SQLite)')
    .option('--timeout <seconds>', 'give up after this long', '600')
    .addHelpText('after', '\nExit status: 0 when every device exited 0, holds the image byte for byte and the server recorded its run as succeeded; 1 otherwise.')
    .action(async (opts: { devices: string; work: string; imageMib: string; db?: string; timeout: string }) => {
      const devices = wholeNumber('--devices', opts.devices, 1, 2000);
      const imageMiB = wholeNumber('--image-mib', opts.imageMib, 2, 4096);
      const timeout = Number(opts.timeout);
      if (!Number.isInteger(timeout) || timeout < 10) throw new Error(`--timeout must be a whole number of seconds, at least 10, not ${opts.timeout}`);
      const r = await runFleet({ cli: process.argv[1]!, devices, work: opts.work, imageMiB, timeoutSeconds: timeout, ...(opts.db ? { db: opts.db } : {}) });
      process.exitCode = r.ok ? 0 : 1;
    });
}
