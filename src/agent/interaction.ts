// The person at the console, if any: attended-mode confirmations and the unattended
// abort countdown (Isar's installer.unattended.abort.*). Uses the agent's stdin only
// when it is a TTY; without one, nobody can answer.
import type { ReadStream } from 'node:tty';

export interface Interaction {
  /** True when there is a TTY to ask on. */
  readonly canAsk: boolean;
  confirm(question: string): Promise<boolean>;
  /** Resolves true if a key is pressed within `seconds`; calls onTick each second. */
  waitForKey(seconds: number, onTick: (secondsLeft: number) => void): Promise<boolean>;
}

export function ttyInteraction(input: NodeJS.ReadStream = process.stdin, output: NodeJS.WritableStream = process.stderr): Interaction {
  const tty = input.isTTY ? (input as ReadStream) : undefined;
  return {
    canAsk: !!tty,
    async confirm(question) {
      if (!tty) return false;
      output.write(`\n${question} [y/N] `);
      const line = await readLine(tty);
      return /^\s*y(es)?\s*$/i.test(line);
    },
    async waitForKey(seconds, onTick) {
      if (!tty || seconds <= 0) return false;
      return new Promise((resolve) => {
        let left = Math.ceil(seconds);
        tty.setRawMode(true);
        tty.resume();
        const done = (pressed: boolean) => {
          clearInterval(timer);
          tty.off('data', onData);
          tty.setRawMode(false);
          tty.pause();
          resolve(pressed);
        };
        const onData = () => done(true);
        tty.on('data', onData);
        onTick(left);
        const timer = setInterval(() => {
          left--;
          if (left <= 0) done(false);
          else onTick(left);
        }, 1000);
      });
    },
  };
}

function readLine(input: ReadStream): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    input.setEncoding('utf8');
    input.resume();
    const onData = (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      const cr = buf.indexOf('\r');
      const end = nl >= 0 ? nl : cr;
      if (end >= 0) {
        input.off('data', onData);
        input.pause();
        resolve(buf.slice(0, end));
      }
    };
    input.on('data', onData);
  });
}
