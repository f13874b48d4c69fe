// encrypt-disk on a virtual device (root, QEMU under TCG, OVMF, swtpm): ONE device, three
// boots, because every TCG boot costs about half a minute. It sits in the non-lab test
// lane on purpose: the lab lane is the suite's longest (scripts/run-tests.mjs).
//
// Boot 1 runs, one after the other on the same disk: the image deployed plainly and then
// encrypted in place; deployed through dm-crypt (write-through) — the task durations are the
// note's comparison (the in-place run's deploy is the plain deploy: no separate one, to save a
// minute of TCG) — each checked by opening the volume with the TPM
// alone and comparing every file with the image's. The write-through volume's recovery key
// is escrowed to the server.
// Boot 2: the recovery key, revealed by an admin from the server, opens that volume; the
// image is deployed again and encrypted in place, and the test resets the guest (QMP
// system_reset: a power cut for the guest, its RAM lost) in the middle of the reencryption.
// Boot 3: the same task finds the interrupted reencryption, resumes it, and the data is intact.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildInstaller, parseBuildOptions } from '../../src/lab/installer/build.ts';
import { DEFAULT_LAB_CACHE } from '../../src/lab/debian-packages.ts';
import { startLab, type Lab } from '../../src/lab/vm/lab.ts';
import { REBOOT_TCG_CODE_BUFFER_MIB } from '../lab/vm-fixtures.ts';
import { assembleGptImage, buildEsp, buildExt4, ESP_TYPE, LINUX_DATA_TYPE, LINUX_ROOT_X86_64_TYPE, MiB } from '../../src/lab/disk-image.ts';
import { createBmap } from '../../src/image/create.ts';
import { formatBmap } from '../../src/image/bmap/write.ts';
import { execFileSync } from 'node:child_process';
import { onPath } from '../../src/which.ts';
import { startTestServer, type TestServer } from '../server/test-server.ts';
import { tempDir } from '../helpers.ts';

const CLI = resolve(import.meta.dirname, '../../dist/bootline.mjs');
const INSTALLER = join(DEFAULT_LAB_CACHE, 'test-installers', 'encryption');
const skip = ['qemu-system-x86_64', 'swtpm', 'mke2fs', 'mkfs.vfat', 'sfdisk'].filter((t) => !onPath(t));

/** What a check prints: the data's digest, read through a volume opened with the TPM alone (or `$RK`). */
const CHECK = (how: 'tpm' | 'recovery') =>
  [
    'set -e',
    how === 'tpm' ? 'cryptsetup open --token-only /dev/vda3 chk' : 'printf %s "$RK" | cryptsetup open --disable-external-tokens --key-file - /dev/vda3 chk',
    'mount -o ro /dev/mapper/chk /mnt',
    'echo "filesystem: $(df -k /mnt | tail -n 1 | tr -s " " | cut -d " " -f 2) KiB"',
    'echo "digest: $(cd /mnt/files && sha256sum * | sha256sum | cut -d " " -f 1)"',
    'umount /mnt && cryptsetup close chk',
    'echo "luks: $(cryptsetup luksDump --dump-json-metadata /dev/vda3 | node -e \'const d=JSON.parse(require("fs").readFileSync(0));console.log(Object.keys(d.keyslots).length+" keyslots, tokens "+Object.values(d.tokens).map(t=>t.type).sort().join("+"))\')"',
    'mount -o ro /dev/vda2 /mnt && echo "crypttab: $(grep -v "^#" /mnt/etc/crypttab)" && echo "fstab: $(grep /data /mnt/etc/fstab | tr "\\t" " ")" && umount /mnt',
  ].join('\n');

