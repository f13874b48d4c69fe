// QMP, QEMU's control protocol: JSON objects, one per line, over the device's unix socket.
// After the greeting the client must send qmp_capabilities; every command carries an id
// so that its answer is told apart from asynchronous events.
import { connect, type Socket } from 'node:net';

export class QmpError extends Error {
  override name = 'QmpError';
}

export type QmpMessage =
  | { kind: 'greeting'; version: unknown }
  | { kind: 'return'; id: string | undefined; value: unknown }
  | { kind: 'error'; id: string | undefined; errorClass: string; desc: string }
  | { kind: 'event'; event: string; data: unknown }
  | { kind: 'unknown'; raw: unknown };

export function encodeCommand(execute: string, args: Record<string, unknown> | undefined, id: string): string {
  return `${JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id })}\r\n`;
}

export function classifyMessage(obj: unknown): QmpMessage {
  if (typeof obj !== 'object' || obj === null) return { kind: 'unknown', raw: obj };
  const o = obj as Record<string, unknown>;
  const id = typeof o.id === 'string' ? o.id : undefined;
  if ('QMP' in o) return { kind: 'greeting', version: (o.QMP as Record<string, unknown> | null)?.version };
  if ('return' in o) return { kind: 'return', id, value: o.return };
  if ('error' in o) {
    const e = (o.error ?? {}) as Record<string, unknown>;
    return { kind: 'error', id, errorClass: String(e.class ?? 'GenericError'), desc: String(e.desc ?? '') };
  }
  if (typeof o.event === 'string') return { kind: 'event', event: o.event, data: o.data };
  return { kind: 'unknown', raw: obj };
}

/** Splits a byte stream into messages; keeps a partial line for the next chunk. */
export class QmpDecoder {
  private buf = '';
  push(chunk: string): QmpMessage[] {
    this.buf += chunk;
    const out: QmpMessage[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      try {
        out.push(classifyMessage(JSON.parse(line)));
      } catch {
        throw new QmpError(`QMP sent a line that is not JSON: ${line.slice(0, 200)}`);
      }
    }
    return out;
  }
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** A connected QMP session. */
export class QmpClient {
  private nextId = 1;
  private pending = new Map<string, Pending>();
  readonly events: { event: string; data: unknown }[] = [];
  private closedError: Error | undefined;

  private constructor(private socket: Socket) {}

  /** Connects, waits for the greeting and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = connect(path);
    socket.setEncoding('utf8');
    const decoder = new QmpDecoder();
    let client: QmpClient | undefined;
    const greeted = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new QmpError(`no QMP greeting on ${path} within ${timeoutMs} ms`)), timeoutMs);
      socket.on('error', (e) => {
        clearTimeout(timer);
        reject(new QmpError(`QMP socket ${path}: ${e.message}`));
        client?.fail(new QmpError(`QMP socket ${path}: ${e.message}`));
      });
      socket.on('close', () => {
        clearTimeout(timer);
        reject(new QmpError(`QMP socket ${path} closed before the greeting`));
        client?.fail(new QmpError(`QMP socket ${path} closed (QEMU exited?)`));
      });
      socket.on('data', (chunk: string) => {
        let msgs: QmpMessage[];
        try {
          msgs = decoder.push(chunk);
        } catch (e) {
          socket.destroy(e as Error);
          return;
        }
        for (const m of msgs) {
          if (m.kind === 'greeting' && !client) {
            clearTimeout(timer);
            client = new QmpClient(socket);
            resolve();
          } else client?.receive(m);
        }
      });
    });
    try {
      await greeted;
    } catch (e) {
      socket.destroy();
      throw e;
    }
    await client!.execute('qmp_capabilities');
    return client!;
  }

  private receive(m: QmpMessage): void {
    if (m.kind === 'event') this.events.push({ event: m.event, data: m.data });
    if ((m.kind === 'return' || m.kind === 'error') && m.id !== undefined) {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.kind === 'return') p.resolve(m.value);
      else p.reject(new QmpError(`QMP ${m.errorClass}: ${m.desc}`));
    }
  }

  private fail(e: Error): void {
    this.closedError ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `bl${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(encodeCommand(command, args, id));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** One command on a fresh connection (QEMU accepts one QMP client at a time per socket). */
export async function qmpOnce<T = unknown>(path: string, command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<T> {
  const c = await QmpClient.connect(path, timeoutMs);
  try {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new QmpError(`QMP ${command} on ${path}: no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([c.execute<T>(command, args), timeout]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    c.close();
  }
}
