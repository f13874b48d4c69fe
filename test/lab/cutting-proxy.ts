// A TCP proxy on 127.0.0.1 in front of the line server that understands just enough HTTP/1.1
// to know which request a keep-alive connection is answering, and drops the connection in
// the middle of the answers whose path matches — a network that fails mid-download, for the
// downloads that are meant to survive it (images), not for those that cannot (iPXE's).
import { startTcpRelay } from '../../src/lab/tcp-relay.ts';

export interface CuttingProxy {
  url: string;
  /** Connections cut so far, with the path being answered and the bytes relayed before the cut. */
  cuts: { path: string; afterBytes: number }[];
  close(): Promise<void>;
}

export interface CutPlan {
  /** Which answers to cut (by request path). */
  match: RegExp;
  /** Cut after this many bytes of the answer, one entry per cut, in order. */
  afterBytes: number[];
}

export async function startCuttingProxy(targetPort: number, plan: CutPlan): Promise<CuttingProxy> {
  const cuts: CuttingProxy['cuts'] = [];
  const relay = await startTcpRelay(targetPort, (client, upstream) => {
    let path = '';
    let relayed = 0;
    client.on('data', (chunk: Buffer) => {
      // A request line starts a new answer on this connection.
      const m = /^(?:GET|HEAD|POST|PUT|DELETE) (\S+) HTTP\/1\.[01]\r\n/.exec(chunk.toString('latin1', 0, Math.min(chunk.length, 2048)));
      if (m) {
        path = m[1]!;
        relayed = 0;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      const limit = plan.afterBytes[cuts.length];
      if (limit !== undefined && plan.match.test(path) && relayed + chunk.length > limit) {
        const part = chunk.subarray(0, Math.max(0, limit - relayed));
        cuts.push({ path, afterBytes: limit });
        client.write(part, () => client.destroy());
        upstream.destroy();
        return;
      }
      relayed += chunk.length;
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    upstream.on('end', () => client.end());
  });
  return { url: relay.url, cuts, close: relay.close };
}
