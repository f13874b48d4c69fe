// The enroll-secure-boot built-in: reads the firmware's Secure Boot mode from efivarfs
// (mounting it if needed), and in Setup Mode writes db (and dbx), then KEK, then PK last
// as authenticated writes, then reads them back: the firmware must have left Setup Mode
// and hold exactly the intended certificates. Outside Setup Mode it refuses, unless the
// keys are already the intended ones (ifAlreadyEnrolled: skip; a re-run after a power
// loss) or it is given updates signed with the current PK/KEK (ifAlreadyEnrolled: update).
// Only signed .auth files reach the device; private keys never do.
import { Type } from '@sinclair/typebox';
import type { BuiltinTask, TaskContext } from '../builtin.ts';
import { TaskError } from '../builtin.ts';
import { DEFAULT_COMMANDS, DEFAULT_EFIVARS, efivarfs, EfivarfsError, ensureEfivarfs, isEfivarfs, type EfiVariables } from './efivarfs.ts';
import { compareVariable, decide, describeState, modeOf, signerProblem, storedEntries, WRITE_ORDER, type FirmwareState, type Intended, type Policy } from './plan.ts';
import { intendedFrom, loadInput } from './inputs.ts';
import type { SourceOptions } from '../../../image/types.ts';
import { efivarfsName, MODE_VARIABLES, type KeyVariable } from '../../../secureboot/variables.ts';
import { describeCertificate } from '../../../secureboot/x509.ts';

const authFile = (what: string) => Type.String({ minLength: 1, description: `${what}: a .auth file (signed update) by path on the installer (relative: under installData), file://, http:// or https:// URL` });

export const EnrollSecureBootOptions = Type.Object(
  {
    pk: authFile('PK, signed by PK'),
    kek: authFile('KEK, signed by PK'),
    db: authFile('db, signed by KEK'),
    dbx: Type.Optional(authFile('dbx (optional), signed by KEK')),
    ifAlreadyEnrolled: Type.Optional(
      Type.Union([Type.Literal('fail'), Type.Literal('skip'), Type.Literal('update')], {
        default: 'fail',
        description:
          'outside Setup Mode: fail (refuse); skip (succeed when the enrolled keys are the intended ones, refuse otherwise); ' +
          'update (also write the .auth files that differ, which must then be signed with the current KEK/PK)',
      }),
    ),
    efivars: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_EFIVARS, description: 'where efivarfs is (or is mounted)' })),
    mount: Type.Optional(Type.Boolean({ default: true, description: 'mount efivarfs at efivars when it is not mounted (modprobe efivarfs if needed)' })),
    commands: Type.Optional(
      Type.Object(
        {
          chattr: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_COMMANDS.chattr, description: "clears efivarfs' immutable flag (e2fsprogs' chattr; Debian's busybox has none)" })),
          mount: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_COMMANDS.mount })),
          modprobe: Type.Optional(Type.String({ minLength: 1, default: DEFAULT_COMMANDS.modprobe })),
        },
        { additionalProperties: false, description: 'the programs the task runs (name or path)' },
      ),
    ),
    installData: Type.Optional(Type.String({ minLength: 1, default: '/install', description: 'where relative .auth paths are looked up' })),
    ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA bundle file for https' })),
    token: Type.Optional(Type.String({ minLength: 1, description: 'bearer token for http(s) (Authorization: Bearer)' })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra HTTP request headers' })),
  },
  { additionalProperties: false },
);

export type EnrollSecureBootOptions = (typeof EnrollSecureBootOptions)['static'];

const OPTION_OF: Record<KeyVariable, 'pk' | 'kek' | 'db' | 'dbx'> = { PK: 'pk', KEK: 'kek', db: 'db', dbx: 'dbx' };

/** Loads and checks every .auth the options name (nothing is written before this succeeds). */
export async function loadIntended(o: EnrollSecureBootOptions, signal?: AbortSignal): Promise<Intended[]> {
  const http: SourceOptions = { ...(o.ca ? { ca: o.ca } : {}), ...(o.token ? { token: o.token } : {}), ...(o.headers ? { headers: o.headers } : {}) };
  const out: Intended[] = [];
  for (const v of WRITE_ORDER) {
    const spec = o[OPTION_OF[v]];
    if (spec === undefined) continue;
    const { source, bytes } = await loadInput(spec, o.installData ?? '/install', http, signal);
    out.push(intendedFrom(v, source, bytes));
  }
  return out;
}

