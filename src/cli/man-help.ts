// `--help` in the shape of a manual page (NAME, SYNOPSIS, DESCRIPTION, ARGUMENTS, OPTIONS,
// COMMANDS, EXAMPLES), for every subcommand, from the commander tree itself: the options
// and arguments are the ones the parser knows, so the help cannot drift from them.
import type { Command, Help } from 'commander';
import { EXAMPLES } from './examples.ts';

/** "bootline image copy": the command's full name. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

function section(title: string, lines: string[]): string {
  return lines.length === 0 ? '' : `${title}\n${lines.join('\n')}\n\n`;
}

/** Words of `text` in lines of at most `width` columns, each indented by `at`. */
export function wrapText(text: string, width: number, at: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && at + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines.map((l) => `${' '.repeat(at)}${l}`);
}

function formatManHelp(cmd: Command, helper: Help): string {
  const width = Math.min(helper.helpWidth ?? 80, 100);
  const indent = 7;
  const wrap = (text: string, at = indent) => wrapText(text, width, at);
  const items = (rows: [string, string][]) => {
    const out: string[] = [];
    for (const [term, desc] of rows) {
      out.push(`${' '.repeat(indent)}${term}`);
      if (desc) out.push(...wrap(desc, indent + 4));
    }
    return out;
  };
  const path = commandPath(cmd);
  const summary = cmd.summary() || cmd.description().split('\n')[0] || '';
  let text = section('NAME', [`${' '.repeat(indent)}${path}${summary ? ` - ${summary}` : ''}`]);
  text += section('SYNOPSIS', [`${' '.repeat(indent)}${helper.commandUsage(cmd)}`]);
  const description = helper.commandDescription(cmd);
  if (description && description !== summary) text += section('DESCRIPTION', description.split('\n').flatMap((p) => wrap(p)));
  text += section('ARGUMENTS', items(helper.visibleArguments(cmd).map((a) => [helper.argumentTerm(a), helper.argumentDescription(a)])));
  text += section('OPTIONS', items(helper.visibleOptions(cmd).map((o) => [helper.optionTerm(o), helper.optionDescription(o)])));
  const global = helper.visibleGlobalOptions(cmd);
  if (global.length > 0) text += section('GLOBAL OPTIONS', items(global.map((o) => [helper.optionTerm(o), helper.optionDescription(o)])));
  text += section('COMMANDS', items(helper.visibleCommands(cmd).map((c) => [helper.subcommandTerm(c), helper.subcommandDescription(c)])));
  const examples = EXAMPLES[path];
  if (examples) text += section('EXAMPLES', examples.flatMap(([what, line]) => [...wrap(`${what}:`), `${' '.repeat(indent + 4)}${line}`, '']).slice(0, -1));
  if (helper.visibleCommands(cmd).length > 0) text += section('SEE ALSO', [`${' '.repeat(indent)}${path} <command> --help; ${path.split(' ')[0]} completion bash|zsh|fish`]);
  return text.replace(/\n+$/, '\n');
}

/** Gives `cmd` and every subcommand under it the manual-page help. */
export function useManHelp(cmd: Command): void {
  cmd.configureHelp({ formatHelp: formatManHelp, showGlobalOptions: false });
  for (const c of cmd.commands) useManHelp(c);
}
