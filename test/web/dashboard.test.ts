// The dashboard in Debian's Chromium against the real server (in-process, SQLite) fed by
// simulated devices posting real events over HTTP: login, live tiles, failures, stalls,
// filters, the device view and its recovery keys, plans, tokens, the setup snippet and the CSV export. It takes
// the README's screenshots (docs/images/) from the real page.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { launchChromium } from './browser.ts';
import { SimDevice, simMac, type SimTask } from './sim-agents.ts';
import { parseCsv } from './csv.ts';

const IMAGES = join(import.meta.dirname, '..', '..', 'docs', 'images');
const TASKS: SimTask[] = [
  { name: 'check-hardware', effort: 1 },
  { name: 'deploy-image', effort: 6 },
  { name: 'collect-inventory', effort: 1 },
  { name: 'customer-script', effort: 2 },
];
const PLAN = (script: string) => ({ tasks: [{ name: 'hello', script }] });

describe('dashboard in Chromium', () => {
  let s: TestServer;
  let chrome: Awaited<ReturnType<typeof launchChromium>>;
  let ctx: BrowserContext;
  let page: Page;
  const devices: SimDevice[] = [];
  const tokens: Record<string, string> = {};

  const sim = async (serial: string, batch: string) => {
    const d = new SimDevice(s.url, serial, simMac(devices.length + 1));
    await d.enroll(tokens[batch]!);
    devices.push(d);
    return d;
  };
  const tile = (serial: string) => page.locator('li.tile', { has: page.locator('.tile-name', { hasText: new RegExp(`^${serial}$`) }) });
  const progressOf = async (serial: string) => Number(await tile(serial).locator('[role=progressbar]').getAttribute('aria-valuenow'));
  const login = async (p: Page) => {
    await p.goto(s.url);
    await p.getByLabel('Admin token', { exact: true }).fill(s.adminToken);
    await p.getByRole('button', { name: 'Log in' }).click();
    await p.getByRole('heading', { name: 'Line' }).waitFor();
  };

  before(async () => {
    s = await startTestServer();
    for (const [name, script] of [['line-a', '/bin/true'], ['line-b', '/bin/echo']] as const) {
      assert.equal((await s.admin('PUT', `/api/v1/plans/${name}`, { config: PLAN(script) })).status, 200);
    }
    assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'serial', pattern: 'A-*', plan: 'line-a', priority: 10 })).status, 201);
    assert.equal((await s.admin('POST', '/api/v1/rules', { match: 'default', plan: 'line-b', priority: 100 })).status, 201);
    for (const label of ['batch-7', 'batch-8']) tokens[label] = (await s.admin('POST', '/api/v1/tokens', { label })).json.token;
    chrome = await launchChromium();
    ctx = await chrome.browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
    ctx.setDefaultTimeout(10_000);
    page = await ctx.newPage();
  });
  after(async () => {
    for (const d of devices) d.close();
    // A browser that fails to close must not keep the server and its data dir.
    await ctx?.close().catch(() => undefined);
    await chrome?.close().catch(() => undefined);
    await s?.close();
  });

  it('an unauthenticated visitor sees only the login, and the API refuses the page without credentials', async () => {
    const p = await ctx.newPage();
    await p.goto(s.url);
    await p.getByRole('heading', { name: 'bootline line dashboard' }).waitFor();
    assert.equal(await p.locator('.tiles').count(), 0);
    assert.equal(await p.getByRole('navigation').count(), 0);
    const statuses = await p.evaluate(async () => Promise.all(['/api/v1/line', '/api/v1/devices', '/api/v1/stream', '/api/v1/export?format=csv'].map(async (u) => (await fetch(u)).status)));
    assert.deepEqual(statuses, [401, 401, 401, 401]);
    await p.getByLabel('Admin token', { exact: true }).fill('bla_not-the-token');
    await p.getByRole('button', { name: 'Log in' }).click();
    await p.getByRole('alert').filter({ hasText: 'Not accepted: unknown admin token' }).waitFor();
    assert.equal(await p.locator('.tiles').count(), 0);
    await p.close();
  });

  it('logs in with the admin token; tiles appear and move live as devices report', async () => {
    await login(page);
    const a1 = await sim('A-0001', 'batch-7');
    await a1.startRun(TASKS);
    await a1.startTask(0);
    await tile('A-0001').waitFor();
    assert.equal(await tile('A-0001').getAttribute('data-state'), 'running');
    await a1.endTask('ok', 1200);
    await a1.startTask(1);
    await a1.progress(25, { rate: 200 * 1024 * 1024 });
    await page.waitForFunction(() => document.querySelector('li.tile .tile-task')?.textContent === 'deploy-image');
    // The task's name and its progress come in separate events: wait for the second one too.
    const want1 = Math.round(a1.progressAt(1, 25));
    await page
      .waitForFunction((want) => Number(document.querySelector('li.tile [role=progressbar]')?.getAttribute('aria-valuenow')) === want, want1)
      .catch(async () => assert.fail(`the bar shows ${await progressOf('A-0001')}, expected ${want1}`));
    const p1 = await progressOf('A-0001');
    assert.equal(p1, want1);
    await tile('A-0001').locator('.tile-rate', { hasText: '200.0 MiB/s' }).waitFor();
    await a1.progress(75, { rate: 180 * 1024 * 1024 });
    await page.waitForFunction((want) => Number(document.querySelector('li.tile [role=progressbar]')?.getAttribute('aria-valuenow')) === want, Math.round(a1.progressAt(1, 75)));
    assert.ok((await progressOf('A-0001')) > p1, 'the bar moved forward');
    // A device that starts after the page opened appears without a reload.
    const b1 = await sim('B-0001', 'batch-8');
    await b1.startRun(TASKS);
    await b1.startTask(0);
    await tile('B-0001').waitFor();
    await page.locator('[data-count=running] .n', { hasText: /^2$/ }).waitFor();
  });

  it('a failure stands out with its message, first in the line', async () => {
    const a2 = await sim('A-0002', 'batch-7');
    await a2.startRun(TASKS);
    await a2.startTask(0);
    await a2.endTask('ok', 800);
    await a2.startTask(1);
    await a2.progress(40);
    await a2.endTask('failed', 5000, 'target /dev/sda is smaller than the image (16 GiB < 32 GiB)');
    await a2.endRun('failed', 'deploy-image failed: target /dev/sda is smaller than the image (16 GiB < 32 GiB)');
    const t = tile('A-0002');
    await t.and(page.locator('[data-state=failed]')).waitFor();
    await t.locator('.tile-message', { hasText: 'smaller than the image' }).waitFor();
    assert.equal(await page.locator('li.tile').first().getAttribute('data-device'), a2.deviceId, 'failed tiles sort first');
    assert.equal(await page.locator('[data-count=failed] .n').textContent(), '1');
    const colour = await t.locator('a').evaluate((el) => getComputedStyle(el).borderLeftColor);
    assert.equal(colour, 'rgb(179, 38, 30)', 'a failed tile has the failure colour');
  });

  it('a running device that falls silent is shown as stalled after the stall time set on the page', async () => {
    const c1 = await sim('A-0003', 'batch-7');
    await c1.startRun(TASKS);
    await c1.startTask(0);
    await tile('A-0003').waitFor();
    await page.getByLabel('Stalled after (s)').fill('5');
    await tile('A-0003').and(page.locator('[data-state=stalled]')).waitFor({ timeout: 15_000 });
    assert.match((await tile('A-0003').locator('.tile-state').textContent()) ?? '', /^stalled \d/);
    // A device that reports again is no longer stalled.
    await c1.progress(10);
    await tile('A-0003').and(page.locator('[data-state=running]')).waitFor();
    await page.getByLabel('Stalled after (s)').fill('120');
  });

  it('filters by text, state, plan and batch', async () => {
    const visible = async () => (await page.locator('li.tile .tile-name').allTextContents()).sort();
    const search = page.getByRole('searchbox', { name: 'Search' });
    await search.fill('b-00');
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 1);
    assert.deepEqual(await visible(), ['B-0001']);
    await search.fill('smaller than');
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 1);
    assert.deepEqual(await visible(), ['A-0002'], 'a failure message is searchable');
    await search.fill('');
    await page.getByLabel('State', { exact: true }).selectOption('running');
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 3);
    assert.deepEqual(await visible(), ['A-0001', 'A-0003', 'B-0001']);
    await page.getByLabel('State', { exact: true }).selectOption('');
    await page.getByLabel('Plan', { exact: true }).selectOption('line-b');
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 1);
    assert.deepEqual(await visible(), ['B-0001']);
    await page.getByLabel('Plan', { exact: true }).selectOption('');
    await page.getByLabel('Batch', { exact: true }).selectOption('batch-7');
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 3);
    assert.deepEqual(await visible(), ['A-0001', 'A-0002', 'A-0003']);
    await page.getByLabel('Batch', { exact: true }).selectOption('');
    // The counts are buttons that filter too.
    await page.locator('[data-count=failed]').click();
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 1);
    assert.deepEqual(await visible(), ['A-0002']);
    await page.locator('[data-count=failed]').click();
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length === 4);
    // Every control has a name a screen reader reads out.
    const unnamed = await page.evaluate(() =>
      [...document.querySelectorAll('input, select, textarea, button, a')]
        .filter((el) => !((el as HTMLInputElement).labels?.length || el.getAttribute('aria-label') || el.textContent?.trim()))
        .map((el) => el.outerHTML.slice(0, 80)),
    );
    assert.deepEqual(unnamed, []);
  });

  it("a device's page shows its run timeline, live log tail and report", async () => {
    const a1 = devices.find((d) => d.serial === 'A-0001')!;
    // By keyboard: a tile is a link.
    await tile('A-0001').locator('a').focus();
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: /^A-0001/ }).waitFor();
    const timeline = page.locator('table.timeline');
    await timeline.locator('tr.task-ok th', { hasText: 'check-hardware' }).waitFor();
    assert.match((await timeline.locator('tr', { hasText: 'deploy-image' }).textContent()) ?? '', /6 \(60%\)/, 'effort and share');
    await a1.progress(90, { log: 'wrote 460 MiB of 512 MiB' });
    await page.locator('pre.log', { hasText: 'wrote 460 MiB of 512 MiB' }).waitFor();
    await a1.endTask('ok', 42_000);
    for (const i of [2, 3]) {
      await a1.startTask(i);
      await a1.progress(50, { log: `${TASKS[i]!.name}: half way` });
      await a1.endTask('ok', 3000 * i);
    }
    await a1.endRun('ok');
    await timeline.locator('tr.task-ok', { hasText: 'deploy-image' }).locator('td', { hasText: '42.0 s' }).waitFor();
    await page.locator('.report .badge.run-ok').waitFor();
    await page.getByRole('heading', { name: 'Inventory' }).waitFor();
  });

  it("an admin reveals a device's escrowed recovery key after confirming, and exports the run's report with it; each is recorded", async () => {
    const a1 = devices.find((d) => d.serial === 'A-0001')!;
    const keys = page.getByTestId('recovery-key');
    await keys.getByText('No recovery key escrowed').waitFor();
    const volumeUuid = '7d4f2b9e-1c3a-4e5f-8a6b-0c9d8e7f6a5b';
    const recoveryKey = 'fjkhbgrd-cutdvnbl-eikhtevr-ilrtgfne-vhbhlgfk-nunrtcgd-nkecfbgd-kjvijfdk';
    await a1.escrowRecoveryKey({ volumeUuid, partition: '/dev/vda3', label: 'data', keyslot: 2, recoveryKey, pcrs: [7] });
    // (A running device's section reloads as its tasks move on; this one's run has ended.)
    await page.reload();
    const row = keys.locator(`tr[data-volume="${volumeUuid}"]`);
    await row.waitFor();
    assert.match((await row.textContent()) ?? '', /\/dev\/vda3 \(data\).*7d4f2b9e-1c3a-4e5f-8a6b-0c9d8e7f6a5b.*never/);
    assert.ok(!((await page.content()).includes(recoveryKey)), 'the key is not on the page before a reveal');
    const button = row.getByRole('button', { name: 'Reveal recovery key of /dev/vda3' });

    // Dismissed: nothing revealed, nothing recorded.
    page.once('dialog', (d) => {
      assert.match(d.message(), /Reveal the recovery key of \/dev\/vda3 .* on A-0001\?.*recorded with your name/s);
      void d.dismiss();
    });
    await button.click();
    await page.waitForTimeout(200);
    assert.equal(await page.getByTestId('revealed-key').count(), 0);
    const listed = await s.admin('GET', `/api/v1/devices/${a1.deviceId}/recovery-keys`);
    assert.equal(listed.json[0].revealCount, 0);

    page.once('dialog', (d) => void d.accept());
    await button.click();
    const shown = page.getByTestId('revealed-key');
    await shown.waitFor();
    assert.equal(await shown.textContent(), recoveryKey);
    assert.match(await shown.evaluate((el) => getComputedStyle(el).fontFamily), /mono/i);
    await row.locator('td.revealed', { hasText: /by admin-token:[0-9a-f]{8} \(1×\)/ }).waitFor();
    await ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: s.url });
    await page.getByRole('button', { name: 'Copy recovery key' }).click();
    await page.locator('.copy-status', { hasText: 'Copied.' }).waitFor();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), recoveryKey);
    await page.getByRole('button', { name: 'Hide' }).click();
    assert.equal(await page.getByTestId('revealed-key').count(), 0);

    // The run's report, exported with the key escrowed during it, after its own confirm.
    page.once('dialog', (d) => void d.accept());
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download report with recovery keys (JSON)' }).click()]);
    const report = JSON.parse(readFileSync((await download.path())!, 'utf8')) as { serial: string; volumes: { volumeUuid: string; recoveryKey: string }[] };
    assert.equal(report.serial, 'A-0001');
    assert.deepEqual(report.volumes.map((v) => [v.volumeUuid, v.recoveryKey]), [[volumeUuid, recoveryKey]]);
    const after = await s.admin('GET', `/api/v1/devices/${a1.deviceId}/recovery-keys`);
    assert.deepEqual([after.json[0].revealCount, /\(run report\)$/.test(after.json[0].revealedBy)], [2, true]);
  });

  it('plans are checked with the agent schema when saved; tokens are created, shown once and revoked', async () => {
    await page.getByRole('link', { name: 'Plans & rules' }).click();
    await page.getByRole('button', { name: 'line-a' }).click();
    const config = page.getByLabel('Configuration (JSON)');
    await config.fill(JSON.stringify({ tasks: [{ name: 'hello', script: '/bin/true', timeout: 'soon' }] }));
    await page.getByRole('button', { name: 'Save plan' }).click();
    const err = page.locator('#plan-error');
    await err.waitFor();
    assert.match((await err.textContent()) ?? '', /plan line-a.*timeout/);
    await config.fill('{"tasks": [');
    await page.getByRole('button', { name: 'Save plan' }).click();
    await page.locator('#plan-error', { hasText: 'JSON syntax error' }).waitFor();
    await config.fill(JSON.stringify({ tasks: [{ name: 'hello', script: '/bin/true', timeout: 60 }] }));
    await page.getByRole('button', { name: 'Save plan' }).click();
    await page.getByRole('status').filter({ hasText: 'Plan line-a saved.' }).waitFor();
    assert.equal((await s.admin('GET', '/api/v1/plans/line-a')).json.config.tasks[0].timeout, 60);

    await page.getByRole('link', { name: 'Enrollment tokens' }).click();
    await page.getByLabel('Label (line or batch)').fill('batch-9');
    await page.getByRole('button', { name: 'Create token' }).click();
    const secret = (await page.getByTestId('new-token').textContent()) ?? '';
    assert.match(secret, /^ble_/);
    const enrolled = await s.call('POST', '/api/v1/enroll', { body: { token: secret, serial: 'T-1', macs: [] } });
    assert.equal(enrolled.status, 201, 'the token shown enrolls a device');
    const row = page.locator('tr', { hasText: 'batch-9' });
    assert.match((await row.textContent()) ?? '', /active/);
    page.once('dialog', (d) => void d.accept());
    await row.getByRole('button', { name: /Revoke/ }).click();
    await row.locator('.badge.token-revoked').waitFor();
    assert.equal((await s.call('POST', '/api/v1/enroll', { body: { token: secret, serial: 'T-2', macs: [] } })).status, 401, 'a revoked token enrolls nothing');

    await page.getByRole('link', { name: 'Network boot setup' }).click();
    await page.getByTestId('dnsmasq').waitFor();
    assert.match((await page.getByTestId('dnsmasq').textContent()) ?? '', /dhcp-boot=tag:ipxe,http:\/\/127\.0\.0\.1:\d+\/boot\.ipxe/);
    assert.match((await page.getByTestId('ipxe').textContent()) ?? '', /^#!ipxe/);
  });

  it("exports a batch's reports as a CSV that parses to one row per run", async () => {
    await page.getByRole('link', { name: 'Export' }).click();
    await page.getByLabel('Batch', { exact: true }).selectOption('batch-7');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
    assert.equal(download.suggestedFilename(), 'bootline-batch-7.csv');
    const rows = parseCsv(readFileSync((await download.path())!, 'utf8'));
    const header = rows[0]!;
    const recs = rows.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h, r[i]])));
    assert.deepEqual(recs.map((r) => r.serial).sort(), ['A-0001', 'A-0002', 'A-0003']);
    const failed = recs.find((r) => r.serial === 'A-0002')!;
    assert.equal(failed.status, 'failed');
    assert.equal(failed.batch, 'batch-7');
    assert.equal(failed.plan, 'line-a');
    assert.equal(failed.failedTask, 'deploy-image');
    assert.match(failed.message!, /smaller than the image \(16 GiB < 32 GiB\)/);
    assert.equal(recs.find((r) => r.serial === 'A-0001')!.status, 'ok');
    assert.equal(recs.find((r) => r.serial === 'A-0003')!.status, 'running');
  });

  it('takes the screenshots of the line view and a device view for the README', async () => {
    // A line of 24 devices in every state, as an operator sees it mid-batch.
    const batch = 'batch-7';
    const line: SimDevice[] = [];
    for (let i = 1; i <= 20; i++) line.push(await sim(`PF3X${String(100 + i)}`, batch));
    await Promise.all(
      line.map(async (d, i) => {
        await d.startRun(TASKS);
        if (i % 7 === 6) return;
        await d.startTask(0);
        await d.endTask('ok', 900);
        await d.startTask(1);
        await d.progress(Math.min(99, 8 + i * 9) % 100, { rate: (120 + i * 7) * 1024 * 1024 });
        if (i === 4) {
          await d.progress(38, { log: 'deploy-image: zstd stream, bmap 132.0 MiB mapped of 512.0 MiB' });
          await d.progress(41, { log: 'deploy-image: range 1312-1344 MiB: sha256 mismatch, re-reading from the source' });
          const inv = await s.call('PUT', '/api/v1/device/inventory', {
            token: d.credential,
            // A document as collect-inventory sends it (the server checks it against the published schema).
            body: {
              format: 'bootline-inventory/1',
              collectedAt: new Date().toISOString(),
              serial: d.serial,
              system: { serial: d.serial, vendor: 'ACME Industrial', product: 'IPC-5000' },
              board: {},
              chassis: {},
              firmware: { mode: 'uefi', vendor: 'American Megatrends International, LLC.', version: '5.19' },
              cpus: { architecture: 'x64', model: 'Intel(R) Atom(TM) x6425E @ 2.00GHz', vendor: 'GenuineIntel', sockets: 1, cores: 4, threads: 4 },
              memory: { totalBytes: 8589934592 },
              disks: [{ name: 'sda', model: 'SanDisk SDSSDA240G', serial: '184302A00231', sizeBytes: 240057409536, transport: 'ata', rotational: false, removable: false }],
              nics: [{ name: 'enp1s0', mac: d.mac, state: 'up', carrier: true }],
              pci: [],
              usb: [],
              tpm: { present: true, version: '2.0', manufacturer: 'INTC' },
              secureBoot: { supported: true, enabled: false, setupMode: true },
              commands: [],
              errors: [],
            },
          });
          assert.equal(inv.status, 204, inv.text);
          // Write-through encryption formats the volume before the image is written: its key is escrowed even though the write fails.
          await d.escrowRecoveryKey({
            volumeUuid: '3b1e6c0a-9f2d-4c7b-8e5a-1d0f2a4b6c8e', partition: '/dev/sda3', label: 'data', keyslot: 1,
            recoveryKey: 'bdefghij-klnrtuvc-defghijk-lnrtuvcb-efghijkl-nrtuvcbd-fghijkln-rtuvcbde', pcrs: [7],
          });
          await d.endTask('failed', 20_000, 'sha256 mismatch in range 1312-1344 MiB (image corrupted in transfer?)');
          await d.endRun('failed', 'deploy-image failed: sha256 mismatch in range 1312-1344 MiB');
        }
        if (i === 9 || i === 15) {
          await d.endTask('ok', 40_000);
          for (const k of [2, 3]) {
            await d.startTask(k);
            await d.endTask('ok', 2000);
          }
          await d.endRun('ok');
        }
      }),
    );
    await page.getByRole('link', { name: 'Line' }).click();
    await page.waitForFunction(() => document.querySelectorAll('li.tile').length >= 24);
    // Throughput comes with progress events: one more round while the page is open.
    await Promise.all(line.map((d, i) => (i % 7 === 6 || i === 4 || i === 9 || i === 15 ? undefined : d.progress(Math.min(99, 12 + i * 9) % 100, { rate: (120 + i * 7) * 1024 * 1024 }))));
    await page.locator('.tile-rate').nth(10).waitFor();
    await page.waitForTimeout(300);
    mkdirSync(IMAGES, { recursive: true });
    await page.screenshot({ path: join(IMAGES, 'dashboard-line.png'), fullPage: true });
    await tile('PF3X105').locator('a').click();
    await page.locator('table.timeline').waitFor();
    await page.locator('pre.log', { hasText: 'sha256 mismatch' }).waitFor();
    await page.locator('.inventory', { hasText: 'IPC-5000' }).waitFor();
    await page.locator('[data-testid=recovery-key] tr[data-volume]').waitFor();
    await page.screenshot({ path: join(IMAGES, 'dashboard-device.png'), fullPage: true });
  });
});
