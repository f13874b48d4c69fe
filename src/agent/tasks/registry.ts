// The catalogue of built-in tasks, by the name a config's `builtin:` uses.
import type { BuiltinTask } from './builtin.ts';
import { deployImage } from './deploy-image/index.ts';
import { enrollSecureBoot } from './enroll-secure-boot/index.ts';

export const builtins: Record<string, BuiltinTask> = {
  [deployImage.name]: deployImage as unknown as BuiltinTask,
  [enrollSecureBoot.name]: enrollSecureBoot as unknown as BuiltinTask,
};
