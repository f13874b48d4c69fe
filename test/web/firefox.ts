// Debian's Firefox ESR driven over WebDriver BiDi (the W3C protocol Firefox speaks itself):
// playwright-core 1.65 drives only its own patched Firefox builds, which this machine cannot
// download, and its BiDi mode needs commands ESR lacks. The few commands a test needs:
// open a page, run a script in it, wait for a condition.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

export const FIREFOX = process.env.BOOTLINE_FIREFOX ?? '/usr/bin/firefox-esr';

export interface FirefoxPage {
  version: string;
  goto(url: string): Promise<void>;
  /** Evaluates `expression` (awaited if it is a promise) in the page; returns its JSON value. */
  evaluate<T>(expression: string): Promise<T>;
  /** Polls `expression` until it is truthy; rejects after `ms` with `what`. */
  waitFor(expression: string, what: string, ms?: number): Promise<void>;
  close(): Promise<void>;
}

type Reply = { id?: number; type: string; result?: Record<string, unknown>; error?: string; message?: string };

export async function launchFirefox(): Promise<FirefoxPage> {
  if (!existsSync(FIREFOX)) throw new Error(`${FIREFOX} not found: install Debian's firefox-esr package (scripts/setup.sh does), or set BOOTLINE_FIREFOX`);
  const profile = mkdtempSync(join(tmpdir(), 'bootline-firefox-'));
  // No first-run pages, updates or telemetry: the machine's network is closed.
  writeFileSync(
    join(profile, 'user.js'),
    ['browser.shell.checkDefaultBrowser', 'datareporting.policy.dataSubmissionEnabled', 'toolkit.telemetry.enabled', 'app.update.enabled', 'browser.startup.homepage_override.mstone']
      .map((k) => `user_pref("${k}", ${k.endsWith('mstone') ? '"ignore"' : 'false'});`)
      .join('\n'),
  );
  const child: ChildProcess = spawn(FIREFOX, ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port', '0', 'about:blank'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, HOME: profile, MOZ_CRASHREPORTER_DISABLE: '1' },
  });
  const kill = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(profile, { recursive: true, force: true });
  };
  const endpoint = await new Promise<string>((resolve, reject) => {
    let said = '';
    const timer = setTimeout(() => reject(new Error(`Firefox did not start its WebDriver BiDi server within 60 s:\n${said}`)), 60_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      said += d;
      const m = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(said);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`Firefox exited (${code}) before it listened:\n${said}`)));
  }).catch((e: unknown) => {
    kill();
    throw e;
  });

  const ws = new WebSocket(`${endpoint}/session`);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  let next = 1;
  const waiting = new Map<number, (r: Reply) => void>();
  ws.on('message', (data) => {
    const r = JSON.parse(String(data)) as Reply;
    if (r.id !== undefined) waiting.get(r.id)?.(r);
  });
  const send = (method: string, params: Record<string, unknown>): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const id = next++;
      waiting.set(id, (r) => {
        waiting.delete(id);
        if (r.type === 'error') reject(new Error(`${method}: ${r.error}: ${r.message}`));
        else resolve(r.result ?? {});
      });
      ws.send(JSON.stringify({ id, method, params }));
    });

  const session = await send('session.new', { capabilities: {} });
  const version = String((session.capabilities as { browserVersion?: string })?.browserVersion ?? '?');
  const tree = (await send('browsingContext.getTree', {})) as { contexts: { context: string }[] };
  const context = tree.contexts[0]!.context;

  const evaluate = async <T>(expression: string): Promise<T> => {
    const r = (await send('script.evaluate', { expression, target: { context }, awaitPromise: true, serializationOptions: { maxObjectDepth: 4 } })) as {
      type: string;
      result?: unknown;
      exceptionDetails?: { text?: string };
    };
    if (r.type === 'exception') throw new Error(`in Firefox: ${r.exceptionDetails?.text ?? 'an exception'} (evaluating ${expression.slice(0, 120)})`);
    return fromRemote(r.result) as T;
  };
  return {
    version,
    async goto(url) {
      await send('browsingContext.navigate', { context, url, wait: 'complete' });
    },
    evaluate,
    async waitFor(expression, what, ms = 15_000) {
      const end = Date.now() + ms;
      for (;;) {
        if (await evaluate<boolean>(`Boolean(${expression})`).catch(() => false)) return;
        if (Date.now() > end) throw new Error(`Firefox: ${what}: not within ${ms / 1000} s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async close() {
      await send('session.end', {}).catch(() => undefined);
      ws.close();
      kill();
    },
  };
}

/** A BiDi RemoteValue as plain JSON. */
function fromRemote(v: unknown): unknown {
  const r = v as { type: string; value?: unknown };
  switch (r?.type) {
    case 'string':
    case 'number':
    case 'boolean':
      return r.value;
    case 'null':
    case 'undefined':
      return null;
    case 'array':
      return (r.value as unknown[]).map(fromRemote);
    case 'object':
      return Object.fromEntries((r.value as [unknown, unknown][]).map(([k, x]) => [typeof k === 'string' ? k : String(fromRemote(k)), fromRemote(x)]));
    default:
      return r?.value ?? null;
  }
}
