// The server's own secret (signs boot tokens): made once in the data dir, shared by every
// process that serves the same data dir.
import { mkdir, open, readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

export async function loadOrCreateSecret(dataDir: string): Promise<Buffer> {
  const path = join(dataDir, 'secret');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  try {
    const fh = await open(path, 'wx', 0o600);
    const secret = randomBytes(32);
    await fh.writeFile(secret);
    await fh.sync();
    await fh.close();
    return secret;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const secret = await readFile(path);
  if (secret.length < 32) throw new Error(`${path} is damaged (${secret.length} bytes, expected 32): remove it to make a new one (boot tokens handed out so far stop working)`);
  return secret;
}
