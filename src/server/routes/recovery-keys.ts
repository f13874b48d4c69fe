// Recovery-key escrow: a device stores the recovery key of a LUKS2 volume it encrypted
// (sealed at rest under the escrow key file); admins list the volumes (never the keys) and
// reveal one key at a time, each reveal recorded on the volume's record and in the log.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { API_PREFIX, ErrorBody } from '../../api/device.ts';
import { EscrowedVolume, RecoveryKeyEscrow, RevealedRecoveryKey, VolumeUuid, VOLUME_UUID_PATTERN, recoveryKeyEscrowProblems } from '../../api/recovery-key.ts';
import type { AppContext } from '../app.ts';
import { VolumeOfAnotherDeviceError, type RecoveryKeyRecord } from '../db/store.ts';
import { EscrowKeyError } from '../escrow/key-file.ts';
import { EscrowKeyMismatchError, EscrowRecordDamagedError, seal, unseal } from '../escrow/seal.ts';
import { badRequest, conflict, HttpError, notFound } from '../errors.ts';

/** An escrow body is a few hundred bytes: anything near this is not one. */
export const ESCROW_BODY_LIMIT = 16 * 1024;

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 503: ErrorBody };
const VolumeParams = Type.Object({ volumeUuid: VolumeUuid });
const DeviceParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }) });
const DeviceVolumeParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 200 }), uuid: VolumeUuid });
const adminSecurity: { [label: string]: string[] }[] = [{ admin: [] }, { adminUser: [] }];
const uuidRe = new RegExp(VOLUME_UUID_PATTERN);

/** The escrow key, or a 503 that says what to do about it. */
async function escrowKey(ctx: AppContext) {
  try {
    return await ctx.escrowKey.key(() => ctx.store.countRecoveryKeys());
  } catch (e) {
    if (e instanceof EscrowKeyError) throw new HttpError(503, 'escrow-key-unavailable', e.message);
    throw e;
  }
}

/** Opens a sealed record, or says why it cannot be opened and what to do. */
export async function openRecoveryKey(ctx: AppContext, rec: RecoveryKeyRecord): Promise<string> {
  const { kek } = await escrowKey(ctx);
  try {
    return unseal(kek, { deviceId: rec.deviceId, volumeUuid: rec.volumeUuid }, rec.sealed);
  } catch (e) {
    if (e instanceof EscrowKeyMismatchError) {
      throw conflict(
        'escrow-key-replaced',
        `the recovery key of volume ${rec.volumeUuid} was sealed with escrow key ${e.sealedWith}, but ${ctx.escrowKey.path} holds key ${e.current}: ` +
          'the escrow key file was replaced. Put the original back from its backup and restart the server',
      );
    }
    if (e instanceof EscrowRecordDamagedError) {
      throw conflict('escrow-record-damaged', `the sealed recovery key of volume ${rec.volumeUuid} does not open: ${e.message}. Restore the database from a backup`);
    }
    throw e;
  }
}

/** An exported volume with its key, or why the key cannot be opened now (the rest of the report still matters). */
export interface ExportedVolume {
  volumeUuid: string;
  partition: string;
  label: string | null;
  keyslot: number;
  pcrs: number[] | null;
  recoveryKey: string | null;
  recoveryKeyError?: string;
}

/** The keys of a run's report export (admin request), each one opened recorded as a reveal. */
export async function exportRecoveryKeys(ctx: AppContext, req: FastifyRequest, keys: RecoveryKeyRecord[]): Promise<ExportedVolume[]> {
  const out: ExportedVolume[] = [];
  const opened: RecoveryKeyRecord[] = [];
  for (const k of keys) {
    const base = { volumeUuid: k.volumeUuid, partition: k.partition, label: k.label, keyslot: k.keyslot, pcrs: k.pcrs };
    try {
      out.push({ ...base, recoveryKey: await openRecoveryKey(ctx, k) });
      opened.push(k);
    } catch (e) {
      if (!(e instanceof HttpError)) throw e;
      out.push({ ...base, recoveryKey: null, recoveryKeyError: e.message });
    }
  }
  if (opened.length > 0) {
    const by = `${await ctx.auth.admin(req)} (run report)`;
    const at = new Date().toISOString();
    for (const [deviceId, uuids] of groupBy(opened)) await ctx.store.recordRecoveryKeyReveal(deviceId, uuids, by, at);
    req.log.info({ volumes: opened.map((k) => k.volumeUuid), by }, 'recovery keys exported in a run report');
  }
  return out;
}

function groupBy(keys: RecoveryKeyRecord[]): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const k of keys) m.set(k.deviceId, [...(m.get(k.deviceId) ?? []), k.volumeUuid]);
  return m;
}

