// Bundles the CLI into one self-contained ESM file (dist/bootline.mjs): the form the
// agent takes on a device, where there is plain `node` and no node_modules.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

const common = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'warning',
};

await build({
  ...common,
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/bootline.mjs',
  define: { BOOTLINE_VERSION: JSON.stringify(pkg.version), BOOTLINE_SERVER_ENTRY: JSON.stringify('./bootline-server.mjs') },
  // Some CommonJS dependencies call require() for node builtins; give the ESM bundle one.
  banner: { js: "#!/usr/bin/env node\nimport { createRequire as __bootlineRequire } from 'node:module';\nconst require = __bootlineRequire(import.meta.url);" },
});

// The server: its own file, which loads Fastify, the database drivers (better-sqlite3 is
// native) and the rest from node_modules instead of carrying them.
await build({
  ...common,
  entryPoints: ['src/server/main.ts'],
  outfile: 'dist/bootline-server.mjs',
  packages: 'external',
});

// The dashboard (src/web, React): built by Vite into dist/web, which the server serves. The
// agent's bundle above imports none of it.
const { build: viteBuild } = await import('vite');
await viteBuild({ configFile: new URL('../src/web/vite.config.ts', import.meta.url).pathname });
