// `bootline lab demo`: option parsing only; the demo is src/lab/demo.ts.
import type { Command } from 'commander';
import { runDemo } from '../lab/demo.ts';

export function registerLabDemo(lab: Command): void {
  lab
    .command('demo')
    .description('build the installer and a sample image, start a line server, and bootstrap virtual devices end to end')
    .option('--devices <n>', 'how many virtual devices', '2')
    .option('--work <dir>', 'where the server data, consoles and logs go', '/var/tmp/bootline-demo')
    .option('--cache <dir>', 'Debian package cache (default /var/cache/bootline-lab)')
    .option('--timeout <seconds>', 'give up after this long (TCG is slow)', '1800')
    .addHelpText('after', '\nExit status: 0 when every device was bootstrapped and booted its new disk, 1 otherwise.')
    .action(async (opts: { devices: string; work: string; cache?: string; timeout: string }) => {
      const devices = Number(opts.devices);
      if (!Number.isInteger(devices) || devices < 1 || devices > 8) throw new Error(`--devices must be 1 to 8, not ${opts.devices}`);
      const timeout = Number(opts.timeout);
      if (!Number.isInteger(timeout) || timeout < 60) throw new Error(`--timeout must be a whole number of seconds, at least 60, not ${opts.timeout}`);
      const r = await runDemo({ cli: process.argv[1]!, devices, work: opts.work, ...(opts.cache ? { cache: opts.cache } : {}), timeoutSeconds: timeout });
      process.exitCode = r.ok ? 0 : 1;
    });
}
