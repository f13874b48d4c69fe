// The first bytes of a local file: enough for detectCompression to read the magic.
import { open } from 'node:fs/promises';
import { DETECT_HEAD_BYTES } from './detect.ts';

export async function readFileHead(path: string): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(DETECT_HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
