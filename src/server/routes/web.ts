// The dashboard's built files (dist/web, made by `npm run build`): the page at `/` and its
// hashed assets at /assets/. Public like any login page; every API call the page makes
// needs the admin credentials the operator logs in with.
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/web beside the server bundle (dist/bootline-server.mjs), or from the sources (src/server/routes). */
const CANDIDATES = [join(here, 'web'), resolve(here, '..', '..', '..', 'dist', 'web')];

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
  '.json': 'application/json',
  '.map': 'application/json',
};

/** Only the page's own files: no inline script, no other origin (an event message is never markup). */
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

export function findWebRoot(): string | undefined {
  return CANDIDATES.find((d) => existsSync(join(d, 'index.html')));
}

export function webRoutes(app: FastifyInstance, root = findWebRoot()): void {
  // The asset names are read once: a file name from a request is looked up, never joined into a path.
  const assets = new Map<string, Buffer>();
  let index: Buffer | undefined;
  if (root) {
    index = readFileSync(join(root, 'index.html'));
    const dir = join(root, 'assets');
    if (existsSync(dir)) for (const f of readdirSync(dir)) assets.set(f, readFileSync(join(dir, f)));
  }
  const secure = (reply: FastifyReply) => reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');

  app.get('/', { schema: { hide: true } }, async (_req, reply) => {
    if (!index) {
      return reply
        .code(503)
        .type('text/plain; charset=utf-8')
        .send('The dashboard is not built: run `npm run build` (it writes dist/web), then restart the server. The API is at /api/v1 (see /openapi.json).\n');
    }
    return secure(reply).type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(index);
  });

  app.get<{ Params: { file: string } }>(
    '/assets/:file',
    { schema: { hide: true, params: Type.Object({ file: Type.String({ pattern: '^[A-Za-z0-9._-]+$' }) }) } },
    async (req, reply) => {
      const body = assets.get(req.params.file);
      if (!body) return reply.code(404).send({ error: 'not-found', message: `no dashboard asset ${req.params.file}` });
      const ext = req.params.file.slice(req.params.file.lastIndexOf('.'));
      // Built file names carry a content hash: a new build has new names.
      return secure(reply).type(TYPES[ext] ?? 'application/octet-stream').header('cache-control', 'public, max-age=31536000, immutable').send(body);
    },
  );
}