/** PUT /device/recovery-keys/:volumeUuid (device credential). */
export function deviceRecoveryKeyRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { store } = ctx;
  app.put<{ Params: { volumeUuid: string }; Body: RecoveryKeyEscrow }>(
    `${API_PREFIX}/device/recovery-keys/:volumeUuid`,
    {
      bodyLimit: ESCROW_BODY_LIMIT,
      // Validation errors are worded here (what a recovery key looks like), after the credential is checked.
      attachValidation: true,
      schema: {
        summary: 'Escrow the recovery key of a LUKS2 volume this device encrypted (replaces an earlier one of the same volume)',
        tags: ['device'],
        security: [{ device: [] }],
        params: VolumeParams,
        body: RecoveryKeyEscrow,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      const d = await ctx.auth.device(req);
      const problems: string[] = [];
      if (!uuidRe.test(req.params.volumeUuid)) problems.push('the URL must end in the volume’s LUKS2 UUID in lower case, as `cryptsetup luksUUID` prints it');
      problems.push(...recoveryKeyEscrowProblems(req.body));
      if (problems.length === 0 && req.body.volumeUuid !== req.params.volumeUuid) {
        problems.push(`the body is for volume ${req.body.volumeUuid}, the URL for ${req.params.volumeUuid}`);
      }
      if (problems.length > 0 || req.validationError) {
        throw badRequest('invalid-recovery-key-escrow', `recovery key not stored: ${problems.join('; ') || req.validationError?.message}`);
      }
      const body = req.body;
      let runId = body.runId ?? null;
      if (runId !== null) {
        const run = await store.getRun(runId);
        if (run && run.deviceId !== d.id) throw conflict('run-of-another-device', `run ${runId} belongs to another device: send this device's run id, or none`);
      } else {
        runId = (await store.getDevice(d.id))?.currentRun ?? null;
      }
      const { kek } = await escrowKey(ctx);
      const sealed = seal(kek, { deviceId: d.id, volumeUuid: body.volumeUuid }, body.recoveryKey);
      let outcome;
      try {
        outcome = await store.putRecoveryKey({
          deviceId: d.id,
          volumeUuid: body.volumeUuid,
          partition: body.partition,
          label: body.label ?? null,
          keyslot: body.keyslot,
          pcrs: body.pcrs ?? null,
          runId,
          sealed,
          createdAt: new Date().toISOString(),
        });
      } catch (e) {
        if (e instanceof VolumeOfAnotherDeviceError) {
          throw conflict(
            'volume-of-another-device',
            `volume ${body.volumeUuid} has a recovery key escrowed for another device: nothing stored. If the disk really moved, an admin deletes that record first (DELETE /api/v1/devices/<id>/recovery-keys/<uuid>)`,
          );
        }
        throw e;
      }
      req.log.info({ deviceId: d.id, volumeUuid: body.volumeUuid, partition: body.partition, runId, replaced: outcome === 'replaced' }, 'recovery key escrowed');
      return reply.code(204).send();
    },
  );
}

/** The management side (admin credentials only). */
export function adminRecoveryKeyRoutes(app: FastifyInstance, ctx: AppContext): void {
  const { store } = ctx;
  const who = new WeakMap<FastifyRequest, string>();
  app.addHook('onRequest', async (req) => {
    who.set(req, await ctx.auth.admin(req));
  });
  const device = async (id: string) => {
    const d = await store.getDevice(id);
    if (!d) throw notFound(`no device ${id}`);
    return d;
  };

  app.get<{ Params: { id: string } }>(
    `${API_PREFIX}/devices/:id/recovery-keys`,
    {
      schema: {
        summary: "A device's escrowed volumes (never the keys), with who last revealed each",
        tags: ['recovery keys'],
        security: adminSecurity,
        params: DeviceParams,
        response: { 200: Type.Array(EscrowedVolume), ...errors },
      },
    },
    async (req) => {
      await device(req.params.id);
      return store.listRecoveryKeys(req.params.id);
    },
  );

  app.post<{ Params: { id: string; uuid: string } }>(
    `${API_PREFIX}/devices/:id/recovery-keys/:uuid/reveal`,
    {
      schema: {
        summary: "Reveal one volume's recovery key; the reveal is recorded (revealedAt, revealedBy, revealCount)",
        tags: ['recovery keys'],
        security: adminSecurity,
        params: DeviceVolumeParams,
        response: { 200: RevealedRecoveryKey, ...errors },
      },
    },
    async (req, reply) => {
      await device(req.params.id);
      const rec = await store.getRecoveryKey(req.params.id, req.params.uuid);
      if (!rec) throw notFound(`device ${req.params.id} has no recovery key escrowed for volume ${req.params.uuid}`);
      const recoveryKey = await openRecoveryKey(ctx, rec);
      const by = who.get(req) ?? 'admin';
      await store.recordRecoveryKeyReveal(rec.deviceId, [rec.volumeUuid], by, new Date().toISOString());
      req.log.info({ deviceId: rec.deviceId, volumeUuid: rec.volumeUuid, by }, 'recovery key revealed');
      return reply.header('cache-control', 'no-store').send({ recoveryKey });
    },
  );

  app.delete<{ Params: { id: string; uuid: string } }>(
    `${API_PREFIX}/devices/:id/recovery-keys/:uuid`,
    {
      schema: {
        summary: 'Forget an escrowed recovery key (a disk that moved to another device, or was destroyed)',
        tags: ['recovery keys'],
        security: adminSecurity,
        params: DeviceVolumeParams,
        response: { 204: Type.Null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await store.deleteRecoveryKey(req.params.id, req.params.uuid))) throw notFound(`device ${req.params.id} has no recovery key escrowed for volume ${req.params.uuid}`);
      req.log.info({ deviceId: req.params.id, volumeUuid: req.params.uuid, by: who.get(req) }, 'recovery key deleted');
      return reply.code(204).send();
    },
  );
}
