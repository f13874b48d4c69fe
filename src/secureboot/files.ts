// The build-host edges of the secureboot commands: reading certificates, keys and lists
// from files with errors that name the file and say what is wrong, and writing outputs
// whole or not at all (a temporary file renamed into place).
import { createPrivateKey, randomBytes, type KeyObject } from 'node:crypto';
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { certificatesFromBytes, CertificateError } from './x509.ts';

/** An input or output file problem, for the person at the command line. */
export class InputFileError extends Error {
  override name = 'InputFileError';
}

export async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    const b = await readFile(path);
    if (b.length === 0) throw new InputFileError(`${what} ${path} is empty`);
    return b;
  } catch (e) {
    if (e instanceof InputFileError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
    throw new InputFileError(`cannot read ${what} ${path}: ${why}`);
  }
}

/** The DER certificates of a PEM or DER file. */
export async function readCertificates(path: string): Promise<Buffer[]> {
  const bytes = await readInput(path, 'certificate');
  try {
    return certificatesFromBytes(bytes, `certificate ${path}`);
  } catch (e) {
    if (e instanceof CertificateError) throw new InputFileError(e.message);
    throw e;
  }
}

/** Exactly one certificate (a signer's). */
export async function readCertificate(path: string): Promise<Buffer> {
  const certs = await readCertificates(path);
  if (certs.length !== 1) throw new InputFileError(`certificate ${path} holds ${certs.length} certificates; give a file with only the signer's certificate`);
  return certs[0]!;
}

/** An unencrypted private key, PEM (PKCS#1 or PKCS#8) or DER (PKCS#8). */
export async function readPrivateKey(path: string): Promise<KeyObject> {
  const bytes = await readInput(path, 'private key');
  const pem = bytes.toString('latin1').includes('-----BEGIN');
  if (pem && /-----BEGIN CERTIFICATE-----/.test(bytes.toString('latin1')) && !/PRIVATE KEY-----/.test(bytes.toString('latin1'))) {
    throw new InputFileError(`private key ${path} holds a certificate, not a private key: give the .key file`);
  }
  try {
    const key = pem ? createPrivateKey({ key: bytes, format: 'pem' }) : createPrivateKey({ key: bytes, format: 'der', type: 'pkcs8' });
    if (key.asymmetricKeyType !== 'rsa') throw new InputFileError(`private key ${path} is a ${key.asymmetricKeyType} key; Secure Boot keys here are RSA (2048 or 4096 bits)`);
    return key;
  } catch (e) {
    if (e instanceof InputFileError) throw e;
    const msg = (e as Error).message;
    const hint = /passphrase|encrypted/i.test(msg) ? ' (it is encrypted: give an unencrypted key)' : '';
    throw new InputFileError(`private key ${path} is not a readable private key (PEM or DER)${hint}: ${msg}`);
  }
}

/** Writes `data` to `path` through a temporary file in the same directory, so `path` is whole or untouched. */
export async function writeAtomic(path: string, data: Buffer | string, mode = 0o644): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'its directory does not exist' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
    throw new InputFileError(`cannot write ${path}: ${why}`);
  }
}
