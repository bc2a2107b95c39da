import { describe, expect, it } from 'vitest';
import { eulerPlan, eulerStepCoefs } from '../src/sampler/euler.ts';
import { makePlan, planJson } from '../src/sampler/plan.ts';
import { HAVE_REFERENCE, loadReference, maxRelErr } from './refFixtures.ts';

describe('EDM Euler plan (hand-computed)', () => {
  it('c_in, c_noise, c_skip, c_out follow the EDM v-prediction formulas', () => {
    const p = eulerPlan({ steps: 10, sigmaMax: 100, sigmaMin: 0.002, rho: 7 });
    const s = p.sigmas[3];
    expect(p.cIn[3]).toBeCloseTo(1 / Math.sqrt(s * s + 1), 15);
    expect(p.timesteps[3]).toBeCloseTo(0.25 * Math.log(s), 15);
    expect(p.cSkip[3]).toBeCloseTo(1 / (s * s + 1), 15);
    expect(p.cOut[3]).toBeCloseTo(-s / Math.sqrt(s * s + 1), 15);
    expect(p.sigmas[10]).toBe(0);
    expect(p.initNoiseSigma).toBeCloseTo(Math.sqrt(100 * 100 + 1), 9);
  });
  it('the step coefficients reproduce x + (x − x̂0)/σ·(σ_next − σ)', () => {
    const p = eulerPlan({ steps: 5, sigmaMax: 50, sigmaMin: 0.002, rho: 7 });
    const c = eulerStepCoefs(p, 2);
    const x = 0.37;
    const v = -1.3;
    const sigma = p.sigmas[2];
    const x0 = x / (sigma * sigma + 1) - (v * sigma) / Math.sqrt(sigma * sigma + 1);
    const expected = x + ((x - x0) / sigma) * (p.sigmas[3] - sigma);
    expect(c.xCoef * x + c.outCoef * v).toBeCloseTo(expected, 12);
    expect(c.noiseStd).toBe(0);
  });
  it('refuses σ_max ≤ σ_min and fewer than 2 steps', () => {
    expect(() => eulerPlan({ steps: 10, sigmaMax: 0.001, sigmaMin: 0.002, rho: 7 })).toThrow(/greater than σ_min/);
    expect(() => eulerPlan({ steps: 1, sigmaMax: 700, sigmaMin: 0.002, rho: 7 })).toThrow(/steps/);
  });
});

interface SvdRef {
  float64: { sigmas: number[]; timesteps: number[]; init_noise_sigma: number; per_step: Record<string, number>[] };
  float32: { sigmas: number[]; timesteps: number[]; init_noise_sigma: number; per_step: Record<string, number>[] };
}

describe.skipIf(!HAVE_REFERENCE)('SVD Euler plan vs diffusers as the authors run it (25 steps, σ_max = 700)', () => {
  const ref = HAVE_REFERENCE ? loadReference<SvdRef>('svd_25steps_sigmamax700.json') : null;
  const j = planJson(makePlan({ family: 'svd', steps: 25, start: 700 })) as Record<string, number[]> & { initNoiseSigma: number };
  const steps = makePlan({ family: 'svd', steps: 25, start: 700 }).steps;
  it('sigmas (with trailing 0) and c_noise timesteps', () => {
    expect(maxRelErr(j.sigmas, ref!.float64.sigmas)).toBeLessThan(1e-12);
    expect(maxRelErr(j.timesteps, ref!.float64.timesteps)).toBeLessThan(1e-12);
    expect(maxRelErr(j.sigmas, ref!.float32.sigmas)).toBeLessThan(1e-6);
    expect(maxRelErr(j.timesteps, ref!.float32.timesteps)).toBeLessThan(1e-6);
  });
  it('init_noise_sigma = √(σmax² + 1)', () => {
    expect(Math.abs(j.initNoiseSigma - ref!.float64.init_noise_sigma) / ref!.float64.init_noise_sigma).toBeLessThan(1e-12);
  });
  it('per-step c_in, c_skip, c_out and the Euler update coefficients', () => {
    const col = (k: string) => ref!.float64.per_step.map((r) => r[k]);
    expect(maxRelErr(j.cIn, col('c_in'))).toBeLessThan(1e-12);
    expect(maxRelErr(j.cSkip, col('c_skip'))).toBeLessThan(1e-12);
    expect(maxRelErr(j.cOut, col('c_out'))).toBeLessThan(1e-12);
    expect(maxRelErr(steps.map((s) => s.xCoef), col('prev_coef_sample'))).toBeLessThan(1e-12);
    expect(maxRelErr(steps.map((s) => s.outCoef), col('prev_coef_model_output'))).toBeLessThan(1e-12);
    const col32 = (k: string) => ref!.float32.per_step.map((r) => r[k]);
    expect(maxRelErr(steps.map((s) => s.xCoef), col32('prev_coef_sample'))).toBeLessThan(1e-6);
  });
});
