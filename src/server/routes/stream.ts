// The live stream of device events for dashboards (server-sent events). Messages are
// coalesced per interval, so 500 devices updating several times a second arrive as a few
// messages a second: one entry per device (its latest state) with the events since.
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { API_PREFIX } from '../../api/device.ts';
import type { Device, StoredEvent } from '../../api/admin.ts';
import type { AppContext } from '../app.ts';
import type { FeedMessage } from '../db/feed.ts';

const StreamQuery = Type.Object({
  device: Type.Optional(Type.String({ description: 'only this device' })),
  logs: Type.Optional(Type.Boolean({ default: true, description: 'include log events' })),
  intervalMs: Type.Optional(Type.Integer({ minimum: 50, maximum: 5000, default: 250 })),
});

const HEARTBEAT_MS = 15_000;
/** Events kept per device per interval; the rest are counted, the run's page has them all. */
const MAX_EVENTS_PER_DEVICE = 200;

export interface StreamEntry {
  device: Device;
  events: StoredEvent[];
  dropped: number;
}

/** Folds feed messages into one entry per device: latest device state, events appended. */
export function coalesce(pending: Map<string, StreamEntry>, msg: FeedMessage, withLogs: boolean): void {
  const events = withLogs ? msg.events : msg.events.filter((e) => e.type !== 'log');
  const entry = pending.get(msg.device.id) ?? { device: msg.device, events: [], dropped: 0 };
  entry.device = msg.device;
  for (const e of events) {
    if (entry.events.length < MAX_EVENTS_PER_DEVICE) entry.events.push(e);
    else entry.dropped++;
  }
  pending.set(msg.device.id, entry);
}

export function streamRoutes(app: FastifyInstance, ctx: AppContext): void {
  app.get<{ Querystring: Static<typeof StreamQuery> }>(
    `${API_PREFIX}/stream`,
    {
      schema: {
        summary: 'Server-sent events: `devices` messages, each a JSON array of {device, events, dropped}',
        tags: ['devices'],
        security: [{ admin: [] as string[] }, { adminUser: [] as string[] }],
        querystring: StreamQuery,
      },
    },
    async (req, reply) => {
      await ctx.auth.admin(req);
      const { device: only, logs = true, intervalMs = 250 } = req.query;
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      res.write(`retry: 2000\nevent: hello\ndata: ${JSON.stringify({ counts: await ctx.store.countDevicesByState() })}\n\n`);

      let pending = new Map<string, StreamEntry>();
      let id = 0;
      const unsubscribe = ctx.feed.subscribe((msg) => {
        if (!only || msg.device.id === only) coalesce(pending, msg, logs);
      });
      const flush = setInterval(() => {
        // A dashboard that reads slower than the line changes (a busy browser): keep folding
        // into `pending` until its socket drains, so it gets the latest state, not a growing backlog.
        if (pending.size === 0 || res.writableNeedDrain) return;
        const batch = [...pending.values()];
        pending = new Map();
        res.write(`id: ${++id}\nevent: devices\ndata: ${JSON.stringify(batch)}\n\n`);
      }, intervalMs);
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
      const stop = () => {
        clearInterval(flush);
        clearInterval(heartbeat);
        unsubscribe();
      };
      res.on('close', stop);
      res.on('error', stop);
    },
  );
}
