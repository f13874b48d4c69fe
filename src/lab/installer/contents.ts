// What goes into the initramfs: the packages' trees, busybox's applets where no package
// has the tool, the kernel modules, node (from the build host) with the agent, /init and
// the few files of /etc an installed system would have made in its maintainer scripts.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { UnpackedPackage } from '../debian-packages.ts';
import { FileTree, mergedPath } from './tree.ts';
import { INSTALLER_PACKAGE_FILES } from './packages.ts';
import { INIT_PATHS, agentWrapper, initScript, powerWrapper, udhcpcScript } from './init-script.ts';

export interface ContentInputs {
  packages: UnpackedPackage[];
  /** The kernel's module files to ship: path in the initramfs -> source file. */
  modules: { files: Map<string, string>; load: string[] };
  /** The node binary (possibly a stripped copy of the build host's). */
  node: string;
  agent: string;
}

/** The tree of the initramfs, without /etc/bootline/installer.json (packed separately). */
export function assembleContents(i: ContentInputs): FileTree {
  const tree = new FileTree();
  for (const d of ['dev', 'proc', 'sys', 'run', 'root', 'install', 'mnt', 'var/lib/bootline', 'etc/bootline']) tree.dir(d);
  tree.dir('tmp', 0o1777);
  tree.dir('root', 0o700);
  // The kernel opens /dev/console for init before anything is mounted.
  tree.set('dev/console', { kind: 'chardev', mode: 0o600, major: 5, minor: 1 });

  for (const p of i.packages) {
    const only = INSTALLER_PACKAGE_FILES[p.name];
    if (only) {
      tree.addFiles(p.root, only.files, `${p.name} ${p.version}`);
      continue;
    }
    // ca-certificates ships single certificates; its maintainer script makes the bundle (below).
    tree.addTree(p.root, `${p.name} ${p.version}`, (path) => !path.startsWith('usr/share/ca-certificates/'));
  }
  const busybox = i.packages.find((p) => p.name === 'busybox-static');
  if (busybox) addBusyboxApplets(tree, join(busybox.root, 'bin', 'busybox'));
  const ca = i.packages.find((p) => p.name === 'ca-certificates');
  if (ca) tree.data('etc/ssl/certs/ca-certificates.crt', caBundle(join(ca.root, 'usr/share/ca-certificates')));

  for (const [path, source] of [...i.modules.files].sort()) tree.set(path, { kind: 'file', mode: 0o644, source, size: statSync(source).size, origin: 'kernel' });
  tree.data(INIT_PATHS.modules, i.modules.load.join('\n') + '\n');

  tree.set('usr/bin/node', { kind: 'file', mode: 0o755, source: i.node, size: statSync(i.node).size, origin: 'build host' });
  tree.set(INIT_PATHS.agent, { kind: 'file', mode: 0o644, source: i.agent, size: statSync(i.agent).size, origin: 'bootline' });
  tree.data(INIT_PATHS.wrapper, agentWrapper(), 0o755);
  tree.data('init', initScript(), 0o755);
  tree.data(INIT_PATHS.udhcpcScript, udhcpcScript(), 0o755);
  for (const a of ['reboot', 'poweroff', 'halt'] as const) tree.data(`usr/sbin/${a}`, powerWrapper(a), 0o755);

  tree.data('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  tree.data('etc/group', 'root:x:0:\n');
  tree.data('etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
  tree.data('etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\n');
  tree.data('etc/os-release', 'NAME="bootline installer"\nID=bootline-installer\nID_LIKE=debian\n');
  return tree;
}

/** Symlinks for busybox's applets, where no package provides a program of that name. */
function addBusyboxApplets(tree: FileTree, busybox: string): void {
  tree.set('usr/bin/busybox', { kind: 'file', mode: 0o755, source: busybox, size: statSync(busybox).size, origin: 'busybox-static' });
  // The static busybox runs on the build host too: ask it for its applets' paths.
  const applets = execFileSync(busybox, ['--list-full'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
  for (const applet of applets) {
    const name = applet.split('/').pop()!;
    if (!applet.includes('/') || ['usr/bin', 'usr/sbin'].some((d) => tree.entries.has(`${d}/${name}`))) continue;
    tree.set(mergedPath(applet), { kind: 'symlink', target: '/usr/bin/busybox' });
  }
}

/** What update-ca-certificates would make: every certificate, concatenated in name order. */
function caBundle(dir: string): Buffer {
  const certs: Buffer[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.crt')) certs.push(readFileSync(p));
    }
  };
  walk(dir);
  return Buffer.concat(certs);
}
