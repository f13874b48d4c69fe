// Where an external program is on PATH, without running it (to say which Debian
// package is missing before anything starts).
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export function onPath(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}