const deploy = (name: string) => ({ name, builtin: 'deploy-image', with: { image: 'image:enc', target: ['/dev/vda'], overwrite: 'OVERWRITE' } });
const encrypt = (name: string, method: 'auto' | 'in-place', partition = 'data:/data:reencrypt') => ({ name, builtin: 'encrypt-disk', with: { partitions: [partition], method, target: '/dev/vda' } });
const script = (name: string, body: string, env: Record<string, string> = {}) => ({ name, script: '/bin/sh', args: ['-c', body], env });
const plan = (tasks: object[], onSuccess: 'reboot' | 'poweroff') => ({ description: 'encryption lab test', config: { unattended: true, tasks, onSuccess: { action: onSuccess, delay: 2 } } });

interface EventRecord {
  type: string;
  body: { task?: string; status?: string; message?: string; durationMs?: number };
}

const figures: string[] = [];
const note = (s: string) => {
  figures.push(s);
  process.stderr.write(`encryption: ${s}\n`);
};
let line: TestServer | undefined;
let lab: Lab | undefined;
after(async () => {
  await lab?.stop();
  await line?.close();
  if (figures.length > 0) process.stderr.write(`encryption figures:\n  ${figures.join('\n  ')}\n`);
});

/** The target image: ESP, a root filesystem with an fstab naming the data partition by label, and data of random files. */
async function targetImage(dir: string): Promise<{ image: string; digest: string }> {
  const root = join(dir, 'root');
  mkdirSync(join(root, 'etc'), { recursive: true });
  writeFileSync(join(root, 'etc', 'fstab'), 'PARTLABEL=root / ext4 defaults 0 1\nPARTLABEL=data /data ext4 defaults 0 2\n');
  const data = join(dir, 'data');
  mkdirSync(join(data, 'files'), { recursive: true });
  // In name order, as the guest's `sha256sum *` lists them.
  const lines: string[] = [];
  for (let i = 0; i < 40; i++) {
    const name = `f${String(i).padStart(3, '0')}.bin`;
    const b = randomBytes(i % 4 === 0 ? 2 * MiB : 512 * 1024 + i * 1000);
    writeFileSync(join(data, 'files', name), b);
    lines.push(`${createHash('sha256').update(b).digest('hex')}  ${name}\n`);
  }
  const digest = createHash('sha256').update(lines.join('')).digest('hex');
  await buildEsp(join(dir, 'esp.img'), 8 * MiB, 'ESP', '12345678', {}, 1_700_000_000);
  await buildExt4(join(dir, 'root.img'), 16 * MiB, 'rootfs', 'c0de0000-0000-4000-8000-000000000001', root, 1_700_000_000);
  // Most of it empty (holes in the image): reencryption still goes over all of it, which keeps it long enough to be cut.
  // 4 KiB blocks: with mke2fs' 1 KiB default below 512 MiB, resize2fs will not shrink it for the header.
  await buildExt4(join(dir, 'data.img'), 160 * MiB, 'datafs', 'c0de0000-0000-4000-8000-000000000002', data, 1_700_000_000, 4096);
  const image = join(dir, 'enc.img');
  await assembleGptImage(image, 'C0DE0000-0000-4000-8000-0000000000AA', [
    { image: join(dir, 'esp.img'), type: ESP_TYPE, uuid: 'C0DE0000-0000-4000-8000-000000000011', name: 'esp' },
    { image: join(dir, 'root.img'), type: LINUX_ROOT_X86_64_TYPE, uuid: 'C0DE0000-0000-4000-8000-000000000012', name: 'root' },
    { image: join(dir, 'data.img'), type: LINUX_DATA_TYPE, uuid: 'C0DE0000-0000-4000-8000-000000000013', name: 'data' },
  ]);
  writeFileSync(`${image}.bmap`, formatBmap(await createBmap(image)));
  return { image, digest };
}

