// Secure Boot in the lab (root, QEMU under TCG, OVMF's secure-boot firmware with an empty
// VARS file, swtpm): ONE virtual device, two boots, because every TCG boot costs about half
// a minute.
//
// Boot 1, Setup Mode: the firmware boots the first USB stick, the installer as an UNSIGNED
// UKI (its command line inside: the line server and an enrollment token). The agent enrolls
// with the server, whose plan runs enroll-secure-boot with PK/KEK/db made by `bootline
// secureboot keys create`, then reboots (same VARS: the same QEMU process).
// Boot 2, Secure Boot on: the firmware refuses stick 1 (unsigned) and stick 2 (the same UKI
// signed with another key) — OVMF says "Access Denied" for each — and boots the network:
// iPXE -> the server -> the UKI signed with the enrolled db key, chain-loaded with the
// device's token on its command line. The plan runs again: the task finds the keys enrolled
// (ifAlreadyEnrolled: skip) and the device reports SecureBoot=1, and the kernel says
// "Secure boot enabled".
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, createReadStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join, resolve } from 'node:path';
import { buildInstaller, UKI_FILE } from '../../src/lab/installer/build.ts';
import { DEFAULT_LAB_CACHE } from '../../src/lab/debian-packages.ts';
import { startLab, type Lab } from '../../src/lab/vm/lab.ts';
import { REBOOT_TCG_CODE_BUFFER_MIB } from './vm-fixtures.ts';
import { guestServerUrl } from '../../src/lab/vm/ipxe-chain.ts';
import { onPath } from '../../src/which.ts';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { tempDir } from '../helpers.ts';

const CLI = resolve(import.meta.dirname, '../../dist/bootline.mjs');
/** Kept between runs: a build whose initramfs inputs did not change reuses it (the UKIs are remade). */
const INSTALLER = join(DEFAULT_LAB_CACHE, 'test-installers', 'secureboot');
const EFI_GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
const skip = ['qemu-system-x86_64', 'swtpm', 'sbsign', 'sbattach', 'objcopy', 'openssl', 'mcopy'].filter((t) => !onPath(t));

/** What the device reports about its firmware and kernel, one `key: value` line each. */
const REPORT = [
  `V=/sys/firmware/efi/efivars; G=${EFI_GLOBAL}`,
  'for v in SetupMode SecureBoot; do echo "efivar $v=$(tail -c 1 $V/$v-$G | od -An -tu1 | tr -d " ")"; done',
  'echo "kernel: $(dmesg | grep -o "Secure boot [a-z]*" | head -n 1)"',
  'f=$V/SecureBoot-$G; echo "lsattr: $(lsattr $f | cut -d " " -f 1)"',
  'chattr -i $f && echo "after chattr -i: $(lsattr $f | cut -d " " -f 1)" && chattr +i $f',
  'mount -t securityfs securityfs /sys/kernel/security 2>/dev/null; echo "lockdown: $(cat /sys/kernel/security/lockdown)"',
  'echo "cmdline: $(cat /proc/cmdline)"',
].join('\n');

function plan(keysUrl: string, onSuccess: 'reboot' | 'poweroff') {
  return {
    description: 'Secure Boot lab test',
    config: {
      unattended: true,
      tasks: [
        { name: 'firmware', script: '/bin/sh', args: ['-c', REPORT] },
        { name: 'secure-boot', builtin: 'enroll-secure-boot', with: { pk: `${keysUrl}/PK.auth`, kek: `${keysUrl}/KEK.auth`, db: `${keysUrl}/db.auth`, ifAlreadyEnrolled: 'skip' } },
      ],
      onSuccess: { action: onSuccess, delay: 1 },
    },
  };
}

interface EventRecord {
  seq: number;
  type: string;
  body: { task?: string; status?: string; message?: string; error?: string };
}

