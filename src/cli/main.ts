// The `bootline` command: one program, one subcommand per file.
import { Command } from 'commander';
import { registerRun } from './run.ts';
import { registerImage } from './image.ts';
import { registerServe } from './serve.ts';
import { registerLab } from './lab.ts';
import { registerSecureboot } from './secureboot.ts';

declare const BOOTLINE_VERSION: string;
const version = typeof BOOTLINE_VERSION === 'string' ? BOOTLINE_VERSION : '0.0.0-dev';

const program = new Command('bootline')
  .description('Unattended device bootstrapping for manufacturing lines')
  .version(version)
  .showHelpAfterError();

registerRun(program, version);
registerImage(program, version);
registerServe(program);
registerLab(program);
registerSecureboot(program);

// Errors meant for the user (bad input, a failed copy) print their message; programming
// errors print their stack, so that a bug report has it.
const BUGS = new Set(['TypeError', 'ReferenceError', 'RangeError', 'SyntaxError']);
program.parseAsync(process.argv).catch((e: unknown) => {
  const err = e instanceof Error ? e : new Error(String(e));
  if (BUGS.has(err.name) || process.env.BOOTLINE_DEBUG) {
    process.stderr.write(`bootline: internal error: ${err.stack ?? err.message}\n`);
    process.exitCode = 70;
  } else {
    process.stderr.write(`bootline: ${err.message}\n`);
    process.exitCode = 1;
  }
});
