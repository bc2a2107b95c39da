/**
 * Behaviour pin: the golden runs of test/golden/cases.ts (demo model and stand-in bundles of all
 * three families, plus `cil plan --json`) must give exactly the bytes recorded before the "one
 * house" restructuring (test/fixtures/golden/expected). A failure names the first file that differs
 * and, for the latent, how far it moved.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readNpy } from '#shared/formats';
import { CASES, EXPECTED, PLAN_CASES, ROOT, digest, runCase } from './golden/cases.ts';

interface Recorded {
  readonly files: Record<string, string>;
  readonly metadata: Record<string, unknown>;
}

describe('golden runs: same seed, same bytes as recorded before the restructuring', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (name, c) => {
    const want = JSON.parse(await readFile(join(EXPECTED, `${name}.json`), 'utf8')) as Recorded;
    const work = await mkdtemp(join(tmpdir(), 'cil-golden-'));
    try {
      const got = await runCase(c, work);
      const wantLatent = readNpy(await readFile(join(EXPECTED, `${name}.latent.npy`)), 'recorded').tensor.data;
      const gotLatent = readNpy(got.files.get('latent.npy')!, 'latent.npy').tensor.data;
      let maxDiff = 0;
      for (let i = 0; i < wantLatent.length; i++) maxDiff = Math.max(maxDiff, Math.abs(wantLatent[i] - gotLatent[i]));
      expect(maxDiff, 'latent max |Δ|').toBe(0);
      expect(digest(got.files)).toEqual(want.files);
      expect(got.metadata).toEqual(want.metadata);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }, 120_000);

  it('cil plan --json gives the recorded plans', async () => {
    const want = JSON.parse(await readFile(join(EXPECTED, 'plans.json'), 'utf8')) as { args: string[]; plan: unknown }[];
    expect(want.map((w) => w.args)).toEqual(PLAN_CASES);
    for (const w of want) {
      const plan = JSON.parse(execFileSync(process.execPath, [join(ROOT, 'bin', 'cil.js'), 'plan', ...w.args, '--json'], { encoding: 'utf8' })) as unknown;
      expect(plan, w.args.join(' ')).toEqual(w.plan);
    }
  }, 120_000);
});