async function readState(vars: EfiVariables): Promise<FirmwareState> {
  const byte = async (name: (typeof MODE_VARIABLES)[number]) => {
    const v = await vars.read(name);
    return v === undefined || v.data.length === 0 ? undefined : v.data[0]!;
  };
  const [setupMode, secureBoot, auditMode, deployedMode] = await Promise.all(MODE_VARIABLES.map(byte));
  const s: FirmwareState = {};
  if (setupMode !== undefined) s.setupMode = setupMode;
  if (secureBoot !== undefined) s.secureBoot = secureBoot;
  if (auditMode !== undefined) s.auditMode = auditMode;
  if (deployedMode !== undefined) s.deployedMode = deployedMode;
  return s;
}

async function readStored(vars: EfiVariables, intended: readonly Intended[]): Promise<Partial<Record<KeyVariable, Buffer>>> {
  const stored: Partial<Record<KeyVariable, Buffer>> = {};
  for (const v of ['PK', 'KEK', ...intended.map((i) => i.variable)] as KeyVariable[]) {
    const s = await vars.read(v);
    if (s) stored[v] = s.data;
  }
  return stored;
}

export interface EnrollDeps {
  /** The variables; default: efivarfs at options.efivars, mounted if allowed. */
  vars?: EfiVariables;
}

/** The task's work, with its efivarfs replaceable (a firmware stand-in in tests). */
export async function enroll(ctx: TaskContext<EnrollSecureBootOptions>, deps: EnrollDeps = {}): Promise<void> {
  try {
    await enrollSteps(ctx, deps);
  } catch (e) {
    // efivarfs' and the decoders' errors are written for the console already.
    if (e instanceof EfivarfsError) throw new TaskError(e.message);
    throw e;
  }
}

async function enrollSteps(ctx: TaskContext<EnrollSecureBootOptions>, deps: EnrollDeps): Promise<void> {
  const o = ctx.options;
  const policy: Policy = o.ifAlreadyEnrolled ?? 'fail';
  const commands = { ...DEFAULT_COMMANDS, ...o.commands };
  const root = o.efivars ?? DEFAULT_EFIVARS;

  // 1. Inputs, checked whole before anything is touched.
  ctx.progress({ taskProgress: 0, message: 'reading the signed key updates' });
  const intended = await loadIntended(o, ctx.signal);
  for (const i of intended) {
    ctx.log('info', `${i.variable}: ${i.source}, ${i.entries.length} entr${i.entries.length === 1 ? 'y' : 'ies'}, signed by ${describeSigner(i)}${i.append ? ', an append' : ''}`);
  }

  // 2. The firmware's mode.
  let vars = deps.vars;
  if (!vars) {
    if (o.mount ?? true) ctx.log('info', await ensureEfivarfs(root, commands, ctx.signal));
    else if (!(await isEfivarfs(root))) ctx.log('warn', `${root} is not an efivarfs mount (mount: false): using it as it is`);
    vars = efivarfs(root, commands, ctx.signal);
  }
  const state = await readState(vars);
  ctx.log('info', `Secure Boot state: ${describeState(state)}`);
  ctx.progress({ taskProgress: 10, message: `firmware in ${modeOf(state)}` });

  // 3. What to do.
  const stored = await readStored(vars, intended);
  const decision = decide({ state, intended, stored, policy });
  if (decision.action === 'refuse') throw new TaskError(decision.message);
  ctx.log('info', decision.message);
  if (decision.action === 'nothing') {
    ctx.progress({ taskProgress: 100, message: 'keys already enrolled' });
    return;
  }
  if (decision.action === 'update') {
    const enrolled = { PK: storedEntries('PK', stored.PK).entries, KEK: storedEntries('KEK', stored.KEK).entries };
    const problems = decision.writes.map((v) => signerProblem(intended.find((i) => i.variable === v)!, enrolled)).filter((p): p is string => p !== undefined);
    if (problems.length) throw new TaskError(`not in Setup Mode, and ${problems.join('; ')}. Nothing was written`);
  }

  // 4. Write, in order; PK last.
  const step = 70 / decision.writes.length;
  for (const [n, v] of decision.writes.entries()) {
    ctx.signal.throwIfAborted();
    const i = intended.find((x) => x.variable === v)!;
    ctx.progress({ taskProgress: 10 + n * step, message: `writing ${v}` });
    let steps: string[];
    try {
      steps = await vars.write(v, i.attributes, i.auth);
    } catch (e) {
      const done = decision.writes.slice(0, n);
      throw new TaskError(`${(e as Error).message}${done.length ? ` (already written: ${done.join(', ')})` : ' (nothing was written)'}`);
    }
    for (const s of steps) ctx.log('info', `${v}: ${s}`);
  }

  // 5. Read back: the firmware must hold what was intended, and have left Setup Mode.
  ctx.progress({ taskProgress: 85, message: 'reading the keys back' });
  const after = await readState(vars);
  const problems: string[] = [];
  for (const i of intended) {
    const s = await vars.read(i.variable);
    const c = compareVariable(i, s?.data);
    if (!c.same) problems.push(c.why!);
  }
  if (decision.action === 'enroll' && after.setupMode !== 0) problems.push(`the firmware is still in ${describeState(after)} after PK was written`);
  if (problems.length) throw new TaskError(`after writing ${decision.writes.join(', ')} the firmware does not hold the intended keys: ${problems.join('; ')}`);
  ctx.log('info', `enrolled: ${intended.map((i) => i.variable).join(', ')} read back as intended; firmware now in ${describeState(after)}${after.secureBoot === 1 ? '' : '; Secure Boot is enforced from the next boot'}`);
  ctx.progress({ taskProgress: 100, message: `keys enrolled, ${modeOf(after)}` });
}

