// The management API (admin credentials): devices and their runs, plans, rules, images,
// enrollment tokens, users, and report export.
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { API_PREFIX, ErrorBody } from '../../api/device.ts';
import { Device, DeviceState, EnrollmentToken, Image, Name, Plan, Rule, Run, StoredEvent } from '../../api/admin.ts';
import type { AppContext } from '../app.ts';
import { hashPassword, hashSecret, newSecret } from '../credentials.ts';
import { badRequest, notFound } from '../errors.ts';
import { imageRefs } from '../plan-resolve.ts';
import { validatePlan } from '../plan-validate.ts';
import { reportRow, toCsv, type ReportVolume } from '../report-export.ts';
import { exportRecoveryKeys } from './recovery-keys.ts';

const security: { [label: string]: string[] }[] = [{ admin: [] }, { adminUser: [] }];
const errors = { 400: ErrorBody, 401: ErrorBody, 404: ErrorBody };
const Id = Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) });
const NameParam = Type.Object({ name: Name });
const Format = Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('csv')]));
const ReportQuery = Type.Object({
  format: Format,
  recoveryKeys: Type.Optional(Type.Boolean({ description: 'JSON only: include the recovery keys escrowed during the run (recorded as reveals)' })),
});

const DeviceQuery = Type.Object({
  state: Type.Optional(DeviceState),
  plan: Type.Optional(Type.String()),
  batch: Type.Optional(Type.String()),
  q: Type.Optional(Type.String({ maxLength: 200 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 5000, default: 500 })),
  offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })),
});
const ExportQuery = Type.Object({
  batch: Type.Optional(Type.String()),
  from: Type.Optional(Type.String({ format: 'date-time' })),
  to: Type.Optional(Type.String({ format: 'date-time' })),
  format: Type.Optional(Type.Union([Type.Literal('json'), Type.Literal('csv')])),
});
const TokenCreate = Type.Object(
  {
    label: Type.String({ minLength: 1, maxLength: 200, description: 'the line or batch the token is for' }),
    expiresInSeconds: Type.Optional(Type.Integer({ minimum: 1 })),
  },
  { additionalProperties: false },
);
const TokenCreated = Type.Intersect([EnrollmentToken, Type.Object({ token: Type.String({ description: 'shown once: the server keeps only its hash' }) })]);
const UserPut = Type.Object({ password: Type.String({ minLength: 12, maxLength: 1024 }) }, { additionalProperties: false });
const Counts = Type.Record(Type.String(), Type.Integer());
const PlanNoName = Type.Omit(Plan, ['name', 'updatedAt']);

