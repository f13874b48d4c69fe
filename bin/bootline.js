#!/usr/bin/env node
// Thin launcher for `npx bootline`: the real program is the bundle built by `npm run build`.
import '../dist/bootline.mjs';
