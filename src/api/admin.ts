// The management API's records (plans, rules, images, tokens, devices, runs), defined once:
// the server's routes, its store and the dashboard use these schemas and their types.
import { Type, type Static } from '@sinclair/typebox';

export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';
export const Name = Type.String({ pattern: NAME_PATTERN, description: 'letters, digits, dot, dash, underscore; no slash' });
const Time = Type.String({ description: 'ISO 8601' });
const Nullable = <T extends ReturnType<typeof Type.String>>(t: T) => Type.Union([t, Type.Null()]);

export const DeviceState = Type.Union([
  Type.Literal('enrolled'),
  Type.Literal('running'),
  Type.Literal('succeeded'),
  Type.Literal('failed'),
  Type.Literal('aborted'),
]);
export type DeviceState = Static<typeof DeviceState>;

export const Device = Type.Object({
  id: Type.String(),
  serial: Nullable(Type.String()),
  uuid: Nullable(Type.String()),
  macs: Type.Array(Type.String()),
  hostname: Nullable(Type.String()),
  /** The enrollment token's batch label. */
  batch: Nullable(Type.String()),
  firstSeen: Time,
  lastSeen: Time,
  state: DeviceState,
  progress: Type.Number(),
  currentTask: Nullable(Type.String()),
  currentRun: Nullable(Type.String()),
  plan: Nullable(Type.String()),
  /** Last message of a failure, for the dashboard's tile. */
  message: Nullable(Type.String()),
  inventory: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
  /** Running, but no event for the server's `stalledAfter` seconds (set by the management API). */
  stalled: Type.Optional(Type.Boolean()),
});
export type Device = Static<typeof Device>;

export const Run = Type.Object({
  id: Type.String(),
  deviceId: Type.String(),
  plan: Nullable(Type.String()),
  startedAt: Time,
  endedAt: Nullable(Time),
  status: Type.Union([Type.Literal('running'), Type.Literal('ok'), Type.Literal('failed'), Type.Literal('aborted')]),
  progress: Type.Number(),
  report: Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()]),
});
export type Run = Static<typeof Run>;

export const StoredEvent = Type.Object({
  runId: Type.String(),
  seq: Type.Integer(),
  deviceId: Type.String(),
  type: Type.String(),
  ts: Time,
  receivedAt: Time,
  /** The event as the agent sent it. */
  body: Type.Record(Type.String(), Type.Unknown()),
});
export type StoredEvent = Static<typeof StoredEvent>;

export const Plan = Type.Object(
  {
    name: Name,
    description: Type.Optional(Type.String({ maxLength: 2000 })),
    /** A partial agent configuration, validated with the agent's schema. */
    config: Type.Record(Type.String(), Type.Unknown()),
    updatedAt: Type.Optional(Time),
  },
  { additionalProperties: false },
);
export type Plan = Static<typeof Plan>;

export const RuleMatch = Type.Union([Type.Literal('mac'), Type.Literal('serial'), Type.Literal('default')]);
export const Rule = Type.Object(
  {
    id: Type.Optional(Type.Integer()),
    /** Lower runs first; the first matching rule wins. */
    priority: Type.Integer({ default: 100 }),
    match: RuleMatch,
    /** mac: one address; serial: a glob (`*`, `?`); default: ignored. */
    pattern: Type.Optional(Type.String({ maxLength: 200 })),
    /** `none` boots such devices from disk (iPXE `exit`). */
    action: Type.Union([Type.Literal('run'), Type.Literal('none')], { default: 'run' }),
    plan: Type.Optional(Name),
  },
  { additionalProperties: false },
);
export type Rule = Static<typeof Rule>;

export const ImageFile = Type.Object({
  name: Type.String(),
  size: Type.Number(),
  sha256: Type.String(),
  /** Image's bmap file name beside it, and its detached signature, when there are. */
  bmap: Type.Optional(Type.String()),
  signature: Type.Optional(Type.String()),
});
export const Image = Type.Object({
  name: Name,
  version: Type.Optional(Type.String({ maxLength: 200 })),
  files: Type.Array(ImageFile),
  /** `local`: under the data dir; or an s3:// prefix the server presigns URLs for. */
  location: Type.String(),
  createdAt: Time,
});
export type Image = Static<typeof Image>;

export const EnrollmentToken = Type.Object({
  id: Type.String(),
  /** The line or batch whose devices use it; becomes the devices' batch. */
  label: Type.String(),
  createdAt: Time,
  expiresAt: Nullable(Time),
  revokedAt: Nullable(Time),
  uses: Type.Integer(),
});
export type EnrollmentToken = Static<typeof EnrollmentToken>;

/** A device as the dashboard's line view shows it: the record and when its current run started. */
export const LineDevice = Type.Intersect([Device, Type.Object({ runStartedAt: Nullable(Time) })]);
export type LineDevice = Static<typeof LineDevice>;

/** The line view's first load; the event stream (/api/v1/stream) keeps it current. */
export const LineSnapshot = Type.Object({
  /** The server's clock, so that a browser with another clock computes elapsed and stalled times right. */
  now: Time,
  /** The server's `stalledAfter` setting: the dashboard's default stall time, seconds. */
  stalledAfter: Type.Integer(),
  counts: Type.Record(Type.String(), Type.Integer()),
  devices: Type.Array(LineDevice),
});
export type LineSnapshot = Static<typeof LineSnapshot>;

/** What an operator pastes into the line's network setup. */
export const SetupSnippets = Type.Object({
  /** The URL devices reach this server at (publicUrl, or this request's host). */
  baseUrl: Type.String(),
  /** The generic iPXE script (also served at /boot.ipxe), for an iPXE build or a USB stick. */
  ipxe: Type.String(),
  /** The proxy-DHCP dnsmasq configuration, or null when it cannot be made from baseUrl (then dnsmasqError says why). */
  dnsmasq: Nullable(Type.String()),
  dnsmasqError: Nullable(Type.String()),
});
export type SetupSnippets = Static<typeof SetupSnippets>;
