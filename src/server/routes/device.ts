// The device-facing API: enrollment, the device's plan, events, report, log, inventory,
// and what its last run finished.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import {
  API_PREFIX,
  EnrollRequest,
  EnrollResponse,
  ErrorBody,
  EventBatch,
  EventBatchResult,
  InventoryBody,
  LastRunResponse,
  PlanResponse,
  ReportBody,
} from '../../api/device.ts';
import type { Device } from '../../api/admin.ts';
import type { InventoryDocument } from '../../inventory/schema.ts';
import type { AppContext } from '../app.ts';
import { ForeignRunError, UnknownDeviceError } from '../db/store.ts';
import { checkBootToken, hashSecret, kindOf, newSecret } from '../credentials.ts';
import { badRequest, conflict, HttpError, notFound, unauthorized } from '../errors.ts';
import { chooseRule, PlanResolveError, resolveImages } from '../plan-resolve.ts';

const security: { [label: string]: string[] }[] = [{ device: [] }];
const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 409: ErrorBody };
const RunParams = Type.Object({ runId: Type.String({ minLength: 1, maxLength: 200 }) });

/** The plan (and rule) the rules give a device now. */
export async function planFor(ctx: AppContext, device: Pick<Device, 'serial' | 'macs' | 'id'>) {
  const rule = chooseRule(await ctx.store.listRules(), device);
  if (!rule) return undefined;
  return { rule, plan: rule.action === 'run' && rule.plan ? await ctx.store.getPlan(rule.plan) : undefined };
}

