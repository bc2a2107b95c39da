/**
 * Processes started ahead for the local Batch stand-in (local/src/warmStart.ts) with the real CLI:
 * a spare handed its job prints what a cold `cil` prints; the unused one ends when stopped.
 * The Batch side (environment, retries, timeouts) is in batch.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { WarmStarts } from '../src/warmStart.ts';

const ROOT = join(import.meta.dirname, '..', '..');

describe('WarmStarts with the real CLI', () => {
  const entrypoint = [process.execPath, join(ROOT, 'bin', 'cil.js')];
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? ROOT };

  function output(child: NonNullable<ReturnType<WarmStarts['take']>>): Promise<{ code: number | null; stdout: string }> {
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.resume();
    return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout })));
  }

  it('a spare runs its job as a cold `cil` does (same output), and the next spare is ready; stop ends the unused one', async () => {
    const cold = spawnSync(entrypoint[0], [...entrypoint.slice(1), 'plan', '--family', 'svd', '--json'], { cwd: ROOT, env, encoding: 'utf8' });
    expect(cold.status).toBe(0);
    const warm = new WarmStarts({ entrypoint, cwd: ROOT, env });
    warm.prime('plan');
    const first = warm.take(['plan', '--family', 'svd', '--json'], env);
    expect(first).not.toBeNull();
    expect(await output(first!)).toEqual({ code: 0, stdout: cold.stdout });
    const second = warm.take(['plan', '--family', 'svd', '--json'], env);
    expect(second).not.toBeNull();
    expect(await output(second!)).toEqual({ code: 0, stdout: cold.stdout });
    // The third spare (started by the second take) waits; stop ends it by closing its stdin
    // (exit 0), not by the SIGKILL fallback.
    expect(await warm.stop(60_000)).toEqual([{ code: 0, signal: null }]);
    expect(warm.take(['plan'], env)).toBeNull();
  }, 90_000);
});