export function adminRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { store } = ctx;
  app.addHook('onRequest', async (req) => {
    await ctx.auth.admin(req);
  });
  const tag = (t: string) => ({ tags: [t], security });
  const markStalled = (d: Device): Device => ({ ...d, stalled: isStalled(d, ctx.config.stalledAfter, Date.now()) });

  // Devices and runs

  app.get<{ Querystring: Static<typeof DeviceQuery> }>(
    `${API_PREFIX}/devices`,
    { schema: { summary: 'Devices, newest activity first, filtered', ...tag('devices'), querystring: DeviceQuery, response: { 200: Type.Array(Device), ...errors } } },
    async (req) => (await store.listDevices(req.query)).map(markStalled),
  );
  app.get(
    `${API_PREFIX}/devices/counts`,
    { schema: { summary: 'Number of devices in each state', ...tag('devices'), response: { 200: Counts, ...errors } } },
    async () => store.countDevicesByState(),
  );
  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/devices/:id`,
    { schema: { summary: 'One device', ...tag('devices'), params: Id, response: { 200: Device, ...errors } } },
    async (req) => {
      const d = await store.getDevice(req.params.id);
      if (!d) throw notFound(`no device ${req.params.id}`);
      return markStalled(d);
    },
  );
  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/devices/:id/inventory`,
    {
      schema: {
        summary: "A device's last inventory document (format bootline-inventory/1, docs/inventory.schema.json)",
        ...tag('devices'),
        params: Id,
        response: { 200: Type.Record(Type.String(), Type.Unknown()), ...errors },
      },
    },
    async (req) => {
      const d = await store.getDevice(req.params.id);
      if (!d) throw notFound(`no device ${req.params.id}`);
      if (!d.inventory) throw notFound(`device ${req.params.id} has sent no inventory yet: give its plan a collect-inventory task`);
      return d.inventory;
    },
  );
  app.post<{ Params: { id: string } }>(
    `${API_PREFIX}/devices/:id/reprovision`,
    {
      schema: {
        summary: 'Bootstrap a provisioned device again at its next network boot (it boots from disk until then)',
        ...tag('devices'),
        params: Id,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await store.requestReprovision(req.params.id, new Date().toISOString()))) throw notFound(`no device ${req.params.id}`);
      return reply.code(204).send();
    },
  );
  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/devices/:id/runs`,
    { schema: { summary: "A device's runs, newest first", ...tag('devices'), params: Id, response: { 200: Type.Array(Run), ...errors } } },
    async (req) => {
      if (!(await store.getDevice(req.params.id))) throw notFound(`no device ${req.params.id}`);
      return store.listRuns(req.params.id);
    },
  );
  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/runs/:id`,
    { schema: { summary: 'One run', ...tag('runs'), params: Id, response: { 200: Run, ...errors } } },
    async (req) => (await store.getRun(req.params.id)) ?? Promise.reject(notFound(`no run ${req.params.id}`)),
  );
  const EventsQuery = Type.Object({ after: Type.Optional(Type.Integer({ minimum: -1 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000, default: 1000 })) });
  app.get<{ Params: { id: string }; Querystring: Static<typeof EventsQuery> }>(
    `${API_PREFIX}/runs/:id/events`,
    { schema: { summary: "A run's events in sequence order", ...tag('runs'), params: Id, querystring: EventsQuery, response: { 200: Type.Array(StoredEvent), ...errors } } },
    async (req) => {
      if (!(await store.getRun(req.params.id))) throw notFound(`no run ${req.params.id}`);
      return store.listEvents(req.params.id, req.query.after, req.query.limit);
    },
  );
  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/runs/:id/log`,
    { schema: { summary: "A run's uploaded log (text/plain)", ...tag('runs'), params: Id } },
    async (req, reply) => {
      const log = await store.getLog(req.params.id);
      if (log === undefined) throw notFound(`run ${req.params.id} has no uploaded log`);
      return reply.type('text/plain; charset=utf-8').send(log);
    },
  );
  app.get<{ Params: { id: string }; Querystring: Static<typeof ReportQuery> }>(
    `${API_PREFIX}/runs/:id/report`,
    {
      schema: {
        summary: "A run's report for the line's records (JSON or CSV); with recoveryKeys=true (JSON) the recovery keys escrowed during the run, each recorded as a reveal",
        ...tag('runs'),
        params: Id,
        querystring: ReportQuery,
      },
    },
    async (req, reply) => {
      const run = await store.getRun(req.params.id);
      const device = run && (await store.getDevice(run.deviceId));
      if (!run || !device) throw notFound(`no run ${req.params.id}`);
      const keys = await store.recoveryKeysOfRuns([run.id]);
      if (req.query.format === 'csv') {
        if (req.query.recoveryKeys) throw badRequest('keys-not-in-csv', 'recovery keys are only exported in the JSON report (format=json): a CSV ends up in spreadsheets');
        return sendCsv(reply, `run-${run.id}.csv`, toCsv([reportRow(run, device, keys)]));
      }
      // The device's record for the line: the volumes always, their keys when asked for.
      const volumes = req.query.recoveryKeys
        ? await exportRecoveryKeys(ctx, req, keys)
        : keys.map((k) => ({ volumeUuid: k.volumeUuid, partition: k.partition, label: k.label, keyslot: k.keyslot, pcrs: k.pcrs }));
      if (req.query.recoveryKeys) reply.header('cache-control', 'no-store');
      return { ...reportRow(run, device, keys), report: run.report, volumes };
    },
  );
  app.get<{ Querystring: Static<typeof ExportQuery> }>(
    `${API_PREFIX}/export`,
    { schema: { summary: "A batch's run reports, one row per run (JSON or CSV)", ...tag('runs'), querystring: ExportQuery } },
    async (req, reply) => {
      const { format, ...filter } = req.query;
      const runs = await store.listRunsForExport(filter);
      const keys = new Map<string | null, ReportVolume[]>();
      for (const k of await store.recoveryKeysOfRuns(runs.map((r) => r.run.id))) keys.set(k.runId, [...(keys.get(k.runId) ?? []), k]);
      const rows = runs.map(({ run, device }) => reportRow(run, device, keys.get(run.id)));
      if (format === 'csv') return sendCsv(reply, `bootline-${filter.batch ?? 'all'}.csv`, toCsv(rows));
      return rows;
    },
  );

  // Plans and rules

  app.get(`${API_PREFIX}/plans`, { schema: { summary: 'Plans', ...tag('plans'), response: { 200: Type.Array(Plan), ...errors } } }, async () => store.listPlans());
  app.get<{ Params: { name: string } }>(
    `${API_PREFIX}/plans/:name`,
    { schema: { summary: 'One plan', ...tag('plans'), params: NameParam, response: { 200: Plan, ...errors } } },
    async (req) => (await store.getPlan(req.params.name)) ?? Promise.reject(notFound(`no plan ${req.params.name}`)),
  );
  app.put<{ Params: { name: string }; Body: Static<typeof PlanNoName> }>(
    `${API_PREFIX}/plans/:name`,
    { schema: { summary: "Create or replace a plan (checked with the agent's schema)", ...tag('plans'), params: NameParam, body: PlanNoName, response: { 200: Plan, ...errors } } },
    async (req) => {
      const plan = { name: req.params.name, ...req.body };
      validatePlan(plan.name, plan.config);
      const known = new Set((await store.listImages()).map((i) => i.name));
      const missing = imageRefs(plan.config).filter((n) => !known.has(n));
      if (missing.length) throw badRequest('unknown-image', `plan ${plan.name} refers to images not registered here: ${missing.join(', ')} (bootline image add …)`);
      await store.putPlan(plan, new Date().toISOString());
      return (await store.getPlan(plan.name)) as Plan;
    },
  );
  app.delete<{ Params: { name: string } }>(
    `${API_PREFIX}/plans/:name`,
    { schema: { summary: 'Delete a plan no rule uses', ...tag('plans'), params: NameParam, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      const users = (await store.listRules()).filter((r) => r.plan === req.params.name);
      if (users.length) throw badRequest('plan-in-use', `rules ${users.map((r) => r.id).join(', ')} use plan ${req.params.name}: delete or change them first`);
      if (!(await store.deletePlan(req.params.name))) throw notFound(`no plan ${req.params.name}`);
      return reply.code(204).send();
    },
  );
  app.get(`${API_PREFIX}/rules`, { schema: { summary: 'Rules that assign plans, in order', ...tag('rules'), response: { 200: Type.Array(Rule), ...errors } } }, async () => store.listRules());
  app.post<{ Body: Static<typeof Rule> }>(
    `${API_PREFIX}/rules`,
    { schema: { summary: 'Add a rule', ...tag('rules'), body: Rule, response: { 201: Rule, ...errors } } },
    async (req, reply) => {
      const r = req.body;
      if (r.match !== 'default' && !r.pattern) throw badRequest('invalid-rule', `a ${r.match} rule needs a pattern`);
      if (r.match === 'mac' && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(r.pattern ?? '')) throw badRequest('invalid-rule', `pattern ${r.pattern}: a MAC rule needs one address like 52:54:00:12:34:56`);
      if ((r.action ?? 'run') === 'run') {
        if (!r.plan) throw badRequest('invalid-rule', 'a rule whose action is run needs a plan');
        if (!(await store.getPlan(r.plan))) throw badRequest('invalid-rule', `plan ${r.plan} does not exist: create it first`);
      }
      const rule = await store.addRule({ ...r, pattern: r.match === 'mac' ? r.pattern?.toLowerCase() : r.pattern });
      return reply.code(201).send(rule);
    },
  );
  app.delete<{ Params: { id: number } }>(
    `${API_PREFIX}/rules/:id`,
    { schema: { summary: 'Delete a rule', ...tag('rules'), params: Type.Object({ id: Type.Integer() }), response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      if (!(await store.deleteRule(Number(req.params.id)))) throw notFound(`no rule ${req.params.id}`);
      return reply.code(204).send();
    },
  );

  // Images (added with `bootline image add`; listed and removed here)

  app.get(`${API_PREFIX}/images`, { schema: { summary: 'Registered images', ...tag('images'), response: { 200: Type.Array(Image), ...errors } } }, async () => store.listImages());
  app.get<{ Params: { name: string } }>(
    `${API_PREFIX}/images/:name`,
    { schema: { summary: 'One image', ...tag('images'), params: NameParam, response: { 200: Image, ...errors } } },
    async (req) => (await store.getImage(req.params.name)) ?? Promise.reject(notFound(`no image ${req.params.name}`)),
  );
  app.delete<{ Params: { name: string } }>(
    `${API_PREFIX}/images/:name`,
    { schema: { summary: 'Forget an image (its files stay in the data dir)', ...tag('images'), params: NameParam, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      if (!(await store.deleteImage(req.params.name))) throw notFound(`no image ${req.params.name}`);
      return reply.code(204).send();
    },
  );

  // Enrollment tokens and users

  app.get(`${API_PREFIX}/tokens`, { schema: { summary: 'Enrollment tokens (never their secrets)', ...tag('tokens'), response: { 200: Type.Array(EnrollmentToken), ...errors } } }, async () =>
    store.listEnrollmentTokens(),
  );
  app.post<{ Body: Static<typeof TokenCreate> }>(
    `${API_PREFIX}/tokens`,
    { schema: { summary: 'Create an enrollment token for a line or batch', ...tag('tokens'), body: TokenCreate, response: { 201: TokenCreated, ...errors } } },
    async (req, reply) => {
      const token = newSecret('enrollment');
      const expiresAt = req.body.expiresInSeconds ? new Date(Date.now() + req.body.expiresInSeconds * 1000).toISOString() : null;
      const rec = await store.createEnrollmentToken({ id: `tok_${randomBytes(6).toString('hex')}`, hash: hashSecret(token), label: req.body.label, expiresAt });
      return reply.code(201).send({ ...rec, token });
    },
  );
  app.delete<{ Params: { id: string } }>(
    `${API_PREFIX}/tokens/:id`,
    { schema: { summary: 'Revoke an enrollment token', ...tag('tokens'), params: Id, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      if (!(await store.revokeEnrollmentToken(req.params.id, new Date().toISOString()))) throw notFound(`no token ${req.params.id}`);
      return reply.code(204).send();
    },
  );
  app.put<{ Params: { name: string }; Body: Static<typeof UserPut> }>(
    `${API_PREFIX}/users/:name`,
    { schema: { summary: 'Create a user or set its password (stored with scrypt)', ...tag('users'), params: NameParam, body: UserPut, response: { 204: Type.Null(), ...errors } } },
    async (req, reply) => {
      await store.setUser(req.params.name, await hashPassword(req.body.password));
      return reply.code(204).send();
    },
  );
}

/** A running device that has sent nothing for `afterSeconds` (a hung task, a dead device). */
export function isStalled(d: Pick<Device, 'state' | 'lastSeen'>, afterSeconds: number, nowMs: number): boolean {
  return d.state === 'running' && nowMs - Date.parse(d.lastSeen) > afterSeconds * 1000;
}

function sendCsv(reply: FastifyReply, filename: string, csv: string) {
  return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="${filename.replace(/[^A-Za-z0-9._-]/g, '_')}"`).send(csv);
}
