// Simulated devices for the dashboard's tests and benchmark: each enrolls with a real
// enrollment token and posts real events (the agent's vocabulary, run ids and sequence
// numbers) over HTTP to POST /api/v1/device/events, as the agent's http reporter does, and
// escrows recovery keys as the encrypt-disk task does (PUT /api/v1/device/recovery-keys/…).
import { Agent, request } from 'node:http';
import type { BootlineEvent, EventBody } from '../../src/events.ts';
import type { RecoveryKeyEscrow } from '../../src/api/recovery-key.ts';

export interface SimTask {
  name: string;
  effort: number;
}

function post(url: string, body: unknown, token: string | undefined, agent?: Agent, method = 'POST'): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      url,
      { method, agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(token ? { authorization: `Bearer ${token}` } : {}) } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

export class SimDevice {
  readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  deviceId = '';
  credential = '';
  runId = '';
  private seq = 0;
  private tasks: SimTask[] = [];
  private index = 0;

  constructor(
    readonly url: string,
    readonly serial: string,
    readonly mac: string,
  ) {}

  async enroll(token: string): Promise<void> {
    const r = await post(`${this.url}/api/v1/enroll`, { token, serial: this.serial, macs: [this.mac], hostname: this.serial.toLowerCase() }, undefined, this.agent);
    if (r.status !== 201) throw new Error(`enroll ${this.serial}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    const b = r.json as { deviceId: string; credential: string };
    this.deviceId = b.deviceId;
    this.credential = b.credential;
  }

  /** Posts events, stamping run id, seq and time (now, or `ts`). */
  async send(bodies: EventBody[], ts?: string): Promise<void> {
    const events = bodies.map((b) => ({ ...b, runId: this.runId, seq: this.seq++, ts: ts ?? new Date().toISOString() }) as BootlineEvent);
    const r = await post(`${this.url}/api/v1/device/events`, { events }, this.credential, this.agent);
    if (r.status !== 200) throw new Error(`events of ${this.serial}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  }

  private share(i: number): number {
    const total = this.tasks.reduce((s, t) => s + t.effort, 0);
    return (100 * (this.tasks[i]?.effort ?? 0)) / total;
  }

  /** Overall progress with task `i` at `taskProgress` percent (effort-weighted, as the agent computes it). */
  progressAt(i: number, taskProgress: number): number {
    let p = 0;
    for (let k = 0; k < i; k++) p += this.share(k);
    return Math.min(100, p + (this.share(i) * taskProgress) / 100);
  }

  async startRun(tasks: SimTask[], runId = `run-${this.serial}-${Date.now()}`): Promise<void> {
    this.runId = runId;
    this.seq = 0;
    this.tasks = tasks;
    this.index = 0;
    await this.send([
      {
        type: 'run-start', progress: 0, count: tasks.length, version: '0.1.0', hostname: this.serial.toLowerCase(), resumed: [],
        tasks: tasks.map((t, i) => ({ name: t.name, kind: 'builtin', effort: t.effort, share: this.share(i) })),
      },
    ]);
  }

  async startTask(i: number): Promise<void> {
    this.index = i;
    const t = this.tasks[i]!;
    await this.send([{ type: 'task-start', progress: this.progressAt(i, 0), task: t.name, index: i, count: this.tasks.length, attempt: 1, taskProgress: 0 }]);
  }

  /** A task-progress event (with bytes and rate, as deploy-image sends), optionally with a log line. */
  async progress(taskProgress: number, opts: { rate?: number; bytesTotal?: number; log?: string; ts?: string } = {}): Promise<void> {
    const i = this.index;
    const t = this.tasks[i]!;
    const total = opts.bytesTotal ?? 512 * 1024 * 1024;
    const bodies: EventBody[] = [
      {
        type: 'task-progress', progress: this.progressAt(i, taskProgress), task: t.name, index: i, count: this.tasks.length, taskProgress,
        bytesDone: Math.round((total * taskProgress) / 100), bytesTotal: total, rate: opts.rate ?? 150 * 1024 * 1024,
      },
    ];
    if (opts.log) bodies.push({ type: 'log', progress: this.progressAt(i, taskProgress), task: t.name, index: i, stream: 'stdout', level: 'info', message: opts.log });
    await this.send(bodies, opts.ts);
  }

  async endTask(status: 'ok' | 'failed', durationMs: number, message?: string): Promise<void> {
    const i = this.index;
    const t = this.tasks[i]!;
    await this.send([
      {
        type: 'task-end', progress: this.progressAt(i, status === 'ok' ? 100 : 0), task: t.name, index: i, count: this.tasks.length, status, attempt: 1, durationMs,
        taskProgress: status === 'ok' ? 100 : 0, optional: false, exitCode: status === 'ok' ? 0 : 1, ...(message ? { message } : {}),
      },
    ]);
  }

  async endRun(status: 'ok' | 'failed', message?: string): Promise<void> {
    const now = new Date().toISOString();
    const progress = status === 'ok' ? 100 : this.progressAt(this.index, 0);
    await this.send([
      {
        type: 'run-end', progress, status, durationMs: 1000, ...(message ? { message } : {}),
        report: {
          runId: this.runId, status, startedAt: now, endedAt: now, durationMs: 1000, progress, ...(message ? { message } : {}),
          tasks: this.tasks.map((t, i) => ({
            name: t.name, status: i < this.index || status === 'ok' ? 'ok' : i === this.index ? 'failed' : 'not-run', attempts: i <= this.index ? 1 : 0, durationMs: 100, optional: false,
            lastLines: [], ...(i === this.index && status === 'failed' && message ? { message } : {}),
          })),
        },
      },
    ]);
  }

  /** Escrows a recovery key for the current run. */
  async escrowRecoveryKey(escrow: Omit<RecoveryKeyEscrow, 'runId'>): Promise<void> {
    const r = await post(`${this.url}/api/v1/device/recovery-keys/${escrow.volumeUuid}`, { ...escrow, runId: this.runId }, this.credential, this.agent, 'PUT');
    if (r.status !== 204) throw new Error(`recovery key of ${this.serial}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A MAC from a number: 52:54:00:xx:xx:xx. */
export function simMac(n: number): string {
  const h = (v: number) => v.toString(16).padStart(2, '0');
  return `52:54:00:${h((n >> 16) & 255)}:${h((n >> 8) & 255)}:${h(n & 255)}`;
}
