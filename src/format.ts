// Sizes and durations the way a person reads them; shared by the console and the tasks.

const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** Binary units with one decimal, e.g. "512.0 MiB"; plain bytes below 1 KiB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '?';
  if (n < 1024) return `${Math.round(n)} B`;
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${UNITS[i]}`;
}


const pad2 = (n: number) => String(n).padStart(2, '0');

/** "1.2 s" under a minute, then "4m 05s", then "1h 02m 03s". */
export function formatDuration(ms: number): string {
  const s = Number.isFinite(ms) && ms > 0 ? ms / 1000 : 0;
  if (s < 59.95) return `${s.toFixed(1)} s`;
  const total = Math.round(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  return h > 0 ? `${h}h ${pad2(m)}m ${pad2(sec)}s` : `${m}m ${pad2(sec)}s`;
}