export function deviceRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { store } = ctx;
  const now = () => new Date().toISOString();
  const device = (req: FastifyRequest) => ctx.auth.device(req);
  /** Which device a run belongs to, so a device cannot write into another's runs. */
  const runOwner = new Map<string, string>();

  async function checkRunOwner(runId: string, deviceId: string): Promise<void> {
    let owner = runOwner.get(runId);
    if (owner === undefined) {
      owner = (await store.getRun(runId))?.deviceId;
      if (owner === undefined) return;
      if (runOwner.size > 50_000) runOwner.clear();
      runOwner.set(runId, owner);
    }
    if (owner !== deviceId) throw conflict('run-of-another-device', `run ${runId} belongs to another device: start a new run id`);
  }

  app.post<{ Body: EnrollRequest }>(
    `${API_PREFIX}/enroll`,
    {
      schema: {
        summary: 'Enroll a device with an enrollment token; returns its credential',
        tags: ['device'],
        body: EnrollRequest,
        response: { 201: EnrollResponse, 400: ErrorBody, 401: ErrorBody },
      },
    },
    async (req, reply) => {
      const { token, ...identity } = req.body;
      const macs = identity.macs ?? [];
      if (!identity.serial && macs.length === 0) throw badRequest('no-identity', 'send at least a serial number or one MAC address');
      const at = now();
      let batch: string;
      // Nothing is said about why a token is refused, so a guess learns nothing.
      const refuse = () => unauthorized('enrollment token not accepted: ask the line for a valid token');
      if (kindOf(token) === 'boot') {
        const check = checkBootToken(ctx.secret, token, Date.now());
        if (!check.ok || !macs.includes(check.mac)) throw refuse();
        batch = 'network-boot';
      } else {
        const t = await store.findEnrollmentToken(hashSecret(token));
        if (!t || t.revokedAt || (t.expiresAt && t.expiresAt <= at)) throw refuse();
        await store.countTokenUse(t.id);
        batch = t.label;
      }
      const credential = newSecret('device');
      const d = await store.enrollDevice({ ...identity, macs }, batch, hashSecret(credential), at);
      ctx.auth.forget();
      req.log.info({ deviceId: d.id, serial: d.serial, batch }, 'device enrolled');
      return reply.code(201).send({ deviceId: d.id, credential });
    },
  );

  app.get(
    `${API_PREFIX}/device/plan`,
    { schema: { summary: "The device's plan, chosen by the rules", tags: ['device'], security, response: { 200: PlanResponse, ...errors } } },
    async (req) => {
      const d = await device(req);
      await store.touchDevice(d.id, now());
      const chosen = await planFor(ctx, d);
      if (!chosen) {
        throw notFound(`no rule matches this device (serial ${d.serial ?? 'none'}, MACs ${d.macs.join(' ') || 'none'}): add a rule for it or a default rule`);
      }
      if (chosen.rule.action === 'none') return { plan: '', action: 'none' as const, config: {} };
      if (!chosen.plan) throw notFound(`rule ${chosen.rule.id} names plan "${chosen.rule.plan}", which does not exist: create it or fix the rule`);
      const images = new Map((await store.listImages()).map((i) => [i.name, i]));
      try {
        return { plan: chosen.plan.name, action: 'run' as const, config: resolveImages(chosen.plan.config, images, ctx.baseUrl(req)) };
      } catch (e) {
        if (e instanceof PlanResolveError) throw new HttpError(409, 'plan-unresolvable', `plan ${chosen.plan.name}: ${e.message}`);
        throw e;
      }
    },
  );

  app.post<{ Body: EventBatch }>(
    `${API_PREFIX}/device/events`,
    {
      schema: {
        summary: 'Post a batch of events; a re-sent batch is stored once (run id + sequence number)',
        tags: ['device'],
        security,
        body: EventBatch,
        response: { 200: EventBatchResult, ...errors },
      },
    },
    async (req) => {
      const d = await device(req);
      const events = req.body.events;
      const plan = events.some((e) => e.type === 'run-start') ? ((await planFor(ctx, d))?.plan?.name ?? null) : null;
      let r;
      try {
        // The store checks run ownership inside its transaction (two server processes may race).
        r = await store.ingestEvents(d.id, events, now(), plan);
      } catch (e) {
        if (e instanceof ForeignRunError) throw conflict('run-of-another-device', `run ${e.runId} belongs to another device: start a new run id`);
        if (e instanceof UnknownDeviceError) throw unauthorized('this device is no longer known: enroll again');
        throw e;
      }
      if (r.stored === 0) await store.touchDevice(d.id, now());
      // One increment per type, not per event: labelled increments are not free at these rates.
      const byType = new Map<string, number>();
      for (const e of r.fresh) byType.set(e.type, (byType.get(e.type) ?? 0) + 1);
      for (const [type, n] of byType) ctx.metrics.eventsIngested.inc({ type }, n);
      if (r.duplicates) ctx.metrics.eventDuplicates.inc(r.duplicates);
      if (r.fresh.length > 0) await ctx.feed.publish({ device: r.device, events: r.fresh });
      return { stored: r.stored, duplicates: r.duplicates };
    },
  );

  app.get(
    `${API_PREFIX}/device/last-run`,
    { schema: { summary: 'What the last run of this device finished, to resume after a power loss', tags: ['device'], security, response: { 200: LastRunResponse, ...errors } } },
    async (req) => {
      const d = await device(req);
      const run = await store.lastRun(d.id);
      if (!run) return { runId: null, status: null, plan: null, completed: [] };
      return { runId: run.id, status: run.status, plan: run.plan, completed: await store.completedTasks(run.id) };
    },
  );

  app.put<{ Params: { runId: string }; Body: Record<string, unknown> }>(
    `${API_PREFIX}/device/runs/:runId/report`,
    { schema: { summary: "Upload a run's final report", tags: ['device'], security, params: RunParams, body: ReportBody, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      const d = await device(req);
      if (req.body.runId !== req.params.runId) throw badRequest('run-mismatch', `the report is for run ${String(req.body.runId)}, the URL for ${req.params.runId}`);
      await checkRunOwner(req.params.runId, d.id);
      if (!(await store.setReport(req.params.runId, d.id, req.body))) throw notFound(`run ${req.params.runId} is unknown: post its events first`);
      return reply.code(204).send();
    },
  );

  app.register(async (scope) => {
    // Logs are plain text and may be large: their own parser and limit.
    scope.addContentTypeParser('text/plain', { parseAs: 'string', bodyLimit: ctx.config.logLimit }, (_req, body, done) => done(null, body));
    scope.put<{ Params: { runId: string }; Body: string }>(
      `${API_PREFIX}/device/runs/:runId/log`,
      {
        bodyLimit: ctx.config.logLimit,
        schema: { summary: "Upload a run's whole log (text/plain)", tags: ['device'], security, params: RunParams, response: { 204: Type.Null(), ...errors } },
      },
      async (req, reply) => {
        const d = await device(req);
        if (typeof req.body !== 'string') throw new HttpError(415, 'unsupported-media-type', 'send the log as text/plain');
        await checkRunOwner(req.params.runId, d.id);
        if (!(await store.setLog(req.params.runId, d.id, req.body))) throw notFound(`run ${req.params.runId} is unknown: post its events first`);
        return reply.code(204).send();
      },
    );
  });

  app.put<{ Body: InventoryDocument }>(
    `${API_PREFIX}/device/inventory`,
    { schema: { summary: "Store the device's inventory document", tags: ['device'], security, body: InventoryBody, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      const d = await device(req);
      await store.setInventory(d.id, req.body as unknown as Record<string, unknown>, now());
      return reply.code(204).send();
    },
  );
}