const signerName = (der: Buffer) => describeCertificate(der);
const describeSigner = (i: Intended) => signerName(i.signer);

/** What a dry run would do: read and check the inputs and the firmware's mode, write nothing. */
export async function dryRunEnroll(options: EnrollSecureBootOptions): Promise<string[]> {
  const o = options;
  const lines: string[] = [];
  const intended = await loadIntended(o);
  const root = o.efivars ?? DEFAULT_EFIVARS;
  for (const i of intended) lines.push(`${i.variable}: ${i.source} (${i.auth.length} bytes, ${i.entries.length} entr${i.entries.length === 1 ? 'y' : 'ies'}, signed by ${signerName(i.signer)}${i.append ? ', append' : ''})`);
  const readable = await isEfivarfs(root);
  if (!readable && (o.mount ?? true)) {
    lines.push(`efivarfs is not mounted at ${root}: the run would mount it and decide by the firmware's mode`);
    lines.push(`in Setup Mode it would write, in order: ${intended.map((i) => `${efivarfsName(i.variable)} (0x${i.attributes.toString(16)} + ${i.auth.length} bytes)`).join(', ')}`);
    return lines;
  }
  const vars = efivarfs(root);
  const state = await readState(vars);
  const decision = decide({ state, intended, stored: await readStored(vars, intended), policy: o.ifAlreadyEnrolled ?? 'fail' });
  lines.push(`firmware: ${describeState(state)}`);
  if (decision.action === 'enroll' || decision.action === 'update') {
    for (const v of decision.writes) {
      const i = intended.find((x) => x.variable === v)!;
      lines.push(`would write ${root}/${efivarfsName(v)}: attributes 0x${i.attributes.toString(16)} + ${i.auth.length} bytes of ${i.source}`);
    }
  } else {
    lines.push(`would ${decision.action === 'refuse' ? 'refuse' : 'write nothing'}: ${decision.message}`);
  }
  return lines;
}

export const enrollSecureBoot: BuiltinTask<typeof EnrollSecureBootOptions> = {
  name: 'enroll-secure-boot',
  description: 'Enroll Secure Boot keys (db, dbx, KEK, then PK) from signed .auth files, and check them by reading back',
  destructive: true,
  optionsSchema: EnrollSecureBootOptions,
  run: (ctx) => enroll(ctx),
  dryRun: dryRunEnroll,
};
