// `bootline secureboot keys create`: a PK, KEK and db key pair with self-signed
// certificates, and what enrolling them needs: their signature lists and the signed
// updates (PK signed by PK, KEK by PK, db by KEK), all in one directory.
import { generateKeyPair, randomBytes, type KeyObject } from 'node:crypto';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeAuth } from './auth.ts';
import { timeOfDate, type EfiTime } from './efi-time.ts';
import { x509List } from './esl.ts';
import { InputFileError, writeAtomic } from './files.ts';
import { selfSignedCertificate } from './x509.ts';

const generate = promisify(generateKeyPair);

export const KEY_ROLES = [
  { variable: 'PK', title: 'Platform Key' },
  { variable: 'KEK', title: 'Key Exchange Key' },
  { variable: 'db', title: 'Signature Database Key' },
] as const;

export interface CreateKeysOptions {
  out: string;
  bits: 2048 | 4096;
  subjectPrefix: string;
  days: number;
  /** Owner GUID of the signature lists. */
  owner: string;
  force: boolean;
  /** Of certificates and signed updates (tests); default now. */
  now?: Date;
}

export interface CreatedKeys {
  files: string[];
}

async function isNonEmptyDir(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') throw new InputFileError(`--out ${dir} exists and is not a directory`);
    throw e;
  }
}

const pemOf = (label: string, der: Buffer) => `-----BEGIN ${label}-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END ${label}-----\n`;

export async function createKeys(o: CreateKeysOptions): Promise<CreatedKeys> {
  if (!o.force && (await isNonEmptyDir(o.out))) {
    throw new InputFileError(`--out ${o.out} is not empty: keys are never overwritten by accident. Give a new directory, or --force to replace its keys`);
  }
  await mkdir(o.out, { recursive: true, mode: 0o700 });
  const now = o.now ?? new Date();
  const notBefore = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + o.days * 86_400_000);
  const time: EfiTime = timeOfDate(now);
  // Key generation is the slow part (4096 bits: seconds each): all three at once.
  const pairs = await Promise.all(KEY_ROLES.map(() => generate('rsa', { modulusLength: o.bits })));
  const made = KEY_ROLES.map((role, i) => {
    const key: KeyObject = pairs[i]!.privateKey;
    const cert = selfSignedCertificate({ key, commonName: `${o.subjectPrefix} ${role.title}`.trim(), notBefore, notAfter, serial: randomBytes(16) });
    return { ...role, key, cert, esl: x509List(cert, o.owner) };
  });
  const [pk, kek] = made as [(typeof made)[0], (typeof made)[0]];
  const signer = { PK: pk, KEK: pk, db: kek } as const;
  const files: Array<[string, Buffer | string, number]> = [['GUID', `${o.owner}\n`, 0o644]];
  for (const m of made) {
    const s = signer[m.variable];
    files.push(
      [`${m.variable}.key`, m.key.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600],
      [`${m.variable}.crt`, pemOf('CERTIFICATE', m.cert), 0o644],
      [`${m.variable}.cer`, m.cert, 0o644],
      [`${m.variable}.esl`, m.esl, 0o644],
      [`${m.variable}.auth`, makeAuth({ variable: m.variable, esl: m.esl, key: s.key, certDer: s.cert, time }), 0o644],
    );
  }
  for (const [name, data, mode] of files) await writeAtomic(join(o.out, name), data, mode);
  return { files: files.map(([n]) => join(o.out, n)) };
}
