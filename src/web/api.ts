// The management API as the dashboard calls it: the server's own record types, the admin
// credentials the operator logged in with on every call, errors as the server words them.
import type { Device, EnrollmentToken, Image, LineSnapshot, Plan, Rule, Run, SetupSnippets, StoredEvent } from '../api/admin.ts';
import type { EscrowedVolume, RevealedRecoveryKey } from '../api/recovery-key.ts';

export type Credentials = { kind: 'token'; token: string } | { kind: 'user'; user: string; password: string };

const KEY = 'bootline.credentials';

/** The session's credentials (sessionStorage: gone when the tab closes). */
export function loadCredentials(): Credentials | undefined {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Credentials) : undefined;
  } catch {
    return undefined;
  }
}
export function saveCredentials(c: Credentials | undefined): void {
  if (c) sessionStorage.setItem(KEY, JSON.stringify(c));
  else sessionStorage.removeItem(KEY);
}

export function authHeader(c: Credentials): string {
  if (c.kind === 'token') return `Bearer ${c.token}`;
  const bytes = new TextEncoder().encode(`${c.user}:${c.password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface TokenCreated extends EnrollmentToken {
  token: string;
}
export type ExportRow = Record<string, string>;

export class Api {
  constructor(
    readonly credentials: Credentials,
    /** Called when the server refuses the credentials (expired user, revoked token). */
    private readonly onUnauthorized: () => void = () => undefined,
  ) {}

  async request(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { authorization: authHeader(this.credentials) };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`/api/v1${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    if (res.ok) return res;
    let code = 'http-error';
    let message = `${method} ${path}: HTTP ${res.status}`;
    try {
      const e = (await res.json()) as { error?: string; message?: string };
      code = e.error ?? code;
      message = e.message ?? message;
    } catch {
      // not JSON: keep the status line
    }
    if (res.status === 401) this.onUnauthorized();
    throw new ApiError(res.status, code, message);
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body);
    return res.status === 204 ? (undefined as T) : ((await res.json()) as T);
  }

  line = () => this.json<LineSnapshot>('GET', '/line');
  counts = () => this.json<Record<string, number>>('GET', '/devices/counts');
  device = (id: string) => this.json<Device>('GET', `/devices/${encodeURIComponent(id)}`);
  runs = (deviceId: string) => this.json<Run[]>('GET', `/devices/${encodeURIComponent(deviceId)}/runs`);
  events = (runId: string, after = -1, limit = 1000) => this.json<StoredEvent[]>('GET', `/runs/${encodeURIComponent(runId)}/events?after=${after}&limit=${limit}`);
  recoveryKeys = (id: string) => this.json<EscrowedVolume[]>('GET', `/devices/${encodeURIComponent(id)}/recovery-keys`);
  revealRecoveryKey = (id: string, volumeUuid: string) =>
    this.json<RevealedRecoveryKey>('POST', `/devices/${encodeURIComponent(id)}/recovery-keys/${encodeURIComponent(volumeUuid)}/reveal`);
  reprovision = (id: string) => this.json<void>('POST', `/devices/${encodeURIComponent(id)}/reprovision`);
  plans = () => this.json<Plan[]>('GET', '/plans');
  putPlan = (name: string, body: { description?: string; config: Record<string, unknown> }) => this.json<Plan>('PUT', `/plans/${encodeURIComponent(name)}`, body);
  deletePlan = (name: string) => this.json<void>('DELETE', `/plans/${encodeURIComponent(name)}`);
  rules = () => this.json<Rule[]>('GET', '/rules');
  addRule = (r: Rule) => this.json<Rule>('POST', '/rules', r);
  deleteRule = (id: number) => this.json<void>('DELETE', `/rules/${id}`);
  images = () => this.json<Image[]>('GET', '/images');
  tokens = () => this.json<EnrollmentToken[]>('GET', '/tokens');
  createToken = (label: string, expiresInSeconds?: number) => this.json<TokenCreated>('POST', '/tokens', { label, ...(expiresInSeconds ? { expiresInSeconds } : {}) });
  revokeToken = (id: string) => this.json<void>('DELETE', `/tokens/${encodeURIComponent(id)}`);
  setup = () => this.json<SetupSnippets>('GET', '/setup');

  /** Every event of a run, paged. */
  async allEvents(runId: string): Promise<StoredEvent[]> {
    const all: StoredEvent[] = [];
    for (;;) {
      const page = await this.events(runId, all.length ? all[all.length - 1]!.seq : -1, 1000);
      all.push(...page);
      if (page.length < 1000) return all;
    }
  }

  /** Fetches a file with the credentials and hands it to the browser as a download. */
  async download(path: string, fallbackName: string): Promise<void> {
    const res = await this.request('GET', path);
    const disposition = res.headers.get('content-disposition') ?? '';
    const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
    const blob = await res.blob();
    const url = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}
