// Shared test helpers: temp dirs that are removed, executable scripts.
import assert from 'node:assert/strict';
import { ConfigError } from '../src/config/layer.ts';
import { mkdtempSync, rmSync, writeFileSync, chmodSync, readFileSync, openSync, readSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
