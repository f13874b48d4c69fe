// The dashboard in Debian's Firefox ESR (the other browser the issue names), against the real
// server fed by simulated devices: the login, live tiles, a failure with its message, and the
// API closed to a page without credentials. The full walk-through runs in Chromium
// (dashboard.test.ts); this checks that the same bundle works in Gecko.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { FIREFOX, launchFirefox, type FirefoxPage } from './firefox.ts';
import { SimDevice, simMac, type SimTask } from './sim-agents.ts';

const TASKS: SimTask[] = [
  { name: 'check-hardware', effort: 1 },
  { name: 'deploy-image', effort: 6 },
];

let s: TestServer;
let ff: FirefoxPage;
const devices: SimDevice[] = [];
const skip = existsSync(FIREFOX) ? false : `needs ${FIREFOX} (scripts/setup.sh installs firefox-esr)`;

before(async () => {
  if (skip) return;
  s = await startTestServer();
  assert.equal((await s.admin('PUT', '/api/v1/plans/line', { config: { tasks: [{ name: 'hello', script: '/bin/true' }] } })).status, 200);
  assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'default', plan: 'line', priority: 100 })).status, 201);
  ff = await launchFirefox();
});
after(async () => {
  for (const d of devices) d.close();
  // A browser that fails to close must not keep the server and its data dir.
  await ff?.close().catch(() => undefined);
  await s?.close();
});

/** Sets a React-controlled input's value the way typing does (the native setter, then an input event). */
const typeInto = (selector: string, value: string) =>
  `(() => { const el = document.querySelector(${JSON.stringify(selector)}); const set = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set; set.call(el, ${JSON.stringify(value)}); el.dispatchEvent(new Event('input', { bubbles: true })); return true; })()`;

test('in Firefox: only the login without credentials; after it, tiles appear and move live, and a failure shows its message', { skip, timeout: 120_000 }, async () => {
  process.stderr.write(`firefox: ${ff.version}\n`);
  await ff.goto(s.url);
  await ff.waitFor(`[...document.querySelectorAll('h1,h2')].some((h) => h.textContent === 'bootline line dashboard')`, 'the login page');
  assert.equal(await ff.evaluate<number>(`document.querySelectorAll('.tiles').length`), 0);
  assert.deepEqual(await ff.evaluate<number[]>(`Promise.all(['/api/v1/line', '/api/v1/devices'].map(async (u) => (await fetch(u)).status))`), [401, 401]);

  // Log in as a person would: the admin token in its field, then the button.
  const field = `[...document.querySelectorAll('input')].find((i) => i.labels && [...i.labels].some((l) => l.textContent.trim() === 'Admin token'))`;
  await ff.evaluate(`(${field}).id = 'token-field'`);
  await ff.evaluate(typeInto('#token-field', s.adminToken));
  await ff.evaluate(`[...document.querySelectorAll('button')].find((b) => b.textContent.trim() === 'Log in').click()`);
  await ff.waitFor(`[...document.querySelectorAll('h1,h2')].some((h) => h.textContent === 'Line')`, 'the line view after logging in');

  const token = (await s.admin('POST', '/api/v1/tokens', { label: 'firefox' })).json as { token: string };
  const d = new SimDevice(s.url, 'F-0001', simMac(1));
  devices.push(d);
  await d.enroll(token.token);
  await d.startRun(TASKS);
  await d.startTask(0);
  const tile = `document.querySelector('li.tile')`;
  await ff.waitFor(`${tile}?.querySelector('.tile-name')?.textContent === 'F-0001' && ${tile}.dataset.state === 'running'`, 'the tile of a device that started');
  await d.endTask('ok', 900);
  await d.startTask(1);
  await d.progress(50, { rate: 100 * 1024 * 1024 });
  const want = Math.round(d.progressAt(1, 50));
  await ff.waitFor(`Number(${tile}?.querySelector('[role=progressbar]')?.getAttribute('aria-valuenow')) === ${want}`, `the bar at ${want}%`);
  await d.endTask('failed', 3000, 'target /dev/sda is smaller than the image');
  await d.endRun('failed', 'deploy-image failed: target /dev/sda is smaller than the image');
  await ff.waitFor(`${tile}?.dataset.state === 'failed' && /smaller than the image/.test(${tile}.querySelector('.tile-message')?.textContent ?? '')`, 'the failure and its message');
  assert.equal(await ff.evaluate<string>(`getComputedStyle(${tile}.querySelector('a')).borderLeftColor`), 'rgb(179, 38, 30)', 'the failure colour, as in Chromium');
});
