// The server is its own bundle (dist/bootline-server.mjs, with node_modules beside it), so
// the agent's single file stays free of Fastify and the database drivers. The CLI loads it
// only for the commands that need it.
import type * as ServerMain from '../server/main.ts';

declare const BOOTLINE_SERVER_ENTRY: string | undefined;

export type ServerModule = typeof ServerMain;

export async function loadServerModule(): Promise<ServerModule> {
  const entry = typeof BOOTLINE_SERVER_ENTRY === 'string' ? new URL(BOOTLINE_SERVER_ENTRY, import.meta.url).href : new URL('../server/main.ts', import.meta.url).href;
  try {
    return (await import(entry)) as ServerModule;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ERR_MODULE_NOT_FOUND') {
      throw new Error(`the server is not installed beside this agent (${err.message.split('\n')[0]}): run it from a checkout after npm ci, or install the server package`);
    }
    throw e;
  }
}
