// Isar's /install/auto.install: one value per line, in this order
//   1 image path or URI           (required)
//   2 target device(s), candidates separated by commas or colons   (required)
//   3 OVERWRITE | ABORT           (required)
//   4 abort enable: true | false  (optional, default false)
//   5 abort timeout in seconds    (optional, default 5)
// Its presence makes the run unattended. Lines are trimmed, CRLF is tolerated, blank
// lines after the last value are ignored. An optional line left out (or blank) sets
// nothing, so the default or another source decides.
import { ConfigError, type ConfigIssue, type Layer, type Origin } from './layer.ts';
import { LayerBuilder } from './schema-path.ts';
import { applyInstallerValue, parseInstallerValue, type InstallerInput } from './installer-params.ts';

interface LineSpec {
  input: InstallerInput;
  /** Name used in messages. */
  what: string;
  required: boolean;
}

const LINES: readonly LineSpec[] = [
  { input: 'image', what: 'image', required: true },
  { input: 'target', what: 'target device', required: true },
  { input: 'overwrite', what: 'overwrite', required: true },
  { input: 'abortEnable', what: 'abort enable', required: false },
  { input: 'abortTimeout', what: 'abort timeout', required: false },
];

export function parseAutoInstall(text: string, source: string): Layer {
  const b = new LayerBuilder(source);
  const issues: ConfigIssue[] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n|\r/).map((l) => l.trim());
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();

  LINES.forEach((spec, i) => {
    const line = i + 1;
    const origin: Origin = { source, line };
    const raw = lines[i] ?? '';
    if (raw === '') {
      if (spec.required) {
        const parsed = parseInstallerValue(spec.input, '');
        const expected = parsed.ok ? '' : parsed.expected;
        issues.push({
          origin,
          key: spec.what,
          message: `${lines.length < line ? 'missing' : 'empty'} — line ${line} must hold ${expected}`,
        });
      }
      return;
    }
    const parsed = parseInstallerValue(spec.input, raw);
    if (!parsed.ok) {
      issues.push({ origin, key: spec.what, message: `must be ${parsed.expected}, got "${raw}"` });
      return;
    }
    applyInstallerValue(b, spec.input, parsed.value, origin);
  });

  for (let i = LINES.length; i < lines.length; i++) {
    if (lines[i] === '') continue;
    issues.push({
      origin: { source, line: i + 1 },
      key: 'auto.install',
      message: `unexpected line "${lines[i]}": auto.install has at most ${LINES.length} lines (image, target device, overwrite, abort enable, abort timeout)`,
    });
    break;
  }

  if (issues.length > 0) throw new ConfigError(issues);
  // The file's presence is what makes the run unattended (as in Isar).
  b.set(['unattended'], true, { source });
  return b.layer();
}
