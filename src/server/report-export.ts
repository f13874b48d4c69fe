// Run reports for a line's records: one row per run (JSON or CSV). Pure.
import type { Device, Run } from '../api/admin.ts';
import type { EscrowedVolume } from '../api/recovery-key.ts';

/** What a report row says of a volume escrowed during the run: never its key. */
export type ReportVolume = Pick<EscrowedVolume, 'volumeUuid' | 'partition' | 'keyslot'>;

export interface ReportRow {
  deviceId: string;
  serial: string;
  batch: string;
  macs: string;
  runId: string;
  plan: string;
  status: string;
  startedAt: string;
  endedAt: string;
  durationSeconds: string;
  failedTask: string;
  message: string;
  /** Volumes whose recovery key was escrowed during the run: `<uuid> (<partition> keyslot <n>)`, `; `-separated. */
  volumes: string;
}

export const REPORT_COLUMNS: (keyof ReportRow)[] = [
  'deviceId', 'serial', 'batch', 'macs', 'runId', 'plan', 'status', 'startedAt', 'endedAt', 'durationSeconds', 'failedTask', 'message', 'volumes',
];

export function reportRow(run: Run, device: Device, volumes: readonly ReportVolume[] = []): ReportRow {
  const tasks = Array.isArray(run.report?.tasks) ? (run.report.tasks as { name?: unknown; status?: unknown; optional?: unknown; message?: unknown }[]) : [];
  const failed = tasks.find((t) => t.status === 'failed' && t.optional !== true);
  const duration = run.endedAt ? (Date.parse(run.endedAt) - Date.parse(run.startedAt)) / 1000 : NaN;
  const message = typeof run.report?.message === 'string' ? run.report.message : typeof failed?.message === 'string' ? failed.message : (device.message ?? '');
  return {
    deviceId: device.id,
    serial: device.serial ?? '',
    batch: device.batch ?? '',
    macs: device.macs.join(' '),
    runId: run.id,
    plan: run.plan ?? '',
    status: run.status,
    startedAt: run.startedAt,
    endedAt: run.endedAt ?? '',
    durationSeconds: Number.isFinite(duration) ? duration.toFixed(1) : '',
    failedTask: typeof failed?.name === 'string' ? failed.name : '',
    message: run.status === 'ok' ? '' : message,
    volumes: volumes.map((v) => `${v.volumeUuid} (${v.partition} keyslot ${v.keyslot})`).join('; '),
  };
}

/**
 * RFC 4180 quoting, and a leading ' on cells a spreadsheet would run as a formula
 * (= + - @ tab CR): a device-supplied message must not become a formula in the QA sheet.
 */
export function csvCell(v: string): string {
  const safe = /^[=+\-@\t\r]/.test(v) ? `'${v}` : v;
  return /[",\r\n]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function toCsv(rows: ReportRow[]): string {
  const lines = [REPORT_COLUMNS.join(','), ...rows.map((r) => REPORT_COLUMNS.map((c) => csvCell(r[c])).join(','))];
  return lines.join('\r\n') + '\r\n';
}