test(
  'a device is bootstrapped with its data partition encrypted (plain, in place and write-through compared); the TPM alone opens it, the escrowed recovery key opens it, and a power cut during in-place encryption is resumed by the next run',
  { skip: skip.length > 0 && `needs ${skip.join(', ')} (scripts/setup.sh)`, timeout: 25 * 60_000 },
  async () => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run "npm run build" first`);
    const t0 = Date.now();
    const dir = tempDir('bootline-encryption-');
    const { image, digest } = await targetImage(dir);

    // Registered as a line does it (bootline image add), before the server starts on that data dir.
    const data = join(dir, 'server');
    execFileSync(process.execPath, [CLI, 'image', 'add', image, '--data', data, '--name', 'enc', '--bmap', `${image}.bmap`], { stdio: 'pipe' });
    line = await startTestServer({ data });
    const built = Date.now();
    const manifest = await buildInstaller({ ...parseBuildOptions({ out: INSTALLER, cache: DEFAULT_LAB_CACHE, agent: CLI, zstdLevel: '3' }), log: (l) => process.stderr.write(`encryption: ${l}\n`) });
    note(`installer (built or found up to date): ${((Date.now() - built) / 1000).toFixed(1)} s, initrd ${(manifest.files['initrd.img'].bytes / 1e6).toFixed(1)} MB`);
    mkdirSync(join(line.data, 'installer'), { recursive: true });
    for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(INSTALLER, f), join(line.data, 'installer', f));

    const boot1 = [
      deploy('in-place-deploy'),
      encrypt('in-place-encrypt', 'in-place'),
      script('in-place-check', CHECK('tpm')),
      deploy('write-through-deploy'),
      encrypt('write-through-encrypt', 'auto', 'data:/data:reencrypt:expand'),
      script('write-through-check', CHECK('tpm')),
    ];
    const put1 = await line.admin('PUT', '/api/v1/plans/enc', plan(boot1, 'reboot'));
    assert.equal(put1.status, 200, put1.text);
    assert.equal((await line.admin('POST', '/api/v1/rules', { match: 'default', action: 'run', plan: 'enc', priority: 100 })).status, 201);

    const started = Date.now();
    note(`before the first boot (image, installer, server): ${((started - t0) / 1000).toFixed(0)} s`);
    // Boot 2's kernel took 86-99 s to reach /init with QEMU's default code buffer.
    lab = await startLab({ devices: 1, serverUrl: line.url, diskSize: '512M', memoryMiB: 1536, tcgCodeBufferMiB: REBOOT_TCG_CODE_BUFFER_MIB, log: () => {} });
    const d = lab.devices[0]!;
    const tail = () => readFileSync(d.serialLog, 'latin1').split('\n').slice(-40).join('\n');
    const until = async <T>(what: string, ms: number, f: () => Promise<T | undefined>): Promise<T> => {
      const end = Date.now() + ms;
      for (;;) {
        const v = await f();
        if (v !== undefined) return v;
        if (Date.now() > end || !lab!.isRunning(d)) throw new Error(`${what}: not within ${ms / 1000} s; serial console tail:\n${tail()}`);
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    type Device = { id: string; state: string; currentRun: string | null };
    type Run = { id: string; status: string | null; startedAt: string };
    const device = async () => ((await line!.admin('GET', '/api/v1/devices')).json as Device[])[0];
    const runsOf = async (id: string) => ((await line!.admin('GET', `/api/v1/devices/${id}/runs`)).json as Run[]).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
    const eventsOf = async (runId: string) => (await line!.admin('GET', `/api/v1/runs/${runId}/events?limit=10000`)).json as EventRecord[];
    const logLines = (ev: EventRecord[]) => ev.filter((e) => e.type === 'log').map((e) => `${e.body.task ?? ''}: ${e.body.message ?? ''}`);
    const value = (ev: EventRecord[], task: string, key: string) =>
      logLines(ev)
        .find((l) => l.startsWith(`${task}: ${key}`))
        ?.slice(task.length + 2 + key.length);
    const duration = (ev: EventRecord[], task: string) => ev.find((e) => e.type === 'task-end' && e.body.task === task)?.body.durationMs ?? NaN;

    // Boot 1: the three ways, one after the other.
    const dev = await until('boot 1 succeeds', 900_000, async () => {
      const x = await device();
      if (x?.state === 'failed') throw new Error(`boot 1 failed:\n${logLines(await eventsOf(x.currentRun!)).slice(-25).join('\n')}`);
      return x?.state === 'succeeded' ? x : undefined;
    });
    note(`boot 1: QEMU start to success ${((Date.now() - started) / 1000).toFixed(0)} s`);
    const [run1] = await runsOf(dev.id);
    const ev1 = await eventsOf(run1!.id);
    const taskSeconds = (ev: EventRecord[]) => ev.filter((e) => e.type === 'task-end').reduce((n, e) => n + (e.body.durationMs ?? 0), 0) / 1000;
    note(`boot 1: its tasks took ${taskSeconds(ev1).toFixed(0)} s of that`);
    for (const task of ['in-place-check', 'write-through-check']) {
      assert.equal(value(ev1, task, 'digest: '), digest, `${task}: the TPM alone opened the volume and every file is the image's\n${logLines(ev1).join('\n')}`);
      assert.equal(value(ev1, task, 'luks: '), '2 keyslots, tokens systemd-recovery+systemd-tpm2', 'a recovery key and the TPM; the temporary key is gone');
      assert.match(value(ev1, task, 'crypttab: ') ?? '', /^data UUID=[0-9a-f-]{36} none luks,discard,tpm2-device=auto$/);
      assert.match(value(ev1, task, 'fstab: ') ?? '', /^\/dev\/mapper\/data \/data ext4 defaults 0 2$/);
    }
    // expand: the write-through volume (and its filesystem) reach the end of the 512 MiB disk; the in-place one stays at 160 MiB less its header.
    const fsKiB = (task: string) => Number(value(ev1, task, 'filesystem: ')?.replace(' KiB', ''));
    assert.ok(fsKiB('write-through-check') > 400 * 1024, `expanded: ${fsKiB('write-through-check')} KiB`);
    assert.ok(fsKiB('in-place-check') < 160 * 1024, `not expanded: ${fsKiB('in-place-check')} KiB`);
    const plain = duration(ev1, 'in-place-deploy');
    const inPlace = duration(ev1, 'in-place-deploy') + duration(ev1, 'in-place-encrypt');
    const writeThrough = duration(ev1, 'write-through-deploy') + duration(ev1, 'write-through-encrypt');
    note(`image deployed, no encryption (the in-place run's deploy): ${(plain / 1000).toFixed(1)} s`);
    note(`deployed, then encrypted in place: ${(inPlace / 1000).toFixed(1)} s (deploy ${(duration(ev1, 'in-place-deploy') / 1000).toFixed(1)} + encrypt ${(duration(ev1, 'in-place-encrypt') / 1000).toFixed(1)})`);
    note(`write-through: ${(writeThrough / 1000).toFixed(1)} s (deploy ${(duration(ev1, 'write-through-deploy') / 1000).toFixed(1)} + keys ${(duration(ev1, 'write-through-encrypt') / 1000).toFixed(1)})`);

    // The write-through volume's recovery key, as an admin gets it from the server.
    const keys = ((await line.admin('GET', `/api/v1/devices/${dev.id}/recovery-keys`)).json as { volumeUuid: string; runId: string | null; createdAt: string }[]).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    assert.equal(keys.length, 2, 'two volumes escrowed in boot 1 (in place, then write-through), each under its own LUKS UUID');
    assert.deepEqual(keys.map((k) => k.runId), [run1!.id, run1!.id]);
    const revealed = await line.admin('POST', `/api/v1/devices/${dev.id}/recovery-keys/${keys.at(-1)!.volumeUuid}/reveal`);
    assert.equal(revealed.status, 200, revealed.text);
    const rk = (revealed.json as { recoveryKey: string }).recoveryKey;

    // Boot 2: the recovery key opens it; then deployed again and cut during in-place encryption.
    const boot2 = [script('recovery-check', CHECK('recovery'), { RK: rk }), deploy('deploy-again'), encrypt('in-place-cut', 'in-place'), script('after-cut-check', CHECK('tpm'))];
    assert.equal((await line.admin('PUT', '/api/v1/plans/enc', plan(boot2, 'reboot'))).status, 200);
    assert.equal((await line.admin('POST', `/api/v1/devices/${dev.id}/reprovision`)).status, 204);
    const reprovisioned = Date.now();
    // When boot 2's stages show on the console: with QEMU's default code buffer its kernel took
    // far longer to reach /init than boot 1's or boot 3's.
    const serialFrom = statSync(d.serialLog).size;
    const marks = ['iPXE 1', '.ipxe... ok', 'vmlinuz... ', 'initrd.img... ', 'Linux version', 'Run /init', 'starting the agent', 'enrolled with'];
    const seenAt = new Map<string, number>();
    const watch = setInterval(() => {
      const text = readFileSync(d.serialLog, 'latin1').slice(serialFrom);
      for (const m of marks) if (!seenAt.has(m) && text.includes(m)) seenAt.set(m, Date.now() - reprovisioned);
    }, 250).unref(); // a failed wait below must not keep the process alive
    const run2 = await until('boot 2 starts its run', 600_000, async () => (await runsOf(dev.id))[1]);
    note(`boot 2: reprovisioned to run start ${((Date.now() - reprovisioned) / 1000).toFixed(0)} s`);
    clearInterval(watch);
    note(`boot 2 serial: ${[...seenAt].map(([m, t]) => `${JSON.stringify(m)} ${(t / 1000).toFixed(1)} s`).join(', ')}`);
    const run2Seen = Date.now();
    await until('boot 2 is encrypting in place', 600_000, async () => {
      const ev = await eventsOf(run2.id);
      if (ev.some((e) => e.type === 'task-end' && e.body.status === 'failed')) throw new Error(`boot 2 failed:\n${logLines(ev).slice(-25).join('\n')}`);
      return logLines(ev).some((l) => l.startsWith('in-place-cut: ') && /encrypting in place/.test(l)) ? true : undefined;
    });
    note(`boot 2: run start to encrypting in place ${((Date.now() - run2Seen) / 1000).toFixed(0)} s, of which recovery-check and deploy-again took ${taskSeconds(await eventsOf(run2.id)).toFixed(0)} s`);
    // The plan after the power cut: encrypt the disk as it is (a journal in RAM is lost with the power).
    const boot3 = [encrypt('in-place-cut', 'in-place'), script('after-cut-check', CHECK('tpm'))];
    assert.equal((await line.admin('PUT', '/api/v1/plans/enc', plan(boot3, 'poweroff'))).status, 200);
    await new Promise((r) => setTimeout(r, 1500));
    await lab.qmp(d, 'system_reset');
    const cutAt = Date.now();
    const ev2 = await eventsOf(run2.id);
    assert.equal(value(ev2, 'recovery-check', 'digest: '), digest, `the escrowed recovery key opened the volume\n${logLines(ev2).join('\n')}`);
    assert.equal(ev2.some((e) => e.type === 'task-end' && e.body.task === 'in-place-cut'), false, 'the cut came before the encryption ended');

    // Boot 3: resumed, intact.
    assert.equal(await lab.waitForExit(d, 900_000), true, `boot 3 powered off after its run:\n${tail()}`);
    note(`boot 3: reset to power-off ${((Date.now() - cutAt) / 1000).toFixed(0)} s`);
    const runs = await runsOf(dev.id);
    const ev3 = await eventsOf(runs.at(-1)!.id);
    note(`boot 3: its tasks took ${taskSeconds(ev3).toFixed(0)} s of that`);
    assert.equal(runs.at(-1)!.status, 'ok', logLines(ev3).join('\n'));
    assert.ok(logLines(ev3).some((l) => /in-place-cut: \/dev\/vda3: resuming the interrupted encryption/.test(l)), `the run resumed the reencryption:\n${logLines(ev3).join('\n')}`);
    assert.equal(value(ev3, 'after-cut-check', 'digest: '), digest, 'every file intact after the power cut');
    assert.equal(value(ev3, 'after-cut-check', 'luks: '), '2 keyslots, tokens systemd-recovery+systemd-tpm2');
    note(`whole test ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  },
);
