import { describe, expect, it } from 'vitest';
import { alphasCumprod, dynamicRescaleArray, karrasSigmas, ldmLinearBetas, linspace, rescaleZeroTerminalSnr, vpAlphasCumprod } from '../src/sampler/schedules.ts';
import { FAMILY_TABLE } from '../src/sampler/families.ts';
import { HAVE_REFERENCE, loadReference, maxRelErr } from './refFixtures.ts';

describe('VP schedules (hand-computed values)', () => {
  it('LDM linear betas start and end at the configured values', () => {
    const b = ldmLinearBetas(0.00085, 0.012, 1000);
    expect(b.length).toBe(1000);
    expect(b[0]).toBeCloseTo(0.00085, 15);
    expect(b[999]).toBeCloseTo(0.012, 15);
    // β is quadratic in k: √β is linear, so its second difference is 0.
    const r = Array.from(b, Math.sqrt);
    expect(Math.abs(r[2] - 2 * r[1] + r[0])).toBeLessThan(1e-15);
  });

  it('ᾱ = cumprod(1 − β): ᾱ[0] = 1 − β0, ᾱ[1] = (1 − β0)(1 − β1)', () => {
    const a = alphasCumprod(Float64Array.of(0.1, 0.2, 0.5));
    expect(Array.from(a)).toEqual([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.5]);
  });

  it('zero-terminal-SNR: ᾱ[999] = 0 exactly and ᾱ[0] unchanged', () => {
    const plain = vpAlphasCumprod({ ...FAMILY_TABLE.videocrafter.schedule });
    const zsnr = vpAlphasCumprod({ ...FAMILY_TABLE.dynamicrafter.schedule });
    expect(zsnr[999]).toBe(0);
    expect(zsnr[0]).toBeCloseTo(plain[0], 14);
    expect(plain[999]).toBeGreaterThan(0.004);
    // √ᾱ is an affine map of the original √ᾱ: check the midpoint relation independently.
    const s0 = Math.sqrt(plain[0]);
    const sT = Math.sqrt(plain[999]);
    const expected = ((Math.sqrt(plain[500]) - sT) * s0) / (s0 - sT);
    expect(Math.sqrt(zsnr[500])).toBeCloseTo(expected, 12);
  });

  it('rescaleZeroTerminalSnr makes the last beta 1', () => {
    const b = rescaleZeroTerminalSnr(ldmLinearBetas(0.00085, 0.012, 1000));
    expect(b[999]).toBe(1);
  });

  it('linspace matches numpy (endpoint exact, step k·(stop−start)/(n−1))', () => {
    expect(Array.from(linspace(0, 1, 5))).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(Array.from(linspace(3, 3, 1))).toEqual([3]);
  });

  it('dynamic rescale array: 400-step ramp from 1 to 0.7, then 1000 × 0.7', () => {
    const s = dynamicRescaleArray({ baseScale: 0.7, turningStep: 400, firstPrev: 'repeat' }, 1000);
    expect(s.length).toBe(1400);
    expect(s[0]).toBe(1);
    expect(s[1]).toBeCloseTo(1 - 0.3 / 399, 15);
    expect(s[399]).toBe(0.7);
    expect(s[1399]).toBe(0.7);
  });

  it('Karras sigmas hit σmax and σmin and follow ρ = 7 interpolation', () => {
    const s = karrasSigmas(25, 0.002, 700, 7);
    expect(s[0]).toBeCloseTo(700, 9);
    expect(s[24]).toBeCloseTo(0.002, 15);
    const mid = (700 ** (1 / 7) + 0.5 * (0.002 ** (1 / 7) - 700 ** (1 / 7))) ** 7;
    expect(s[12]).toBeCloseTo(mid, 10);
    expect(() => karrasSigmas(10, 1, 0.5)).toThrow(/sigmaMin < sigmaMax/);
  });
});

describe.skipIf(!HAVE_REFERENCE)('VP schedules vs the authors\' buffers', () => {
  it('DynamiCrafter ᾱ (1000) and scale_arr (1400) equal the float64 reference to 1e-12', () => {
    const ref = loadReference<{ alphas_cumprod_float64: number[]; scale_arr_float64: number[] }>('dynamicrafter_50steps_M1000.json');
    expect(maxRelErr(vpAlphasCumprod(FAMILY_TABLE.dynamicrafter.schedule), ref.alphas_cumprod_float64)).toBeLessThan(1e-12);
    const s = dynamicRescaleArray({ baseScale: 0.7, turningStep: 400, firstPrev: 'repeat' }, 1000);
    expect(maxRelErr(s, ref.scale_arr_float64)).toBeLessThan(1e-15);
  });
});
