// The enrollment's decisions, without I/O: which mode the firmware is in, whether the
// enrolled keys are the intended ones, what to write in which order, and the messages.
import { compareEsl, decodeEsl, type EslComparison, type EslEntry } from '../../../secureboot/esl.ts';
import type { KeyVariable } from '../../../secureboot/variables.ts';
import { describeCertificate } from '../../../secureboot/x509.ts';

/** The one-byte mode variables; undefined when the variable does not exist. */
export interface FirmwareState {
  setupMode?: number;
  secureBoot?: number;
  auditMode?: number;
  deployedMode?: number;
}

export type ModeName = 'Setup Mode' | 'Audit Mode' | 'User Mode' | 'Deployed Mode' | 'unknown mode';

export function modeOf(s: FirmwareState): ModeName {
  if (s.setupMode === 1) return s.auditMode === 1 ? 'Audit Mode' : 'Setup Mode';
  if (s.setupMode === 0) return s.deployedMode === 1 ? 'Deployed Mode' : 'User Mode';
  return 'unknown mode';
}

export function describeState(s: FirmwareState): string {
  const v = (n: number | undefined) => (n === undefined ? 'absent' : String(n));
  return `${modeOf(s)} (SetupMode=${v(s.setupMode)}, SecureBoot=${v(s.secureBoot)}, AuditMode=${v(s.auditMode)}, DeployedMode=${v(s.deployedMode)})`;
}

/** In this order: db and dbx while KEK still accepts them, KEK while PK does, PK last (it ends Setup Mode). */
export const WRITE_ORDER: readonly KeyVariable[] = ['db', 'dbx', 'KEK', 'PK'];

/** One variable the task is to set. */
export interface Intended {
  variable: KeyVariable;
  /** Where the .auth came from (path or URL), for messages. */
  source: string;
  auth: Buffer;
  /** The value the firmware will store: the .auth's signature list. */
  entries: EslEntry[];
  /** The .auth was signed for an append (0x67) rather than a replacement (0x27). */
  append: boolean;
  attributes: number;
  /** The certificate that signed the .auth. */
  signer: Buffer;
}

export type Policy = 'fail' | 'skip' | 'update';

export type Decision =
  | { action: 'enroll'; writes: KeyVariable[]; message: string }
  | { action: 'update'; writes: KeyVariable[]; message: string }
  | { action: 'nothing'; message: string }
  | { action: 'refuse'; message: string };

const entryName = (e: EslEntry) => (e.kind === 'x509' ? describeCertificate(e.data) : e.kind === 'sha256' ? `sha256 ${e.data.toString('hex').slice(0, 16)}…` : `${e.type} entry`);

/** "db: missing A; not intended: B" for a comparison that is not `same`. */
export function describeDifference(variable: KeyVariable, c: EslComparison): string {
  const parts: string[] = [];
  if (c.missing.length) parts.push(`missing ${c.missing.map(entryName).join(', ')}`);
  if (c.unexpected.length) parts.push(`not intended ${c.unexpected.map(entryName).join(', ')}`);
  return `${variable}: ${parts.join('; ')}`;
}

/** Decodes a stored value; a value that is not a signature list compares as different. */
export function storedEntries(variable: KeyVariable, data: Buffer | undefined): { entries: EslEntry[]; error?: string } {
  if (data === undefined || data.length === 0) return { entries: [] };
  try {
    return { entries: decodeEsl(data, `the enrolled ${variable}`) };
  } catch (e) {
    return { entries: [], error: (e as Error).message };
  }
}

export function compareVariable(i: Intended, stored: Buffer | undefined): { same: boolean; why?: string } {
  const s = storedEntries(i.variable, stored);
  if (s.error) return { same: false, why: s.error };
  if (stored === undefined) return { same: false, why: `${i.variable}: not set` };
  const c = compareEsl(i.entries, s.entries, i.append);
  return c.same ? { same: true } : { same: false, why: describeDifference(i.variable, c) };
}

/**
 * Which certificates must have signed an update of `variable` outside Setup Mode: KEK or
 * PK for db/dbx, PK for KEK and PK. Undefined when the signer is acceptable.
 */
export function signerProblem(i: Intended, enrolled: Record<'PK' | 'KEK', EslEntry[]>): string | undefined {
  const holders: Array<'PK' | 'KEK'> = i.variable === 'db' || i.variable === 'dbx' ? ['KEK', 'PK'] : ['PK'];
  const ok = holders.some((h) => enrolled[h].some((e) => e.kind === 'x509' && e.data.equals(i.signer)));
  if (ok) return undefined;
  return `${i.source} is signed by ${describeCertificate(i.signer)}, which is not in the enrolled ${holders.join(' or ')}: the firmware would refuse it. Sign the update with the current ${holders[0]} key`;
}

export interface DecideInput {
  state: FirmwareState;
  intended: readonly Intended[];
  /** Stored values by variable (undefined: not set). */
  stored: Partial<Record<KeyVariable, Buffer>>;
  policy: Policy;
}

export function decide(o: DecideInput): Decision {
  const mode = modeOf(o.state);
  const ordered = WRITE_ORDER.filter((v) => o.intended.some((i) => i.variable === v));
  if (o.state.setupMode === 1) {
    return { action: 'enroll', writes: ordered, message: `the firmware is in ${describeState(o.state)}: enrolling ${ordered.join(', ')}` };
  }
  if (o.state.setupMode === undefined) {
    return {
      action: 'refuse',
      message: 'the firmware has no SetupMode variable: it does not support Secure Boot (or it is disabled in its setup). Nothing was written',
    };
  }
  const diffs = o.intended.map((i) => ({ i, ...compareVariable(i, o.stored[i.variable]) })).filter((d) => !d.same);
  if (diffs.length === 0) {
    if (o.policy === 'fail') {
      return {
        action: 'refuse',
        message: `the firmware is in ${describeState(o.state)} and already holds exactly the intended keys; nothing was written. Set ifAlreadyEnrolled: skip to accept this (e.g. a re-run after a power loss)`,
      };
    }
    return { action: 'nothing', message: `the firmware is in ${describeState(o.state)} and already holds exactly the intended ${ordered.join(', ')}: nothing to write` };
  }
  const what = diffs.map((d) => d.why).join('; ');
  if (o.policy !== 'update') {
    return {
      action: 'refuse',
      message:
        `the firmware is in ${mode}, not Setup Mode, and holds other keys than intended (${what}); nothing was written. ` +
        'To enroll: put the firmware in Setup Mode (in its setup: clear/reset the Secure Boot keys, or delete PK), then run again; ' +
        'or give updates signed with the current PK/KEK and set ifAlreadyEnrolled: update',
    };
  }
  const writes = WRITE_ORDER.filter((v) => diffs.some((d) => d.i.variable === v));
  return { action: 'update', writes, message: `the firmware is in ${describeState(o.state)}; writing signed updates of ${writes.join(', ')} (${what})` };
}
