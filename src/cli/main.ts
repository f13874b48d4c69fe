// The `bootline` command: one program, one subcommand per file.
import { Command } from 'commander';
import { registerRun } from './run.ts';

declare const BOOTLINE_VERSION: string;
const version = typeof BOOTLINE_VERSION === 'string' ? BOOTLINE_VERSION : '0.0.0-dev';

const program = new Command('bootline')
  .description('Unattended device bootstrapping for manufacturing lines')
  .version(version)
  .showHelpAfterError();

registerRun(program, version);

program.parseAsync(process.argv).catch((e: unknown) => {
  process.stderr.write(`bootline: internal error: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 70;
});
