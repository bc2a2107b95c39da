/**
 * The extra reference fixtures (test/fixtures/reference, from tools/reference/fixtures.py running
 * the authors' code): DynamiCrafter's DDIM tables for several start times M and step counts, the
 * Analytic-Init coefficients per M, and TimeNoise moments sampled by the authors' get_beta_s.
 */
import { describe, expect, it } from 'vitest';
import { makePlan, planJson } from '../src/sampler/plan.ts';
import { timeNoiseMoments } from '../src/sampler/timeNoise.ts';
import { DDIM_COLUMNS, HAVE_REFERENCE, loadReference, maxRelErr, reversed } from './refFixtures.ts';

type Tables = Record<'ddim_timesteps' | 'ddim_alphas' | 'ddim_alphas_prev' | 'ddim_sigmas' | 'ddim_scale_arr' | 'ddim_scale_arr_prev', (number | null)[]>;
interface Grid {
  cases: { M: number; steps: number; float64: Tables; float32: Tables }[];
  analytic_init: Record<string, { sqrt_alpha_t: number; sigma_p_by_trCov_d: Record<string, number> }>;
}
interface Moments {
  samples: number;
  rows: { t: number; sampled_mean: number; sampled_std: number; sampled_se_mean: number; sampled_se_std: number }[];
}

const COLUMNS = DDIM_COLUMNS as readonly (readonly [string, keyof Tables])[];
/** Columns that read the previous (smaller) timestep's entry. */
const READS_PREVIOUS = new Set(['alphasPrev', 'sigmas', 'scalePrev']);

describe.skipIf(!HAVE_REFERENCE)("DynamiCrafter DDIM plans vs the authors' sampler over M × steps", () => {
  const grid = HAVE_REFERENCE ? loadReference<Grid>('dynamicrafter_ddim_grid.json') : null;
  for (const c of grid?.cases ?? []) {
    it(`M = ${c.M}, ${c.steps} steps (float64 to 1e-12, float32 to 1e-6 beyond its own rounding)`, () => {
      const plan = planJson(makePlan({ family: 'dynamicrafter', steps: c.steps, start: c.M })) as Record<string, number[]>;
      // numpy's arange adds a spurious timestep −1 for some M (ddim.ts, docs/design.md §4): the authors'
      // sampler then takes ᾱ[−1] as the previous ᾱ of the smallest real timestep (σ = NaN there).
      // The plan drops it: equal to the reference except those entries of the smallest timestep.
      const spurious = c.float64.ddim_timesteps[0] === -1;
      if (spurious) expect(c.float64.ddim_sigmas[1]).toBeNull();
      const drop = spurious ? 1 : 0;
      for (const [ours, theirs] of COLUMNS) {
        const keep = spurious && READS_PREVIOUS.has(ours) ? c.steps - 1 : c.steps;
        const r64 = reversed(c.float64[theirs].slice(drop) as number[]).slice(0, keep);
        const r32 = reversed(c.float32[theirs].slice(drop) as number[]).slice(0, keep);
        const o = plan[ours].slice(0, keep);
        expect(plan[ours].length, ours).toBe(c.steps);
        expect(maxRelErr(o, r64), ours).toBeLessThan(1e-12);
        expect(maxRelErr(o, r32), ours).toBeLessThan(maxRelErr(r32, r64) + 1e-6);
      }
    });
  }
  it('Analytic-Init coefficients per M (√ᾱ_{M−1}, √(1 − ᾱ + ᾱ·trCov_d))', () => {
    for (const [m, ref] of Object.entries(grid!.analytic_init)) {
      for (const [tr, std] of Object.entries(ref.sigma_p_by_trCov_d)) {
        const init = makePlan({ family: 'dynamicrafter', start: Number(m), trCovD: Number(tr) }).init;
        expect(Math.abs(init.meanCoef - ref.sqrt_alpha_t), `M=${m}`).toBeLessThan(1e-12);
        expect(Math.abs(init.std - std), `M=${m}, trCov_d=${tr}`).toBeLessThan(1e-12);
      }
    }
  });
});

describe.skipIf(!HAVE_REFERENCE)("TimeNoise closed form vs the authors' get_beta_s draws", () => {
  it('mean and std within 5 standard errors of 10^6 seeded draws per t', () => {
    const ref = loadReference<Moments>('timenoise_moments.json');
    expect(ref.samples).toBeGreaterThanOrEqual(1_000_000);
    for (const r of ref.rows) {
      const m = timeNoiseMoments(r.t);
      expect(Math.abs(m.mean - r.sampled_mean), `mean at t=${r.t}`).toBeLessThan(5 * r.sampled_se_mean);
      expect(Math.abs(m.std - r.sampled_std), `std at t=${r.t}`).toBeLessThan(5 * r.sampled_se_std);
    }
  });
});
