// `bootline lab demo` refuses bad options before it builds or starts anything.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'bootline.mjs');

it('lab demo refuses a bad device count or timeout, naming the option, and makes nothing', () => {
  const work = join(tempDir('bootline-demo-cli-'), 'work');
  for (const [args, why] of [
    [['--devices', '0'], /--devices must be 1 to 8, not 0/],
    [['--devices', 'two'], /--devices must be 1 to 8, not two/],
    [['--timeout', 'abc'], /--timeout must be a whole number of seconds, at least 60, not abc/],
  ] as const) {
    const r = spawnSync(process.execPath, [CLI, 'lab', 'demo', '--work', work, ...args], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, why);
    assert.ok(!existsSync(work), 'nothing was made');
  }
});
