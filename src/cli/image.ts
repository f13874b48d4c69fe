// `bootline image copy|create|verify`: option parsing only; the engine is in src/image/.
// `copy` takes bmaptool's options with the same names, so that a bmaptool command line
// works with `bootline image copy` in its place.
import { Option, type Command } from 'commander';
import { loadServerModule } from './server-module.ts';
import { writeFile } from 'node:fs/promises';
import { runCopyCommand } from '../image/copy-command.ts';
import { createBmap } from '../image/create.ts';
import { formatBmap } from '../image/bmap/write.ts';
import { parseBmap } from '../image/bmap/parse.ts';
import { verifyRanges } from '../image/verify.ts';
import { readFile } from 'node:fs/promises';
import { generateKeyPair, keyId, sha256Payload, sign, SIGNATURE_SUFFIX } from '../image/signature.ts';

export function registerImage(program: Command, version: string): void {
  const image = program
    .command('image')
    .description('write, map and verify disk images (bmaptool-compatible)')
    .option('-q, --quiet', 'no progress output (as bmaptool -q)');

  image
    .command('copy')
    .description('stream an image onto a disk or file: sparse with a bmap, verified, resumable')
    .argument('<image>', 'path, file://, http(s)://, ftp://, s3://bucket/key, or - for stdin')
    .argument('<dest>', 'block device or file')
    .option('--bmap <path|url>', 'block map (default: <image>.bmap, then with extensions stripped)')
    .option('--nobmap', 'write every byte, do not look for a bmap')
    .option('--no-verify', 'do not check range checksums')
    .option('--psplash-pipe <fifo>', 'write PROGRESS/MSG commands for psplash to this FIFO')
    .option('--sha256 <hex>', 'check the whole decompressed image against this sha256 (without a bmap)')
    .option('--file-sha256 <hex>', 'check the image file as stored (compressed) against this sha256')
    .option('--no-sidecar', 'do not look for <image>.sha256sum, <image>.sha256 or SHA256SUMS')
    .option('--skip-identical', 'read the target first and write only ranges whose checksum differs')
    .addOption(new Option('--holes <mode>', 'unmapped blocks: skip (leave as they are), discard, or zero').choices(['skip', 'discard', 'zero']).default('skip'))
    .option('--ca <file>', 'PEM CA bundle for https')
    .option('--token <token>', 'bearer token for http(s)')
    .option('-H, --header <header...>', 'extra HTTP header "Name: value"')
    .option('--trusted-keys <file>', 'ed25519 public keys (PEM): refuse an image whose bmap (or sha256) is not signed by one of them')
    .option('--keyring <file>', 'GPG keyring: the bmap must carry a valid GPG signature (.asc/.sig or clearsigned), checked with gpgv')
    .option('--bmap-sig <path|url>', 'detached GPG signature of the bmap (default: <bmap>.asc, then <bmap>.sig)')
    .option('--no-sig-verify', 'do not check GPG signatures (as bmaptool); trusted ed25519 keys still apply')
    .option('--removable-device', 'accepted for bmaptool compatibility (removable targets are allowed)')
    .action(async (img: string, dest: string, o: Record<string, unknown>) => {
      const headers: Record<string, string> = {};
      for (const h of (o.header as string[] | undefined) ?? []) {
        const i = h.indexOf(':');
        if (i <= 0) throw new Error(`--header "${h}": expected "Name: value"`);
        headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
      }
      process.exitCode = await runCopyCommand({
        version,
        image: img,
        target: dest,
        bmap: o.nobmap ? false : (o.bmap as string | undefined),
        verify: o.verify !== false,
        holes: o.holes as 'skip' | 'discard' | 'zero',
        allowFile: true,
        ...(o.sha256 ? { sha256: o.sha256 as string } : {}),
        ...(o.fileSha256 ? { sourceSha256: o.fileSha256 as string } : {}),
        sidecar: o.sidecar !== false,
        skipIdentical: o.skipIdentical === true,
        ...(o.psplashPipe ? { psplashPipe: o.psplashPipe as string } : {}),
        quiet: image.opts().quiet === true,
        source: { ...(o.ca ? { ca: o.ca as string } : {}), ...(o.token ? { token: o.token as string } : {}), headers },
        trust: {
          ...(o.trustedKeys ? { trustedKeys: o.trustedKeys as string } : {}),
          ...(o.keyring ? { keyring: o.keyring as string } : {}),
          ...(o.bmapSig ? { bmapSig: o.bmapSig as string } : {}),
          noSigVerify: o.sigVerify === false,
        },
      });
    });

  image
    .command('create')
    .description('write the bmap of an image (format 2.0, sha256), mapping holes with SEEK_DATA/SEEK_HOLE')
    .argument('<image>', 'the raw (uncompressed) image file')
    .option('-o, --output <file>', 'write the bmap here instead of stdout')
    .action(async (img: string, o: { output?: string }) => {
      const text = formatBmap(await createBmap(img));
      if (o.output) await writeFile(o.output, text);
      else process.stdout.write(text);
    });

  image
    .command('keygen')
    .description('make an ed25519 key pair for signing images: <name>.key (keep secret) and <name>.pub (install on devices)')
    .argument('<name>', 'path prefix of the two files')
    .action(async (name: string) => {
      const { privatePem, publicPem } = generateKeyPair();
      await writeFile(`${name}.key`, privatePem, { mode: 0o600, flag: 'wx' });
      await writeFile(`${name}.pub`, publicPem, { flag: 'wx' });
      process.stdout.write(`wrote ${name}.key and ${name}.pub (key id ${keyId(publicPem)})\n`);
    });

  image
    .command('sign')
    .description(`sign a bmap (or, with --sha256, an image without one) with an ed25519 key: writes <file>${SIGNATURE_SUFFIX}`)
    .argument('<file>', 'the bmap, or the image when --sha256 is given')
    .requiredOption('--key <file>', 'ed25519 private key (PEM), e.g. from `bootline image keygen`')
    .option('--sha256 <hex>', 'sign this sha256 of the decompressed image instead of a bmap')
    .option('-o, --output <file>', `signature file (default <file>${SIGNATURE_SUFFIX})`)
    .action(async (file: string, o: { key: string; sha256?: string; output?: string }) => {
      const key = await readFile(o.key, 'utf8');
      const text = o.sha256 ? sign(sha256Payload(o.sha256), key, 'sha256') : sign(await readFile(file), key, 'bmap');
      const out = o.output ?? `${file}${SIGNATURE_SUFFIX}`;
      await writeFile(out, text);
      process.stdout.write(`wrote ${out}\n`);
    });

  image
    .command('add')
    .description("register an image with a server's data dir: served at /images/<name>/<file name>, its bmap beside it")
    .argument('<file>', 'the image file (raw or compressed); a raw sparse file without a bmap gets one')
    .option('--data <dir>', 'the server data directory (default ./bootline-data)')
    .option('--db <url>', 'the server database (default sqlite:<data>/bootline.db)')
    .option('--config <file>', 'the server settings file, for data and db')
    .option('--name <name>', 'image name (default: the file name without its extensions)')
    // Not --version: that is the program's (bootline --version), and commander reads it first.
    .option('--image-version <text>', 'a version to show beside the name')
    .option('--bmap <file>', 'its bmap (default: looked for beside the file, like bmaptool)')
    .option('--sign-key <file>', 'ed25519 private key: also write the signature over the bmap (or the sha256)')
    .option('--replace', 'replace an image file of the same name with different content')
    .action(async (file: string, o: Record<string, string | boolean | undefined>) => {
      const server = await loadServerModule();
      process.stdout.write(`${await server.imageAdd(file, o)}\n`);
    });

  image
    .command('verify')
    .description("read back a target's mapped ranges and check their checksums")
    .argument('<target>', 'block device or file')
    .requiredOption('--bmap <path>', 'the block map the target was written with')
    .action(async (target: string, o: { bmap: string }) => {
      const bmap = parseBmap(await readFile(o.bmap, 'utf8'), o.bmap);
      const r = await verifyRanges(target, bmap);
      if (r.ok) {
        process.stdout.write(`${target}: all ${bmap.ranges.length} ranges match ${o.bmap}\n`);
      } else {
        for (const b of r.bad) process.stderr.write(`${target}: blocks ${b.first}-${b.last} (bytes ${b.first * bmap.blockSize}-${(b.last + 1) * bmap.blockSize - 1}) do not match\n`);
        process.exitCode = 1;
      }
    });
}
