// A device's serial console is a log file QEMU appends to: waiting for a line is polling
// it, and following it is reading from where the last read stopped.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { sleep } from './processes.ts';

export class SerialTimeoutError extends Error {
  override name = 'SerialTimeoutError';
}

/**
 * Resolves with the first match of `pattern` in the log. Rejects after `timeoutMs`, or as
 * soon as `stillRunning()` says the guest is gone and the log has no match, with the
 * log's tail in the message.
 */
export async function waitForSerial(log: string, pattern: RegExp, timeoutMs: number, stillRunning: () => boolean = () => true): Promise<RegExpExecArray> {
  const until = Date.now() + timeoutMs;
  const re = new RegExp(pattern.source, pattern.flags.replace('g', ''));
  for (;;) {
    const running = stillRunning();
    const text = readText(log);
    const m = re.exec(text);
    if (m) return m;
    if (!running || Date.now() > until) {
      const why = running ? `within ${timeoutMs} ms` : 'before the guest stopped';
      const last = text.trimEnd().split('\n').slice(-20).join('\n');
      throw new SerialTimeoutError(`${pattern} did not appear on the serial console ${why} (${log}); last lines:\n${last}`);
    }
    await sleep(200);
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'latin1');
  } catch {
    return '';
  }
}

/** Reads what was appended to `file` since the last call, in whole lines. */
export class LogFollower {
  private offset = 0;
  private partial = '';
  constructor(private file: string) {}
  lines(): string[] {
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch {
      return [];
    }
    try {
      const size = fstatSync(fd).size;
      if (size <= this.offset) return [];
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const parts = (this.partial + buf.subarray(0, n).toString('latin1')).split(/\r?\n/);
      this.partial = parts.pop() ?? '';
      return parts;
    } finally {
      closeSync(fd);
    }
  }
}
