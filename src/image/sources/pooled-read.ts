// Reading a local file from an offset with positional reads into two reused buffers: the next
// read runs while the consumer works on the current chunk, and nothing is allocated per chunk.
import { open } from 'node:fs/promises';

/** Large reads: the consumer is a disk writer, and small chunks cost syscalls. */
const READ_SIZE = 1024 * 1024;

/**
 * The bytes of `path` from `offset` to its end. Each yielded chunk is a view of a reused buffer:
 * it is valid only until the consumer asks for the next one (copy what must outlive that).
 */
export async function* readPooled(path: string, offset: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`invalid offset ${offset}`);
  signal?.throwIfAborted();
  const fh = await open(path, 'r');
  const bufs: [Buffer, Buffer] = [Buffer.allocUnsafe(READ_SIZE), Buffer.allocUnsafe(READ_SIZE)];
  let pos = offset;
  let i: 0 | 1 = 0;
  let pending: Promise<{ bytesRead: number }> = fh.read(bufs[0], 0, READ_SIZE, pos);
  try {
    for (;;) {
      const { bytesRead } = await pending;
      if (bytesRead === 0) return;
      signal?.throwIfAborted();
      const chunk = bufs[i].subarray(0, bytesRead);
      pos += bytesRead;
      i = i === 0 ? 1 : 0;
      // Read ahead into the other buffer; the one just filled is the consumer's until it asks again.
      pending = fh.read(bufs[i], 0, READ_SIZE, pos);
      yield chunk;
    }
  } finally {
    // A read may still be in flight when the consumer stops early.
    await pending.catch(() => undefined);
    await fh.close();
  }
}
