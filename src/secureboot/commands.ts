// What `bootline secureboot esl` and `... auth` do, apart from option parsing: read and
// check every input first, then write the one output whole (nothing half-written).
import { readInput, readCertificate, readCertificates, readPrivateKey, writeAtomic, InputFileError } from './files.ts';
import { makeAuth } from './auth.ts';
import { parseTimestamp, timeOfDate, ZERO_TIME, type EfiTime } from './efi-time.ts';
import { decodeEsl, sha256List, x509List, EslError } from './esl.ts';
import { parseGuid } from './guid.ts';
import { isKeyVariable, KEY_VARIABLES, type KeyVariable } from './variables.ts';
import { describeCertificate, keyMatchesCertificate } from './x509.ts';

export interface EslCommand {
  certs: string[];
  /** dbx entries: SHA-256 hashes (hex) of images to forbid. */
  hashes: string[];
  owner: string;
  out: string;
}

/** One list per certificate (as `cat` of cert-to-efi-sig-list outputs), then one list of all hashes. */
export async function eslCommand(o: EslCommand): Promise<{ bytes: number; entries: number }> {
  if (o.certs.length === 0 && o.hashes.length === 0) throw new InputFileError('nothing to put in the list: give --cert FILE (several allowed) and/or --sha256 HEX');
  parseGuid(o.owner, '--owner');
  const lists: Buffer[] = [];
  for (const path of o.certs) for (const der of await readCertificates(path)) lists.push(x509List(der, o.owner));
  if (o.hashes.length) {
    const bad = o.hashes.find((h) => !/^[0-9a-fA-F]{64}$/.test(h));
    if (bad !== undefined) throw new InputFileError(`--sha256 "${bad}" is not a SHA-256 hash (64 hex digits)`);
    lists.push(sha256List(o.hashes.map((h) => Buffer.from(h, 'hex')), o.owner));
  }
  const esl = Buffer.concat(lists);
  await writeAtomic(o.out, esl);
  return { bytes: esl.length, entries: decodeEsl(esl).length };
}

export interface AuthCommand {
  variable: string;
  esl: string;
  key: string;
  cert: string;
  /** `YYYY-MM-DD HH:MM:SS`; default now (UTC), or zero for an append, as efitools. */
  timestamp?: string;
  append: boolean;
  out: string;
  now?: Date;
}

export async function authCommand(o: AuthCommand): Promise<{ bytes: number; time: EfiTime; signer: string }> {
  if (!isKeyVariable(o.variable)) throw new InputFileError(`--var ${o.variable}: expected one of ${KEY_VARIABLES.join(', ')} (case matters: UEFI names them so)`);
  const variable: KeyVariable = o.variable;
  const time = o.timestamp !== undefined ? parseTimestamp(o.timestamp) : o.append ? ZERO_TIME : timeOfDate(o.now ?? new Date());
  const esl = await readInput(o.esl, 'signature list');
  try {
    decodeEsl(esl, `signature list ${o.esl}`);
  } catch (e) {
    if (e instanceof EslError) throw new InputFileError(`${e.message} — make it with \`bootline secureboot esl\``);
    throw e;
  }
  const key = await readPrivateKey(o.key);
  const cert = await readCertificate(o.cert);
  if (!keyMatchesCertificate(key, cert)) {
    throw new InputFileError(`private key ${o.key} does not belong to certificate ${o.cert} ${describeCertificate(cert)}: give the key and certificate of the same pair`);
  }
  const auth = makeAuth({ variable, esl, key, certDer: cert, time, append: o.append });
  await writeAtomic(o.out, auth);
  return { bytes: auth.length, time, signer: describeCertificate(cert) };
}


