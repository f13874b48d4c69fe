// A TCP proxy for the http source tests: connection n is cut (or goes silent) after plan[n]
// answer bytes, headers included, so resumes can be tried at exact offsets.
import { startTcpRelay } from '../../src/lab/tcp-relay.ts';

export type Step = { cutAfter: number } | { stallAfter: number } | undefined;

export interface Proxy {
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, plan: Step[]): Promise<Proxy> {
  let count = 0;
  const relay = await startTcpRelay(targetPort, (client, upstream) => {
    const step = plan[count++];
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
  return { url: relay.url, connections: () => count, close: relay.close };
}
