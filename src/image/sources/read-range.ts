// A few bytes from inside a seekable source (its end, for a format's trailer), read before the
// image is streamed from its start: one ranged request over the network, one read of a file.
import type { Source } from '../types.ts';

/** Bytes `offset` to `offset + length` of `source`; shorter when the source ends first. */
export async function readRange(source: Source, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
  const stream = await source.open(offset, signal);
  const parts: Buffer[] = [];
  let got = 0;
  try {
    for await (const c of stream as AsyncIterable<Buffer>) {
      parts.push(c);
      got += c.length;
      if (got >= length) break;
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(parts).subarray(0, length);
}
