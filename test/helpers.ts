// Shared test helpers: temp dirs that are removed, executable scripts.
import assert from 'node:assert/strict';
import { ConfigError } from '../src/config/layer.ts';
import { mkdtempSync, rmSync, writeFileSync, chmodSync, readFileSync, readdirSync, openSync, readSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { after } from 'node:test';

/** A temp dir removed when the test file finishes. */
export function tempDir(prefix = 'bootline-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes an executable shell script. */
export function script(dir: string, name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

/** True while `pid` is a live process (a zombie waiting to be reaped counts as gone). */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The error of class `cls` that `fn` throws; fails the test if it throws nothing or something else. */
export function thrown<E extends Error>(cls: abstract new (...args: never[]) => E, fn: () => unknown): E {
  try {
    fn();
  } catch (e) {
    if (e instanceof cls) return e;
    throw e;
  }
  assert.fail(`expected a ${cls.name}`);
}

/** The ConfigError `fn` throws. */
export const configErrorOf = (fn: () => unknown): ConfigError => thrown(ConfigError, fn);

/** bmaptool's own test image and its bmaps (1.2 to 2.0). */
export const BMAPTOOL_FIXTURES = join(import.meta.dirname, 'fixtures', 'bmaptool');

/** The first `size` bytes of a device or file, read with plain positional reads. */
export function readDevice(dev: string, size: number): Buffer {
  const buf = Buffer.alloc(size);
  const fd = openSync(dev, 'r');
  try {
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
  } finally {
    closeSync(fd);
  }
  return buf;
}

let loopFiles = 0;

/** A loop device over a new file in `dir` of `size` bytes of `fill`, detached by name afterwards. */
export async function withLoop<T>(dir: string, size: number, fn: (dev: string) => Promise<T>, fill = 0xaa): Promise<T> {
  const backing = join(dir, `loop-${loopFiles++}.img`);
  writeFileSync(backing, Buffer.alloc(size, fill));
  const dev = execFileSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' }).trim();
  try {
    return await fn(dev);
  } finally {
    execFileSync('losetup', ['-d', dev]);
  }
}

/**
 * Fails if a loop device over a file in `dir` is still attached. By backing file, not by
 * name: another test file running meanwhile may reuse a freed /dev/loopN.
 */
export function assertNoLoopLeft(dir: string): void {
  const left = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
  assert.ok(!left.includes(dir), `a loop device over ${dir} is still attached:\n${left}`);
}

/** Processes this test process started that still run (not zombies) and whose name matches `name`: "<pid> <name>". */
export function runningChildren(name: RegExp): string[] {
  return readdirSync('/proc')
    .filter((d) => /^[0-9]+$/.test(d))
    .flatMap((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        return fields[1] === String(process.pid) && fields[0] !== 'Z' && name.test(comm) ? [`${pid} ${comm}`] : [];
      } catch {
        return [];
      }
    });
}
