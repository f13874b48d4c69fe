// The TCP plumbing of the lab's faulty networks (fault-proxy.ts and the tests' proxies): a
// listener on 127.0.0.1 that pairs each connection with one to the target, ends each side with
// the other, and can close everything at once. What flows between the two is the caller's.
import net from 'node:net';

export interface TcpRelay {
  url: string;
  port: number;
  /** Destroys every open connection, then stops listening. */
  close(): Promise<void>;
}

/** Listens on a free port; `pair` wires the data of each client and its upstream connection. */
export async function startTcpRelay(targetPort: number, pair: (client: net.Socket, upstream: net.Socket) => void): Promise<TcpRelay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    pair(client, upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
