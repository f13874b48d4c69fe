// The catalogue of built-in tasks, by the name a config's `builtin:` uses.
import type { BuiltinTask } from './builtin.ts';
import { deployImage } from './deploy-image/index.ts';
import { enrollSecureBoot } from './enroll-secure-boot/index.ts';
import { collectInventoryTask } from './collect-inventory/index.ts';
import { encryptDisk } from './encrypt-disk/index.ts';

export const builtins: Record<string, BuiltinTask> = {
  [deployImage.name]: deployImage as unknown as BuiltinTask,
  [enrollSecureBoot.name]: enrollSecureBoot as unknown as BuiltinTask,
  [collectInventoryTask.name]: collectInventoryTask as unknown as BuiltinTask,
  [encryptDisk.name]: encryptDisk as unknown as BuiltinTask,
};
