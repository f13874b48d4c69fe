// Bundles the CLI into one self-contained ESM file (dist/bootline.mjs): the form the
// agent takes on a device, where there is plain `node` and no node_modules.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

await build({
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/bootline.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: false,
  legalComments: 'none',
  define: { BOOTLINE_VERSION: JSON.stringify(pkg.version) },
  // Some CommonJS dependencies call require() for node builtins; give the ESM bundle one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __bootlineRequire } from 'node:module';\nconst require = __bootlineRequire(import.meta.url);" },
  logLevel: 'warning',
});
