// The psplash FIFO protocol, as spoken by bmaptool --psplash-pipe and psplash-write:
// commands `PROGRESS <0-100>` and `MSG <text>`, separated by NUL bytes or newlines.

export type PsplashCommand = { progress: number } | { message: string };

export function parsePsplashCommand(cmd: string): PsplashCommand | undefined {
  const m = /^\s*(PROGRESS|MSG)(?:\s+(.*?))?\s*$/i.exec(cmd);
  if (!m) return undefined;
  const arg = m[2] ?? '';
  if (m[1]!.toUpperCase() === 'MSG') return { message: arg };
  const n = Number(arg);
  return arg !== '' && Number.isFinite(n) ? { progress: Math.min(100, Math.max(0, n)) } : undefined;
}

/** Splits a byte stream into commands; keeps the unterminated tail for the next chunk. */
export class PsplashSplitter {
  private tail = '';
  push(chunk: string): string[] {
    const parts = (this.tail + chunk).split(/[\0\n]/);
    this.tail = parts.pop() ?? '';
    if (this.tail.length > 4096) this.tail = ''; // a writer that never ends a command
    return parts.filter((p) => p.trim() !== '');
  }
}
