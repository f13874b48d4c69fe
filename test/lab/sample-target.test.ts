// The lab's sample target image: a GPT disk with a bootable ESP and a root file system of
// real files, its bmap and a zstd copy. (Booting it is the end-to-end test's job.)
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers.ts';
import { buildSampleTarget } from '../../src/lab/sample-target/build.ts';
import { TARGET_MARKER, targetInitScript } from '../../src/lab/sample-target/init-script.ts';
import { parseBmap } from '../../src/image/bmap/parse.ts';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('sample target image', () => {
  it('first boot prints the marker with its release and the SMBIOS serial, then powers off', () => {
    const s = targetInitScript('acme-2.1');
    assert.match(s, new RegExp(`echo "<2>${TARGET_MARKER} release=acme-2.1 serial=\\$serial" > /dev/kmsg`));
    assert.match(s, /serial=\$\(cat \/sys\/class\/dmi\/id\/product_serial/);
    assert.match(s, /poweroff -f/);
  });

  it('is a GPT disk (ESP + root), mapped by its bmap, with a zstd copy of the same bytes', async () => {
    const out = tempDir('bootline-sample-');
    const t = await buildSampleTarget({ out, rootFilesBytes: 8 << 20, diskBytes: 128 << 20, release: 'test-1' });
    assert.equal(statSync(t.image).size, 128 << 20);
    const table = JSON.parse(execFileSync('sfdisk', ['--json', t.image], { encoding: 'utf8' })).partitiontable;
    assert.equal(table.label, 'gpt');
    assert.deepEqual(
      table.partitions.map((p: { name: string; type: string }) => [p.name, p.type]),
      [
        ['esp', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'],
        ['root', '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709'],
      ],
    );
    // The ESP boots systemd-boot, which loads the kernel and the initramfs beside it.
    const esp = table.partitions[0] as { start: number };
    const files = execFileSync('mdir', ['-b', '-s', '-i', `${t.image}@@${esp.start * 512}`, '::/'], { encoding: 'utf8', env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });
    for (const f of ['::/EFI/BOOT/BOOTX64.EFI', '::/vmlinuz', '::/initrd.img', '::/loader/entries/target.conf']) assert.ok(files.includes(f), `${f} in\n${files}`);
    // The root file system holds real files and the release.
    const root = table.partitions[1] as { start: number; size: number };
    const rootImg = join(out, 'root.ext4');
    execFileSync('dd', [`if=${t.image}`, `of=${rootImg}`, 'bs=512', `skip=${root.start}`, `count=${root.size}`, 'status=none']);
    assert.equal(execFileSync('debugfs', ['-R', 'cat /etc/bootline-sample-release', rootImg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }), 'test-1\n');
    // The bmap maps less than the disk, and more than the files; the .zst is the same image.
    const bmap = parseBmap(readFileSync(t.bmap, 'utf8'), t.bmap);
    assert.equal(bmap.imageSize, 128 << 20);
    assert.ok(t.mappedBytes > 8 << 20 && t.mappedBytes < 128 << 20, `${t.mappedBytes} mapped`);
    assert.equal(sha(execFileSync('zstd', ['-dc', t.zst], { maxBuffer: 256 << 20 })), sha(readFileSync(t.image)));
    // A second build with the same options reuses the first.
    const again = await buildSampleTarget({ out, rootFilesBytes: 8 << 20, diskBytes: 128 << 20, release: 'test-1' });
    assert.equal(statSync(again.zst).mtimeMs, statSync(t.zst).mtimeMs);
  });
});
