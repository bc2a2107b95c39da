/**
 * `cil --await-job <verb>` (cli/prestart.ts): a process started ahead loads its verb, then runs the
 * job it is handed on stdin with exactly the job's environment (local/test/warmStart.test.ts runs
 * the real CLI this way).
 */
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { UsageError } from '../errors.ts';
import { runPrestarted } from '../prestart.ts';
const savedEnv = { ...process.env };
afterEach(() => {
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, savedEnv);
});

function stdin(text: string | null): PassThrough {
  const s = new PassThrough();
  if (text !== null) s.write(text);
  s.end();
  return s;
}

const loaded = (): Promise<void> => Promise.resolve();

describe('runPrestarted', () => {
  it('loads the verb first, then runs the hand-off with the job environment only', async () => {
    const order: string[] = [];
    process.env.LEFT_FROM_THE_SPARE = 'x';
    let seen: { argv: string[]; env: Record<string, string | undefined> } | null = null;
    const code = await runPrestarted(
      'worker',
      (argv) => Promise.resolve(void order.push(`load ${argv.join(' ')}`)),
      (argv) => {
        order.push('run');
        seen = { argv, env: { ...process.env } };
        return Promise.resolve(7);
      },
      stdin(`${JSON.stringify({ argv: ['worker', '--spec', 's3://b/k'], env: { CIL_JOB_SPEC_URI: 's3://b/k', PATH: '/bin' } })}\n`),
    );
    expect(code).toBe(7);
    expect(order).toEqual(['load worker', 'run']);
    expect(seen).toEqual({ argv: ['worker', '--spec', 's3://b/k'], env: { CIL_JOB_SPEC_URI: 's3://b/k', PATH: '/bin' } });
  });

  it('exits 0 without running anything when stdin closes first (an unused spare)', async () => {
    let ran = false;
    const code = await runPrestarted('worker', loaded, () => Promise.resolve(((ran = true), 1)), stdin(null));
    expect([code, ran]).toEqual([0, false]);
  });

  it('refuses a missing verb, a bad hand-off and a hand-off for another verb, as usage errors', async () => {
    const none = (): Promise<number> => Promise.resolve(0);
    await expect(runPrestarted(undefined, loaded, none, stdin(null))).rejects.toThrow(/--await-job needs the verb/);
    await expect(runPrestarted('worker', loaded, none, stdin('not json\n'))).rejects.toBeInstanceOf(UsageError);
    await expect(runPrestarted('worker', loaded, none, stdin('{"argv":["worker"],"env":{"A":1}}\n'))).rejects.toThrow(/one JSON line/);
    await expect(runPrestarted('worker', loaded, none, stdin('{"argv":["plan"],"env":{}}\n'))).rejects.toThrow(/runs 'plan', not the verb this process loaded/);
  });
});
