import { describe, expect, it } from 'vitest';
import { initialLatent, veInitCoefs, vpInitCoefs } from '../src/sampler/analyticInit.ts';
import { NormalGenerator } from '../src/sampler/rng.ts';
import { tensor } from '../src/sampler/tensor.ts';
import { makePlan } from '../src/sampler/plan.ts';

describe('Analytic-Init', () => {
  it('VP coefficients: √ᾱ[M−1] and √(1 − ᾱ + ᾱ·trCov_d); none without statistics', () => {
    expect(vpInitCoefs(0.25, 0.5)).toEqual({ meanCoef: 0.5, std: Math.sqrt(1 - 0.25 + 0.25 * 0.5) });
    expect(vpInitCoefs(0.25, null)).toEqual({ meanCoef: 0, std: 1 });
    expect(() => vpInitCoefs(0.25, -1)).toThrow(/tr_cov_d/);
  });
  it('VE coefficients: E[X0] + √(init_noise_sigma² + trCov_d)·z (the paper\'s order)', () => {
    expect(veInitCoefs(3, 16)).toEqual({ meanCoef: 1, std: 5 });
    expect(veInitCoefs(3, null)).toEqual({ meanCoef: 0, std: 3 });
  });
  it('uses ᾱ[M − 1]: at M = 940 for DynamiCrafter', () => {
    const p = makePlan({ family: 'dynamicrafter', start: 940, trCovD: 0.3 });
    if (p.schedule.kind !== 'ddim') throw new Error('ddim');
    const a = p.schedule.alphasCumprod[939];
    expect(p.init.meanCoef).toBe(Math.sqrt(a));
    expect(p.init.std).toBe(Math.sqrt(1 - a + a * 0.3));
  });
  it('the initial latent has per-element mean meanCoef·E[X0] and variance std² (statistical, fixed seed)', () => {
    const dims = [1, 4, 1, 2, 2];
    const e = tensor(Float32Array.of(-2, -1, 0, 1, 2, 3, 0.5, -0.5, 4, -4, 1.5, 2.5, -3, 0.25, 7, -7), dims);
    const coefs = vpInitCoefs(0.36, 0.8);
    const g = NormalGenerator.fromSeed(2024);
    const N = 20000;
    const sum = new Float64Array(16);
    const sq = new Float64Array(16);
    for (let k = 0; k < N; k++) {
      const x = initialLatent({ dims, coefs, expectation: e, noise: g });
      for (let i = 0; i < 16; i++) {
        sum[i] += x.data[i];
        sq[i] += x.data[i] ** 2;
      }
    }
    const se = coefs.std / Math.sqrt(N);
    for (let i = 0; i < 16; i++) {
      const m = sum[i] / N;
      const v = sq[i] / N - m * m;
      expect(Math.abs(m - coefs.meanCoef * e.data[i])).toBeLessThan(5 * se);
      // var of the sample variance ≈ 2σ⁴/N
      expect(Math.abs(v - coefs.std ** 2)).toBeLessThan(5 * coefs.std ** 2 * Math.sqrt(2 / N));
    }
  });
  it('an explicit noise tensor replaces the generator exactly; wrong shapes are named', () => {
    const dims = [1, 2, 1, 1, 2];
    const z = tensor(Float32Array.of(1, -1, 0.5, 2), dims);
    const e = tensor(Float32Array.of(10, 20, 30, 40), dims);
    const x = initialLatent({ dims, coefs: { meanCoef: 0.5, std: 2 }, expectation: e, noise: z });
    expect(Array.from(x.data)).toEqual([7, 8, 16, 24]);
    expect(() => initialLatent({ dims: [1, 4], coefs: { meanCoef: 0, std: 1 }, noise: z })).toThrow(/initial noise: expected dims \[1, 4\]/);
    expect(() => initialLatent({ dims, coefs: { meanCoef: 1, std: 1 }, expectation: tensor(new Float32Array(3), [3]), noise: z })).toThrow(/expectation_x0/);
  });
});
