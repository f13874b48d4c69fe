import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { createReporter } from '../../src/agent/reporters/create.ts';
import { CommandReporter } from '../../src/agent/reporters/command.ts';
import { ConsoleReporter } from '../../src/agent/reporters/console.ts';
import { HttpReporter } from '../../src/agent/reporters/http.ts';
import { JsonReporter } from '../../src/agent/reporters/json.ts';
import { LedReporter } from '../../src/agent/reporters/led.ts';
import { PsplashReporter } from '../../src/agent/reporters/psplash.ts';
import { collectWarnings } from './helpers.ts';

test('each reporter type builds its reporter, named after what it talks to', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'bootline-create-'));
  try {
    const w = collectWarnings();
    const stdout = new Writable({ write: (_c, _e, cb) => cb() });
    const env = { warn: w.warn, stdout, isTTY: false };
    const made = [
      createReporter({ type: 'console' }, env),
      createReporter({ type: 'json', path: join(dir, 'e.ndjson') }, env),
      createReporter({ type: 'led', leds: ['a', 'b'], root: dir }, env),
      createReporter({ type: 'http', url: 'http://127.0.0.1:9/api' }, env),
      createReporter({ type: 'psplash' }, env),
      createReporter({ type: 'command', command: 'true' }, env),
    ];
    assert.ok(made[0] instanceof ConsoleReporter);
    assert.equal((made[0] as ConsoleReporter).mode, 'plain');
    assert.ok(made[1] instanceof JsonReporter);
    assert.ok(made[2] instanceof LedReporter);
    assert.ok(made[3] instanceof HttpReporter);
    assert.ok(made[4] instanceof PsplashReporter);
    assert.ok(made[5] instanceof CommandReporter);
    assert.deepEqual(
      made.map((r) => r.name),
      ['console', `json(${join(dir, 'e.ndjson')})`, 'led(a,b)', 'http(http://127.0.0.1:9/api)', 'psplash(/run/psplash_fifo)', 'command(true)'],
    );
    for (const r of made) await r.close?.(Date.now() + 200);
    assert.deepEqual(w.messages, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
