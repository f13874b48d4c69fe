// A plan is checked with the agent's own schema and built-in catalogue before it is saved,
// so a mistake shows up in the dashboard, not on a device on the line.
import { parseConfigText } from '../config/yaml-file.ts';
import { validateConfig } from '../config/validate.ts';
import { ConfigError, formatIssue } from '../config/layer.ts';
import { builtins } from '../agent/tasks/registry.ts';
import { badRequest } from './errors.ts';

export function validatePlan(name: string, config: Record<string, unknown>): void {
  if (!Array.isArray(config.tasks)) throw badRequest('invalid-plan', `plan ${name}: tasks: a plan needs a list of tasks`);
  try {
    // Through the text parser, so each issue names the key's place in the plan.
    validateConfig(parseConfigText(JSON.stringify(config, null, 2), `plan ${name}`), builtins);
  } catch (e) {
    if (e instanceof ConfigError) throw badRequest('invalid-plan', e.issues.map(formatIssue).join('; '));
    throw e;
  }
}
