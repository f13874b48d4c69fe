// The kernel modules of the initramfs, from Debian's unpacked kernel package. The package
// ships no modules.dep (its maintainer script runs depmod on install): depmod makes it once
// in the cache; then the selected modules are copied to a work dir and depmod indexes that
// small tree, so that modprobe in the installer (and the kernel's own module requests)
// find them.
import { execFile as execFileCb } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { DebianKernel } from '../debian-packages.ts';
import { onPath } from '../../which.ts';
import { moduleName, parseBuiltin, parseModulesDep, selectModules, type ModuleSelection } from './modules.ts';

const execFile = promisify(execFileCb);

export interface PreparedModules {
  selection: ModuleSelection;
  /** Path in the initramfs -> file to read it from. */
  files: Map<string, string>;
  /** Module names for /init to load (the requested ones that are not built in). */
  load: string[];
}

async function depmod(base: string, release: string): Promise<void> {
  const tool = onPath('depmod') ?? ['/usr/sbin/depmod', '/sbin/depmod'].find((p) => existsSync(p));
  if (!tool) throw new Error('depmod is not installed: the installer build indexes the kernel modules with it; install the Debian package kmod (apt-get install kmod)');
  await execFile(tool, ['-b', base, release]);
}

export async function prepareModules(kernel: DebianKernel, wanted: readonly string[], workDir: string): Promise<PreparedModules> {
  const dir = kernel.modules;
  if (!existsSync(join(dir, 'modules.dep'))) await depmod(kernel.package.root, kernel.release);
  const selection = selectModules(wanted, parseModulesDep(readFileSync(join(dir, 'modules.dep'), 'utf8')), parseBuiltin(readFileSync(join(dir, 'modules.builtin'), 'utf8')));
  if (selection.missing.length > 0)
    throw new Error(`kernel ${kernel.release} has no module ${selection.missing.join(', ')} (neither built in nor in ${dir}): check the name (--module) against modules.builtin and the .ko files there`);

  // A small module tree for depmod: the selected modules and the kernel's lists.
  const base = join(workDir, 'modules');
  const tree = join(base, 'lib', 'modules', kernel.release);
  for (const f of selection.files) {
    mkdirSync(dirname(join(tree, f)), { recursive: true });
    copyFileSync(join(dir, f), join(tree, f));
  }
  const selected = new Set(selection.files);
  const order = readFileSync(join(dir, 'modules.order'), 'utf8').split('\n').filter((l) => selected.has(l));
  writeFileSync(join(tree, 'modules.order'), order.map((l) => `${l}\n`).join(''));
  for (const f of ['modules.builtin', 'modules.builtin.modinfo']) copyFileSync(join(dir, f), join(tree, f));
  await depmod(base, kernel.release);

  const files = new Map<string, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(tree, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${name.name}` : name.name;
      if (name.isDirectory()) walk(r);
      else files.set(`usr/lib/modules/${kernel.release}/${r}`, join(tree, r));
    }
  };
  walk('');
  // efivarfs only loads on UEFI: /init loads it when it sees /sys/firmware/efi.
  const load = [...new Set(wanted.map(moduleName))].filter((m) => !selection.builtin.includes(m) && m !== 'efivarfs');
  return { selection, files, load };
}