const figures: string[] = [];
const note = (s: string) => {
  figures.push(s);
  process.stderr.write(`secureboot: ${s}\n`);
};
let line: TestServer | undefined;
let keyServer: Server | undefined;
let lab: Lab | undefined;
after(async () => {
  await lab?.stop();
  await line?.close();
  keyServer?.close();
  if (figures.length > 0) process.stderr.write(`secureboot figures:\n  ${figures.join('\n  ')}\n`);
});

/** A copy of the USB image whose EFI/BOOT/BOOTX64.EFI is `efi`. */
function stickWith(usb: string, efi: string, out: string): string {
  execFileSync('cp', ['--sparse=always', usb, out]);
  const table = JSON.parse(execFileSync('sfdisk', ['-J', out], { encoding: 'utf8' })) as { partitiontable: { partitions: { start: number }[] } };
  const at = `${out}@@${table.partitiontable.partitions[0]!.start * 512}`;
  execFileSync('mcopy', ['-o', '-i', at, efi, '::/EFI/BOOT/BOOTX64.EFI'], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
  return out;
}

test(
  'Setup Mode boots the unsigned installer, the pipeline enrolls the keys; after the reboot Secure Boot is on, the firmware refuses the unsigned and the foreign-signed installer and boots the one signed with the enrolled db key',
  { skip: skip.length > 0 && `needs ${skip.join(', ')} (scripts/setup.sh)`, timeout: 25 * 60_000 },
  async () => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run "npm run build" first`);
    const t0 = Date.now();
    const dir = tempDir('bootline-secureboot-');

    // Keys: the line's PK/KEK/db (bootline secureboot), and a stranger's key.
    const keys = join(dir, 'keys');
    execFileSync(process.execPath, [CLI, 'secureboot', 'keys', 'create', '--out', keys, '--subject-prefix', 'Lab Line'], { stdio: 'pipe' });
    execFileSync('openssl', ['req', '-new', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=Somebody Else/', '-days', '30', '-keyout', join(dir, 'other.key'), '-out', join(dir, 'other.crt')], { stdio: 'pipe' });
    keyServer = createServer((req, res) => {
      const name = /^\/keys\/(PK|KEK|db)\.auth$/.exec(req.url ?? '')?.[1];
      if (!name) return void res.writeHead(404).end();
      createReadStream(join(keys, `${name}.auth`)).pipe(res);
    });
    await new Promise<void>((r) => keyServer!.listen(0, '127.0.0.1', r));
    const keysUrl = `http://10.0.2.2:${(keyServer.address() as AddressInfo).port}/keys`;

    // The line server: a plan for every device, an enrollment token for the USB form.
    line = await startTestServer();
    assert.equal((await line.admin('PUT', '/api/v1/plans/sb', plan(keysUrl, 'reboot'))).status, 200);
    assert.equal((await line.admin('POST', '/api/v1/rules', { match: 'default', action: 'run', plan: 'sb', priority: 100 })).status, 201);
    const created = await line.admin('POST', '/api/v1/tokens', { label: 'secureboot-usb' });
    assert.equal(created.status, 201, created.text);
    const token = (created.json as { token: string }).token;

    // The installer, signed: the netboot UKI for the server, the USB form with its command line inside.
    const built = Date.now();
    const usb = join(dir, 'usb.img');
    const manifest = await buildInstaller({
      out: INSTALLER, cache: DEFAULT_LAB_CACHE, usb, usbImages: [], modules: [], agent: CLI, zstdLevel: 3, force: false,
      cmdline: `bootline.server=${guestServerUrl(line.url)} bootline.token=${token} console=ttyS0,115200`,
      sign: { key: join(keys, 'db.key'), cert: join(keys, 'db.crt') },
      log: (l) => process.stderr.write(`secureboot: ${l}\n`),
    });
    assert.equal(manifest.uki?.signed, true);
    assert.match(manifest.uki?.signer ?? '', /CN=Lab Line Signature Database Key/);
    assert.equal(manifest.usb?.boot, 'uki');
    note(`build (2 signed UKIs and the USB image; the initramfs packed only when its inputs changed): ${((Date.now() - built) / 1000).toFixed(1)} s; UKI ${(manifest.uki!.bytes / 1e6).toFixed(1)} MB`);
    mkdirSync(join(line.data, 'installer'), { recursive: true });
    copyFileSync(join(INSTALLER, UKI_FILE), join(line.data, 'installer', UKI_FILE));

    // The same USB installer unsigned, and signed by somebody else.
    const table = JSON.parse(execFileSync('sfdisk', ['-J', usb], { encoding: 'utf8' })) as { partitiontable: { partitions: { start: number }[] } };
    const signed = join(dir, 'signed.efi');
    execFileSync('mcopy', ['-i', `${usb}@@${table.partitiontable.partitions[0]!.start * 512}`, '::/EFI/BOOT/BOOTX64.EFI', signed], { env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    execFileSync('sbverify', ['--cert', join(keys, 'db.crt'), signed], { stdio: 'pipe' });
    const unsigned = join(dir, 'unsigned.efi');
    copyFileSync(signed, unsigned);
    execFileSync('sbattach', ['--remove', unsigned], { stdio: 'pipe' });
    assert.notEqual(spawnSync('sbverify', ['--cert', join(keys, 'db.crt'), unsigned]).status, 0, 'the signature is gone');
    const foreign = join(dir, 'foreign.efi');
    execFileSync('sbsign', ['--key', join(dir, 'other.key'), '--cert', join(dir, 'other.crt'), '--output', foreign, unsigned], { stdio: 'pipe' });
    const sticks = [stickWith(usb, unsigned, join(dir, 'unsigned.img')), stickWith(usb, foreign, join(dir, 'foreign.img'))];

    const started = Date.now();
    // Boot 2's kernel reached /init at 28-32 s of uptime with QEMU's default code buffer, 9-10 s with this one.
    lab = await startLab({ devices: 1, serverUrl: line.url, secureBoot: true, vars: 'empty', usb: sticks, diskSize: '64M', memoryMiB: 1536, tcgCodeBufferMiB: REBOOT_TCG_CODE_BUFFER_MIB, log: () => {} });
    const d = lab.devices[0]!;

    // Boot 1: Setup Mode, the unsigned stick, enrollment; its run ends and the device reboots.
    const devices = async () => (await line!.admin('GET', '/api/v1/devices')).json as { id: string; state: string }[];
    const until = async <T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> => {
      const end = Date.now() + ms;
      for (;;) {
        const v = await f();
        if (v !== undefined) return v;
        if (Date.now() > end || !lab!.isRunning(d)) throw new Error(`${what}: not within ${ms / 1000} s; serial console tail:\n${readFileSync(d.serialLog, 'latin1').split('\n').slice(-30).join('\n')}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    // Generous: under TCG on a loaded 2-core machine a boot has taken minutes.
    const dev = await until('the first run succeeds', 600_000, async () => (await devices()).find((x) => x.state === 'succeeded'));
    const firstRun = (Date.now() - started) / 1000;
    note(`boot 1: QEMU start to the first run's success ${firstRun.toFixed(0)} s`);
    const boot1Log = readFileSync(d.serialLog, 'latin1');
    // The next network boot runs the plan again (and powers off after it).
    assert.equal((await line.admin('PUT', '/api/v1/plans/sb', plan(keysUrl, 'poweroff'))).status, 200);
    assert.equal((await line.admin('POST', `/api/v1/devices/${dev.id}/reprovision`)).status, 204);

    // Boot 2: Secure Boot on. Both sticks are refused, the network boots the signed UKI.
    const off = await lab.waitForExit(d, 600_000);
    note(`boot 2: ${((Date.now() - started) / 1000 - firstRun).toFixed(0)} s from the first run's success to ${off ? 'the power-off' : 'giving up'}`);
    assert.equal(off, true, `the guest powered off after its second run:\n${readFileSync(d.serialLog, 'latin1').split('\n').slice(-30).join('\n')}`);
    const log = readFileSync(d.serialLog, 'latin1');
    const boot2Log = log.slice(boot1Log.length);

    const runs = (await line.admin('GET', `/api/v1/devices/${dev.id}/runs`)).json as { id: string; status: string }[];
    assert.deepEqual(runs.map((r) => r.status), ['ok', 'ok'], 'two runs, both ok');
    const report = async (runId: string) => {
      const events = (await line!.admin('GET', `/api/v1/runs/${runId}/events?limit=10000`)).json as EventRecord[];
      const lines = events.filter((e) => e.type === 'log').map((e) => e.body.message ?? '');
      const value = (key: string) => lines.find((l) => l.startsWith(`${key}`))?.slice(key.length);
      return { events, lines, value };
    };
    // Oldest first or newest first: tell them apart by what they saw.
    const [a, b] = await Promise.all(runs.map((r) => report(r.id)));
    const [r1, r2] = a!.value('efivar SetupMode=') === '1' ? [a!, b!] : [b!, a!];

    // Boot 1: Setup Mode, Secure Boot off, the task enrolled; chattr -i works on efivarfs.
    assert.equal(r1.value('efivar SetupMode='), '1', r1.lines.join('\n'));
    assert.equal(r1.value('efivar SecureBoot='), '0');
    assert.equal(r1.value('kernel: '), 'Secure boot disabled');
    assert.match(r1.value('lsattr: ') ?? '', /i/, 'efivarfs marks SecureBoot immutable');
    assert.doesNotMatch(r1.value('after chattr -i: ') ?? 'i', /i/, 'chattr -i clears it');
    assert.ok(r1.lines.some((l) => /Setup Mode/.test(l)), `the task reported the mode:\n${r1.lines.join('\n')}`);
    assert.ok(r1.events.some((e) => e.type === 'task-end' && e.body.task === 'secure-boot' && e.body.status === 'ok'));
    assert.match(boot1Log, /BdsDxe: starting Boot\d+ "UEFI QEMU QEMU USB HARDDRIVE/, 'boot 1 came from the first stick');
    assert.match(boot1Log, /secureboot: Secure boot disabled/);

    // Boot 2: the firmware refused both sticks, then started the network (iPXE).
    const refused = [...boot2Log.matchAll(/BdsDxe: failed to load Boot\d+ "UEFI QEMU QEMU USB HARDDRIVE[^"]*" from [^\n]*: Access Denied/g)];
    assert.equal(refused.length, 2, `both sticks refused:\n${boot2Log.split('\n').filter((l) => /BdsDxe/.test(l)).join('\n')}`);
    assert.ok(boot2Log.indexOf(refused[1]![0]) < boot2Log.indexOf('iPXE'), 'then the network');
    assert.match(boot2Log, /secureboot: Secure boot enabled/, 'the kernel says so');
    assert.equal(r2.value('efivar SecureBoot='), '1', r2.lines.join('\n'));
    assert.equal(r2.value('efivar SetupMode='), '0');
    assert.equal(r2.value('kernel: '), 'Secure boot enabled');
    assert.equal(r2.value('lockdown: '), 'none [integrity] confidentiality', "Debian's kernel locks itself down under Secure Boot");
    // The signed netboot UKI has no built-in command line: the server's reached the kernel.
    assert.match(r2.value('cmdline: ') ?? '', /bootline\.server=http:\/\/10\.0\.2\.2:\d+ bootline\.token=blb_\S+ console=tty0 console=ttyS0,115200/);
    assert.ok(r2.lines.some((l) => /SecureBoot=1/.test(l) && /User Mode|Deployed Mode/.test(l)), `the task reported the mode:\n${r2.lines.join('\n')}`);
    assert.ok(r2.events.some((e) => e.type === 'task-end' && e.body.task === 'secure-boot' && e.body.status === 'ok'), 'already enrolled: skipped, ok');

    const uptime = (l: string, re: RegExp) => new RegExp(`\\[\\s*([\\d.]+)\\] ${re.source}`).exec(l)?.[1];
    note(`kernel uptime at /init: boot 1 ${uptime(boot1Log, /Run \/init/)} s, boot 2 ${uptime(boot2Log, /Run \/init/)} s`);
    note(`whole test ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  },
);
