// EFI_TIME (16 bytes) and the `YYYY-MM-DD HH:MM:SS` text sign-efi-sig-list takes with -t.
// The time of a time-based authenticated write: the firmware refuses an update whose
// time is not later than the variable's (except for appends, where efitools uses zero).

export class TimestampError extends Error {
  override name = 'TimestampError';
}

export interface EfiTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

export const ZERO_TIME: EfiTime = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };

const TEXT = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/;

export function parseTimestamp(text: string): EfiTime {
  const m = TEXT.exec(text.trim());
  if (!m) throw new TimestampError(`timestamp "${text}" is not of the form YYYY-MM-DD HH:MM:SS (e.g. 2026-01-31 12:00:00)`);
  const [year, month, day, hour, minute, second] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (year < 1900 || month < 1 || month > 12 || day < 1 || day > days || hour > 23 || minute > 59 || second > 59) {
    throw new TimestampError(`timestamp "${text}" is not a real date and time (year 1900-9999, month 1-12, day 1-${month >= 1 && month <= 12 ? days : 31}, 00:00:00-23:59:59)`);
  }
  return { year, month, day, hour, minute, second };
}

export function timeOfDate(d: Date): EfiTime {
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate(), hour: d.getUTCHours(), minute: d.getUTCMinutes(), second: d.getUTCSeconds() };
}

export function formatTimestamp(t: EfiTime): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(t.year, 4)}-${p(t.month)}-${p(t.day)} ${p(t.hour)}:${p(t.minute)}:${p(t.second)}`;
}

/** Year u16, Month, Day, Hour, Minute, Second, Pad1 u8, Nanosecond u32, TimeZone i16, Daylight, Pad2: zeros as efitools writes. */
export function encodeEfiTime(t: EfiTime): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(t.year, 0);
  b.writeUInt8(t.month, 2);
  b.writeUInt8(t.day, 3);
  b.writeUInt8(t.hour, 4);
  b.writeUInt8(t.minute, 5);
  b.writeUInt8(t.second, 6);
  return b;
}

export function decodeEfiTime(b: Buffer): EfiTime {
  return { year: b.readUInt16LE(0), month: b[2]!, day: b[3]!, hour: b[4]!, minute: b[5]!, second: b[6]! };
}
