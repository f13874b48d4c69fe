// Health, metrics and the OpenAPI document: the routes outside /api/v1.
import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../app.ts';

export function metaRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get('/healthz', { schema: { hide: true } }, async () => {
    await ctx.store.countAdminTokens();
    return { ok: true };
  });
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.type(ctx.metrics.registry.contentType);
    return ctx.metrics.registry.metrics();
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
