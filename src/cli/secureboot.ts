// `bootline secureboot keys create|esl|auth`: option parsing only; the work is in src/secureboot/.
import { Option, type Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { authCommand, eslCommand } from '../secureboot/commands.ts';
import { formatTimestamp } from '../secureboot/efi-time.ts';
import { GUIDS, parseGuid } from '../secureboot/guid.ts';
import { createKeys } from '../secureboot/keys.ts';

const collect = (v: string, prev: string[] = []) => [...prev, v];

function positiveInt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1) throw new Error(`${name} ${v}: expected a whole number of days, at least 1`);
  return n;
}

export function registerSecureboot(program: Command): void {
  const sb = program.command('secureboot').description('Secure Boot keys, signature lists and signed variable updates (efitools-compatible)');

  const keys = sb.command('keys').description('key pairs for PK, KEK and db');
  keys
    .command('create')
    .description('create PK, KEK and db key pairs, self-signed certificates, their signature lists and signed updates')
    .requiredOption('--out <dir>', 'directory for the keys (must be new or empty)')
    .addOption(new Option('--bits <n>', 'RSA key size').choices(['2048', '4096']).default('2048'))
    .option('--subject-prefix <text>', 'start of each certificate\'s common name, e.g. your company', 'bootline')
    .option('--days <n>', 'validity of the certificates in days', '3650')
    .option('--owner <guid>', 'owner GUID of the signature lists (default: a new random GUID, saved in DIR/GUID)')
    .option('--force', 'write into a non-empty directory, replacing keys of the same names')
    .addHelpText(
      'after',
      '\nWrites PK, KEK and db as .key (private, PEM, mode 0600), .crt (PEM), .cer (DER), .esl (signature list)\n' +
        'and .auth (signed update: PK and KEK signed by PK, db by KEK), and GUID. Only the .auth (and .esl)\n' +
        'files go to the devices; keep the .key files off the line.',
    )
    .action(async (o: Record<string, string | boolean | undefined>) => {
      const owner = (o.owner as string | undefined) ?? randomUUID();
      parseGuid(owner, '--owner');
      const days = positiveInt('--days', o.days as string);
      process.stderr.write(`generating 3 RSA ${o.bits as string}-bit key pairs${o.bits === '4096' ? ' (may take a while)' : ''}…\n`);
      const r = await createKeys({
        out: o.out as string,
        bits: Number(o.bits) as 2048 | 4096,
        subjectPrefix: o.subjectPrefix as string,
        days,
        owner,
        force: o.force === true,
      });
      process.stdout.write(`created in ${o.out as string} (owner GUID ${owner}):\n${r.files.map((f) => `  ${f}`).join('\n')}\n`);
    });

  sb.command('esl')
    .description('turn certificates (and SHA-256 hashes) into an EFI signature list, as cert-to-efi-sig-list')
    .option('--cert <file>', 'certificate, PEM or DER; repeat to append more (e.g. Microsoft\'s, given as files)', collect, [])
    .option('--sha256 <hex>', 'SHA-256 hash of an image (for dbx); repeat for more', collect, [])
    .option('--owner <guid>', 'owner GUID of the signatures', GUIDS.zero)
    .requiredOption('-o, --out <file>', 'the signature list to write')
    .action(async (o: { cert: string[]; sha256: string[]; owner: string; out: string }) => {
      const r = await eslCommand({ certs: o.cert, hashes: o.sha256, owner: o.owner, out: o.out });
      process.stdout.write(`${o.out}: ${r.entries} signature(s), ${r.bytes} bytes\n`);
    });

  sb.command('auth')
    .description('sign a signature list as a time-based authenticated update of PK, KEK, db or dbx, as sign-efi-sig-list')
    .addOption(new Option('--var <name>', 'the variable to update').choices(['PK', 'KEK', 'db', 'dbx']).makeOptionMandatory())
    .requiredOption('--esl <file>', 'the new value: an EFI signature list')
    .requiredOption('--key <file>', 'private key of the signer (PK for PK and KEK, KEK for db and dbx)')
    .requiredOption('--cert <file>', "the signer's certificate, PEM or DER")
    .option('--timestamp <time>', "'YYYY-MM-DD HH:MM:SS' (UTC); default now, or zero with --append")
    .option('--append', 'an append update (APPEND_WRITE) instead of a replacement')
    .requiredOption('-o, --out <file>', 'the .auth file to write')
    .action(async (o: { var: string; esl: string; key: string; cert: string; timestamp?: string; append?: boolean; out: string }) => {
      const r = await authCommand({ variable: o.var, esl: o.esl, key: o.key, cert: o.cert, append: o.append === true, out: o.out, ...(o.timestamp !== undefined ? { timestamp: o.timestamp } : {}) });
      process.stdout.write(`${o.out}: signed update of ${o.var} by ${r.signer}, timestamp ${formatTimestamp(r.time)}, ${r.bytes} bytes\n`);
    });
}
