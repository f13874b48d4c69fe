// The server's HTTP application: Fastify with every route's schemas declared (so the
// OpenAPI document is generated from the same schemas the routes validate with).
import { readFileSync } from 'node:fs';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify';
import swagger from '@fastify/swagger';
import type { Store } from './db/store.ts';
import type { LiveFeed } from './db/feed.ts';
import type { ServerConfig } from './config.ts';
import { createAuthenticator, type Authenticator } from './auth.ts';
import { createMetrics, type ServerMetrics } from './metrics.ts';
import { HttpError } from './errors.ts';
import { drainBody } from './drain-refused-body.ts';
import { metaRoutes } from './routes/meta.ts';
import { deviceRoutes } from './routes/device.ts';
import { adminRoutes } from './routes/admin.ts';
import { streamRoutes } from './routes/stream.ts';
import { bootRoutes } from './routes/boot.ts';
import { dashboardRoutes } from './routes/dashboard.ts';
import { webRoutes } from './routes/web.ts';
import { imageRoutes } from './images/serve.ts';
import { adminRecoveryKeyRoutes, deviceRecoveryKeyRoutes } from './routes/recovery-keys.ts';
import type { EscrowKeyring } from './escrow/key-file.ts';

export interface AppDeps {
  store: Store;
  feed: LiveFeed;
  config: ServerConfig;
  /** Signs boot tokens; shared by every process serving one line. */
  secret: Buffer;
  /** Seals escrowed recovery keys (made on first use). */
  escrowKey: EscrowKeyring;
  /** pino options, or false for none (tests). */
  logger?: FastifyServerOptions['logger'];
}

export interface AppContext extends AppDeps {
  auth: Authenticator;
  metrics: ServerMetrics;
  /** The URL devices reach this server at, for a given request. */
  baseUrl(req: { protocol: string; host: string }): string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Route pattern label for metrics. */
    metricsRoute?: string;
  }
}

/** Longest path segment the router takes (devices send MACs and serials; nothing needs more). */
const MAX_PARAM_LENGTH = 256;

export async function buildApp(deps: AppDeps): Promise<{ app: FastifyInstance; ctx: AppContext }> {
  const { config } = deps;
  const https = config.tls ? { key: readFileSync(config.tls.key), cert: readFileSync(config.tls.cert) } : null;
  const app = Fastify({
    logger: deps.logger ?? { level: config.logLevel },
    bodyLimit: config.bodyLimit,
    ...(https ? { https } : {}),
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // The router's own refusals (a path segment too long, a bad escape) in this server's error shape.
    frameworkErrors: (err, _req, reply) => {
      const [status, error, message] =
        err.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? [414, 'uri-too-long', `a path segment is longer than ${MAX_PARAM_LENGTH} characters: use a shorter name`]
          : err.code === 'FST_ERR_BAD_URL'
            ? [400, 'bad-request', 'the path is not a valid URL: check its %-escapes']
            : [err.statusCode ?? 500, (err.statusCode ?? 500) >= 500 ? 'internal' : 'bad-request', err.message];
      return (reply as unknown as FastifyReply).code(status).send({ error, message });
    },
    // Dashboards hold event streams open and downloads resume with Range: closing cuts them.
    forceCloseConnections: true,
    // Query strings are text: coerce them to the declared types; never drop unknown body keys silently.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  }) as unknown as FastifyInstance;

  const ctx: AppContext = {
    ...deps,
    auth: createAuthenticator(deps.store),
    metrics: createMetrics(deps.store),
    baseUrl: (req) => (config.publicUrl ?? `${req.protocol}://${req.host}`).replace(/\/+$/, ''),
  };

  app.setErrorHandler((err, req, reply) => {
    const e = err as Error & { statusCode?: number; code?: string; validation?: unknown; validationContext?: string };
    if (e instanceof HttpError) return reply.code(e.statusCode).send({ error: e.code, message: e.message });
    if (e.validation) {
      return reply.code(400).send({ error: 'invalid-request', message: `${e.message} — fix the request to match /openapi.json` });
    }
    const status = e.statusCode && e.statusCode >= 400 && e.statusCode < 600 ? e.statusCode : 500;
    if (status >= 500) req.log.error({ err: e }, 'request failed');
    const code = status === 413 ? 'body-too-large' : status === 415 ? 'unsupported-media-type' : status >= 500 ? 'internal' : 'bad-request';
    const routeLimit = req.routeOptions.bodyLimit;
    const tooLarge =
      routeLimit !== undefined && routeLimit !== config.bodyLimit
        ? `request body is larger than ${req.method} ${req.routeOptions.url ?? req.url} accepts (${routeLimit} bytes)`
        : `request body is larger than this server accepts (${config.bodyLimit} bytes): send smaller batches`;
    const message = status === 413 ? tooLarge : status >= 500 ? 'internal server error (see the server log)' : e.message;
    return reply.code(status).send({ error: code, message });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: 'not-found', message: `no route ${req.method} ${req.url.split('?')[0]}` }));

  // An answer given before the body was read (too large, no token, no route): read the rest
  // first, so that a client still sending it gets the answer instead of a reset.
  app.addHook('onSend', async (req) => {
    if (!req.raw.complete) await drainBody(req.raw);
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    ctx.metrics.requests.inc({ method: req.method, route, status: String(reply.statusCode) });
    ctx.metrics.requestSeconds.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'bootline server', version: '1', description: 'Device bootstrapping: enrollment, plans, events, images, inventory' },
      components: {
        securitySchemes: {
          admin: { type: 'http', scheme: 'bearer', description: 'admin token (bla_…)' },
          adminUser: { type: 'http', scheme: 'basic' },
          device: { type: 'http', scheme: 'bearer', description: 'device credential (bld_…) from /api/v1/enroll' },
        },
      },
    },
  });

  await app.register(async (scope) => metaRoutes(scope, ctx));
  await app.register(async (scope) => deviceRoutes(scope, ctx));
  await app.register(async (scope) => adminRoutes(scope, ctx));
  await app.register(async (scope) => deviceRecoveryKeyRoutes(scope, ctx));
  await app.register(async (scope) => adminRecoveryKeyRoutes(scope, ctx));
  await app.register(async (scope) => streamRoutes(scope, ctx));
  await app.register(async (scope) => bootRoutes(scope, ctx));
  await app.register(async (scope) => dashboardRoutes(scope, ctx));
  await app.register(async (scope) => webRoutes(scope));
  await app.register(async (scope) =>
    imageRoutes(scope, { dataDir: config.data, store: deps.store, onBytes: (n: number) => ctx.metrics.bytesServed.inc({ kind: 'image' }, n) }),
  );
  return { app, ctx };
}
