// `bootline lab sim`: option parsing only; the fleet is src/lab/fleet-sim.ts.
import type { Command } from 'commander';
import { runFleet } from '../lab/fleet-sim.ts';
import { wholeNumber } from './whole-number.ts';
import { AGENT_NODE_OPTIONS } from '../agent/node-options.ts';

/** As on a device (node-options.ts): what lets 500 agents run on 24 GiB (docs/reliability.md). */
const DEFAULT_AGENT_NODE_OPTIONS = AGENT_NODE_OPTIONS.join(' ');

export function registerLabSim(lab: Command): void {
  lab
    .command('sim')
    .description('run a fleet of simulated devices (real agents as processes, sparse files as disks) against a real line server')
    .option('--devices <n>', 'how many devices (all started at once)', '10')
    .option('--work <dir>', 'where the server data and the devices go (emptied first)', '/var/tmp/bootline-sim')
    .option('--image-mib <n>', 'size of the generated image, half of it mapped', '16')
    .option('--db <url>', 'a PostgreSQL URL for the server, or auto-postgres for a throwaway PostgreSQL (Debian\'s postgresql package); default SQLite')
    .option('--servers <n>', 'server processes on the same PostgreSQL database; device i talks to server i mod n', '1')
    .option('--agent-node-options <options>', 'options for node in every agent process, space-separated ("" for node\'s defaults)', DEFAULT_AGENT_NODE_OPTIONS)
    .option('--timeout <seconds>', 'give up after this long', '600')
    .addHelpText(
      'after',
      '\nPrints the wall time, each server\'s peak memory (VmHWM), the machine\'s used memory (MemTotal - MemAvailable) before and at its peak, ' +
        'and event latency p50/p99: from the time an agent made an event to the time the server took the batch holding it.' +
        '\n\nExit status: 0 when every device exited 0, holds the image byte for byte and the server recorded its run as succeeded; 1 otherwise.',
    )
    .action(async (opts: { devices: string; work: string; imageMib: string; db?: string; servers: string; agentNodeOptions: string; timeout: string }) => {
      const devices = wholeNumber('--devices', opts.devices, 1, 2000);
      const imageMiB = wholeNumber('--image-mib', opts.imageMib, 2, 4096);
      const servers = wholeNumber('--servers', opts.servers, 1, 8);
      const timeout = Number(opts.timeout);
      if (!Number.isInteger(timeout) || timeout < 10) throw new Error(`--timeout must be a whole number of seconds, at least 10, not ${opts.timeout}`);
      if (servers > 1 && !opts.db) throw new Error(`--servers ${servers} needs PostgreSQL (--db postgres://… or --db auto-postgres): a SQLite database belongs to one server process`);
      const agentNodeArgs = opts.agentNodeOptions.split(' ').filter(Boolean);
      const bad = agentNodeArgs.find((a) => !a.startsWith('-'));
      if (bad) throw new Error(`--agent-node-options takes node options (each starting with -), not ${bad}`);
      const r = await runFleet({ cli: process.argv[1]!, devices, work: opts.work, imageMiB, timeoutSeconds: timeout, servers, agentNodeArgs, ...(opts.db ? { db: opts.db } : {}) });
      process.exitCode = r.ok ? 0 : 1;
    });
}
