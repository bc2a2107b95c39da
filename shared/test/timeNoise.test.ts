import { describe, expect, it } from 'vitest';
import { corruptCondition, sampleTimeNoiseBeta, timeNoiseMean, timeNoiseMoments } from '../src/sampler/timeNoise.ts';
import { NormalGenerator } from '../src/sampler/rng.ts';
import { tensor } from '../src/sampler/tensor.ts';
import { HAVE_REFERENCE, loadReference } from './refFixtures.ts';

describe('TimeNoise', () => {
  it('μ(t) = 2(t/1000)^a − 1', () => {
    expect(timeNoiseMean(0)).toBe(-1);
    expect(timeNoiseMean(1000)).toBe(1);
    expect(timeNoiseMean(500)).toBeCloseTo(2 * 0.5 ** 5 - 1, 15);
  });
  it('β_s draws match the closed-form moments per t (fixed seed, 5 standard errors)', () => {
    const g = NormalGenerator.fromSeed(7);
    const N = 40000;
    for (const t of [0, 500, 900, 999]) {
      let s = 0;
      let s2 = 0;
      for (let k = 0; k < N; k++) {
        const b = sampleTimeNoiseBeta(t, g);
        expect(b).toBeGreaterThan(0);
        expect(b).toBeLessThan(100);
        s += b;
        s2 += b * b;
      }
      const m = s / N;
      const sd = Math.sqrt(s2 / N - m * m);
      const exact = timeNoiseMoments(t);
      expect(Math.abs(m - exact.mean)).toBeLessThan((5 * exact.std) / Math.sqrt(N));
      expect(Math.abs(sd - exact.std)).toBeLessThan(5 * exact.std * Math.sqrt(1 / N));
    }
  });
  it('corruptCondition returns c + β·z without touching the caller\'s tensor', () => {
    const c = tensor(Float32Array.of(1, 2, 3, 4), [1, 4]);
    const g1 = NormalGenerator.fromSeed(3);
    const out = corruptCondition(c, 2, g1);
    expect(Array.from(c.data)).toEqual([1, 2, 3, 4]);
    const z = new Float32Array(4);
    NormalGenerator.fromSeed(3).fill(z);
    expect(Array.from(out.data)).toEqual(Array.from(c.data, (v, i) => Math.fround(v + 2 * z[i])));
  });
});

describe.skipIf(!HAVE_REFERENCE)('TimeNoise moments vs the reference excerpt', () => {
  it('mean and std of β_s at each t (a = 5, β_m = 100) to 1e-6 relative', () => {
    const ref = loadReference<{ rows: { t: number; mu: number; beta_s_mean: number; beta_s_std: number }[] }>('timenoise_moments.json');
    for (const r of ref.rows) {
      const m = timeNoiseMoments(r.t);
      expect(timeNoiseMean(r.t)).toBeCloseTo(r.mu, 12);
      expect(Math.abs(m.mean - r.beta_s_mean) / r.beta_s_mean).toBeLessThan(1e-6);
      expect(Math.abs(m.std - r.beta_s_std) / r.beta_s_std).toBeLessThan(1e-6);
    }
  });
});
