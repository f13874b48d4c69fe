// `bootline serve` and `bootline image add`: the server's entry points. Built as its own
// bundle (dist/bootline-server.mjs) so the agent's bundle carries none of this.
import { copyFile, mkdir, rename } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { resolveServerConfig, splitHostPort, type ServerConfig } from './config.ts';
import { openStore, redact } from './db/connect.ts';
import { openFeed } from './db/feed.ts';
import type { Store } from './db/store.ts';
import { buildApp } from './app.ts';
import { hashSecret, newSecret } from './credentials.ts';
import { loadOrCreateSecret } from './secret.ts';
import { escrowKeyring, escrowKeySource } from './escrow/key-file.ts';
import { defaultImageName, registerImage } from './images/register.ts';
import { dnsmasqProxyConfig } from './boot/dnsmasq.ts';
import { startTftpServer } from './tftp/server.ts';

export interface ServeOptions {
  config?: string;
  data?: string;
  listen?: string;
  db?: string;
  publicUrl?: string;
  tlsCert?: string;
  tlsKey?: string;
  tftp?: string;
  logLevel?: string;
  newAdminToken?: boolean;
  printDnsmasqConfig?: boolean;
}

export interface RunningServer {
  app: FastifyInstance;
  url: string;
  config: ServerConfig;
  /** Set when this start made the first admin token (shown once). */
  adminToken?: string;
  close(): Promise<void>;
}

function toConfig(o: ServeOptions): ServerConfig {
  if ((o.tlsCert === undefined) !== (o.tlsKey === undefined)) throw new Error('--tls-cert and --tls-key go together: give both, or neither');
  return resolveServerConfig(
    {
      data: o.data,
      listen: o.listen,
      db: o.db,
      publicUrl: o.publicUrl,
      logLevel: o.logLevel,
      tls: o.tlsCert ? { cert: o.tlsCert, key: o.tlsKey } : undefined,
      tftp: o.tftp ? { listen: o.tftp } : undefined,
    },
    o.config,
  );
}

async function ensureAdminToken(store: Store, force: boolean): Promise<string | undefined> {
  if (!force && (await store.countAdminTokens()) > 0) return undefined;
  const token = newSecret('admin');
  await store.addAdminToken(hashSecret(token));
  return token;
}

export async function startServer(o: ServeOptions, logger?: false): Promise<RunningServer> {
  const config = toConfig(o);
  await mkdir(config.data, { recursive: true, mode: 0o700 });
  const store = await openStore(config.db);
  try {
    await store.migrate();
  } catch (e) {
    await store.close();
    throw e;
  }
  const adminToken = await ensureAdminToken(store, o.newAdminToken === true);
  const secret = await loadOrCreateSecret(config.data);
  const feed = await openFeed(config.db, store);
  const escrowKey = escrowKeyring(escrowKeySource(config.data));
  const { app } = await buildApp({ store, feed, config, secret, escrowKey, ...(logger === false ? { logger: false } : {}) });
  const { host, port } = splitHostPort(config.listen);
  let tftp: Awaited<ReturnType<typeof startTftpServer>> | undefined;
  try {
    await app.listen({ host, port });
    if (config.tftp) {
      const t = splitHostPort(config.tftp.listen);
      const root = config.tftp.root ?? (await prepareTftpRoot(config.data));
      tftp = await startTftpServer({ root, host: t.host, port: t.port, log: app.log });
    }
  } catch (e) {
    await app.close();
    await feed.close();
    await store.close();
    throw e;
  }
  const addr = app.server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `${config.tls ? 'https' : 'http'}://${shownHost}:${actualPort}`;
  return {
    app,
    url,
    config,
    ...(adminToken ? { adminToken } : {}),
    async close() {
      await tftp?.close();
      await app.close();
      await feed.close();
      await store.close();
    },
  };
}

/** Debian's iPXE builds, for firmware that can only PXE: copied (ipxe.efi is a symlink out of /usr/lib/ipxe). */
const IPXE_DIR = '/usr/lib/ipxe';
const IPXE_FILES = ['ipxe.efi', 'snponly.efi', 'undionly.kpxe'];

async function prepareTftpRoot(dataDir: string): Promise<string> {
  const root = join(dataDir, 'tftp');
  await mkdir(root, { recursive: true });
  for (const f of IPXE_FILES) {
    if (existsSync(join(root, f)) || !existsSync(join(IPXE_DIR, f))) continue;
    await copyFile(join(IPXE_DIR, f), join(root, `${f}.tmp`));
    await rename(join(root, `${f}.tmp`), join(root, f));
  }
  return root;
}

/** `bootline serve`: runs until SIGINT/SIGTERM. */
export async function serve(o: ServeOptions): Promise<void> {
  if (o.printDnsmasqConfig) {
    const config = toConfig(o);
    const base = config.publicUrl ?? `http://${config.listen}`;
    process.stdout.write(dnsmasqProxyConfig({ serverIp: new URL(base).hostname, httpBaseUrl: base }));
    return;
  }
  const s = await startServer(o);
  // One write, so whoever reads the first line also has the token.
  process.stdout.write(
    `bootline server listening on ${s.url} (data ${s.config.data}, db ${redact(s.config.db)})\n` +
      (s.adminToken ? `admin token (shown once, stored hashed): ${s.adminToken}\n` : ''),
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await s.close();
}

export interface ImageAddOptions {
  data?: string;
  db?: string;
  config?: string;
  name?: string;
  imageVersion?: string;
  bmap?: string;
  signKey?: string;
  replace?: boolean;
}

/** `bootline image add`: registers an image file with the server's data dir and database. */
export async function imageAdd(file: string, o: ImageAddOptions): Promise<string> {
  const config = resolveServerConfig({ data: o.data, db: o.db }, o.config);
  const store = await openStore(config.db);
  try {
    await store.migrate();
    const name = o.name ?? defaultImageName(file);
    // A second file (another format of the same image) joins the image's record.
    const existing = await store.getImage(name);
    const image = await registerImage({
      dataDir: config.data,
      file,
      name,
      ...(existing ? { existing } : {}),
      ...(o.imageVersion ? { version: o.imageVersion } : {}),
      ...(o.bmap ? { bmap: o.bmap } : {}),
      ...(o.signKey ? { signKey: o.signKey } : {}),
      ...(o.replace ? { replace: true } : {}),
    });
    await store.putImage(image);
    return image.files.map((f) => `/images/${image.name}/${f.name}  ${f.size} bytes  sha256 ${f.sha256}`).join('\n');
  } finally {
    await store.close();
  }
}
