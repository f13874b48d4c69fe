// The device-facing API (what the agent calls), defined once: the server declares its
// routes with these schemas and the agent's client derives its types from them.
import { Type, type Static } from '@sinclair/typebox';
import { BootlineEvent, RunReport } from '../events.ts';
import { InventoryDocument } from '../inventory/schema.ts';

export const API_PREFIX = '/api/v1';

/** A MAC address as the kernel prints it: six lower-case hex pairs. */
export const Mac = Type.String({ pattern: '^[0-9a-f]{2}(:[0-9a-f]{2}){5}$', description: 'lower-case, colon-separated' });

export const EnrollRequest = Type.Object(
  {
    token: Type.String({ minLength: 1, maxLength: 200, description: 'the enrollment token of the line or batch' }),
    serial: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'system serial number (SMBIOS)' })),
    uuid: Type.Optional(Type.String({ maxLength: 64, description: 'SMBIOS system UUID' })),
    macs: Type.Array(Mac, { maxItems: 64, default: [] }),
    hostname: Type.Optional(Type.String({ maxLength: 253 })),
  },
  { additionalProperties: false },
);
export type EnrollRequest = Static<typeof EnrollRequest>;

export const EnrollResponse = Type.Object({
  deviceId: Type.String(),
  /** Sent back as `Authorization: Bearer <credential>` on every device call; stored hashed. */
  credential: Type.String(),
});
export type EnrollResponse = Static<typeof EnrollResponse>;

/** The device's plan: a partial agent configuration (tasks, reporters, hooks, final actions). */
export const PlanResponse = Type.Object({
  plan: Type.String({ description: 'name of the plan the rules chose' }),
  /** `none` when the rules say this device has nothing to do (boot from disk). */
  action: Type.Union([Type.Literal('run'), Type.Literal('none')]),
  config: Type.Record(Type.String(), Type.Unknown()),
});
export type PlanResponse = Static<typeof PlanResponse>;

export const EventBatch = Type.Object(
  { events: Type.Array(BootlineEvent, { minItems: 1, maxItems: 1000 }) },
  { additionalProperties: false },
);
export type EventBatch = Static<typeof EventBatch>;

export const EventBatchResult = Type.Object({
  /** Events stored now; the rest of the batch had been stored before (a re-sent batch). */
  stored: Type.Integer(),
  duplicates: Type.Integer(),
});
export type EventBatchResult = Static<typeof EventBatchResult>;

/** What the device's last run finished, so that an agent restarted after a power loss resumes. */
export const LastRunResponse = Type.Object({
  runId: Type.Union([Type.String(), Type.Null()]),
  status: Type.Union([Type.Literal('running'), Type.Literal('ok'), Type.Literal('failed'), Type.Literal('aborted'), Type.Null()]),
  plan: Type.Union([Type.String(), Type.Null()]),
  /** Tasks whose task-end said ok, in plan order. */
  completed: Type.Array(Type.String()),
});
export type LastRunResponse = Static<typeof LastRunResponse>;

export const ReportBody = RunReport;

/** The collect-inventory task's document (published as docs/inventory.schema.json). */
export const InventoryBody = InventoryDocument;

export const ErrorBody = Type.Object({ error: Type.String(), message: Type.String() });
export type ErrorBody = Static<typeof ErrorBody>;
