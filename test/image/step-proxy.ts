// A TCP proxy for the http source tests: connection n is cut (or goes silent) after plan[n]
// answer bytes, headers included, so resumes can be tried at exact offsets.
import net from 'node:net';

export type Step = { cutAfter: number } | { stallAfter: number } | undefined;

export interface Proxy {
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, plan: Step[]): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((client) => {
    const step = plan[count++];
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    const limit = step && ('cutAfter' in step ? step.cutAfter : step.stallAfter);
    let sent = 0;
    let stopped = false;
    upstream.on('data', (chunk: Buffer) => {
      if (stopped) return;
      if (limit !== undefined && step && sent + chunk.length >= limit) {
        stopped = true;
        const part = chunk.subarray(0, limit - sent);
        sent = limit;
        if ('cutAfter' in step) {
          // Flush what the client may have, then drop the connection mid-body.
          client.write(part, () => client.destroy());
        } else {
          // Stall: the connection stays open and silent.
          client.write(part);
          upstream.pause();
        }
        return;
      }
      sent += chunk.length;
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => !stopped && upstream.resume());
      }
    });
    upstream.on('end', () => client.end());
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => count,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
