// The CLI as a user meets it: --version/-V, a manual-page --help on every subcommand
// (walked from the help itself), completion scripts for bash (run in a real bash), zsh and
// fish, and subcommand options that are not swallowed by the program's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');
const VERSION = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')).version as string;
const bootline = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('bootline --version and -V print the version and exit 0', () => {
  for (const flag of ['--version', '-V']) {
    const r = bootline(flag);
    assert.equal(r.status, 0);
    assert.equal(r.stdout, `${VERSION}\n`);
  }
});

test('every subcommand has a manual-page --help: NAME, SYNOPSIS with its full name, OPTIONS; groups list their COMMANDS', () => {
  const seen: string[] = [];
  const walk = (path: string[]) => {
    const r = bootline(...path, '--help');
    assert.equal(r.status, 0, `${path.join(' ')} --help: ${r.stderr}`);
    const full = ['bootline', ...path].join(' ');
    assert.match(r.stdout, new RegExp(`^NAME\\n {7}${full} - \\S`), full);
    assert.match(r.stdout, new RegExp(`\\nSYNOPSIS\\n {7}${full} `), full);
    assert.match(r.stdout, /\nOPTIONS\n {7}/, full);
    seen.push(full);
    const commands = /\nCOMMANDS\n((?: {7}.*\n| {11}.*\n)+)/.exec(r.stdout)?.[1] ?? '';
    for (const m of commands.matchAll(/^ {7}(\S+)/gm)) if (m[1] !== 'help') walk([...path, m[1]!]);
  };
  walk([]);
  for (const c of ['bootline run', 'bootline image copy', 'bootline image add', 'bootline serve', 'bootline lab up', 'bootline lab demo', 'bootline completion'])
    assert.ok(seen.includes(c), `${c} in ${seen.join(', ')}`);
  assert.match(bootline('image', 'copy', '--help').stdout, /\nEXAMPLES\n {7}Stream a compressed image/);
});

test('subcommand options still work under the program --version: image add --image-version registers the version', () => {
  const dir = tempDir();
  const img = join(dir, 'product.img');
  writeFileSync(img, Buffer.alloc(64 * 1024, 1));
  const r = bootline('image', 'add', '--data', join(dir, 'data'), '--name', 'product', '--image-version', '1.4.2', img);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /product/);
  assert.match(r.stdout + readFileSync(join(dir, 'data', 'bootline.db')).toString('latin1'), /1\.4\.2/);
  // --version after a subcommand is still the program's (commander reads it first): said plainly.
  assert.equal(bootline('image', 'copy', '-V').stdout, `${VERSION}\n`);
});

test('bash completion, generated from the command tree, completes subcommands and their options in a real bash', () => {
  const dir = tempDir();
  const script = join(dir, 'bootline.bash');
  writeFileSync(script, execFileSync(process.execPath, [CLI, 'completion', 'bash'], { encoding: 'utf8' }));
  const complete = (line: string) => {
    const words = line.split(' ');
    const out = execFileSync('bash', ['-c', `source "$0"; COMP_WORDS=(${words.map((w) => `"${w}"`).join(' ')}); COMP_CWORD=${words.length - 1}; _bootline; printf '%s\\n' "\${COMPREPLY[@]}"`, script], { encoding: 'utf8' });
    return out.split('\n').filter(Boolean).sort();
  };
  assert.deepEqual(complete('bootline '), ['--help', '-h', '--version', '-V', 'completion', 'image', 'lab', 'run', 'secureboot', 'serve'].sort());
  assert.deepEqual(complete('bootline image co'), ['copy']);
  assert.deepEqual(complete('bootline image copy --bm'), ['--bmap', '--bmap-sig']);
  assert.deepEqual(complete('bootline lab '), complete('bootline lab ').filter((w) => ['build-installer', 'up', 'down', 'status', 'demo', 'sim', 'power-loss', 'server-crash'].includes(w) || w.startsWith('-')));
  assert.ok(complete('bootline lab ').includes('build-installer'));
  // After an option that takes a value, the shell's own (file) completion takes over.
  assert.deepEqual(complete('bootline run --config '), []);
});

test('zsh and fish scripts name every subcommand and option; an unknown shell is refused with the choices', () => {
  const zsh = bootline('completion', 'zsh');
  assert.equal(zsh.status, 0);
  assert.match(zsh.stdout, /^#compdef bootline\n/);
  assert.match(zsh.stdout, /bashcompinit/);
  const fish = bootline('completion', 'fish').stdout;
  assert.match(fish, /^complete -c bootline -n '__fish_seen_subcommand_from image; and __fish_seen_subcommand_from copy' -l bmap -r -F -d 'block map/m);
  assert.match(fish, /^complete -c bootline -n '__fish_use_subcommand' -a 'serve' -d /m);
  for (const [shell, text] of [['zsh', zsh.stdout], ['fish', fish]] as const) {
    const check = spawnSync(shell, ['-n'], { input: text, encoding: 'utf8' });
    if (!check.error) assert.equal(check.status, 0, `${shell} -n: ${check.stderr}`);
  }
  const bad = bootline('completion', 'tcsh');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /unknown shell "tcsh": give one of bash, zsh, fish/);
});
