// A program's output, read into reused segments over a unix socket pair, so that the program
// keeps writing while the consumer works on what it wrote before.
//
// Not a pipe: a pipe holds 64 KiB and node cannot ask for more (F_SETPIPE_SZ), so the writer
// stopped after every 64 KiB until node had woken up and read it. A unix stream socket takes
// about 200 KiB (net.core.wmem_default). Measured, zstd -dc of the benchmark's 2 GiB image
// counting the bytes in node (page cache warm): zstd alone to /dev/null 2.6 s; through this
// socket pair into these segments 2.55-2.6 s; through a FIFO 3.4-3.6 s, into one buffer or
// into these segments alike; through node's own child stdout (a socket pair, but a new 64 KiB
// buffer per read) 3.0 s.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type NetConnectOpts, type Socket } from 'node:net';
import { segments, type SegmentOptions, type Segments } from '../socket-segments.ts';

export type { SegmentOptions, Segments };

/**
 * A connected pair of unix stream sockets (abstract namespace: nothing on disk): `writeEnd` is for
 * a child's stdio (close it once the child is started), `reader` reads what arrives at the other end.
 */
export async function toolOutput(opts: SegmentOptions = {}): Promise<{ writeEnd: Socket; reader: Segments }> {
  const name = `\0bootline-out-${process.pid}-${randomBytes(8).toString('hex')}`;
  const server = createServer({ pauseOnConnect: true });
  try {
    server.listen(name);
    await once(server, 'listening');
    const accepted = once(server, 'connection') as Promise<[Socket]>;
    let client: Socket | undefined;
    // `onread` is documented for sockets; @types/node only declares it on some connect options.
    const reader = segments((onread) => (client = connect({ path: name, onread } as unknown as NetConnectOpts)), opts);
    const refused = once(client as unknown as Socket, 'error').then(([e]) => Promise.reject(e as Error));
    const [writeEnd] = await Promise.race([accepted, refused]);
    return { writeEnd, reader };
  } finally {
    server.close();
  }
}
