import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { announceSkip } from '../../test/helpers/skips.ts';
import { ddimPlan, ddimTimesteps, roundHalfEven } from '../src/sampler/ddim.ts';
import { FAMILY_TABLE } from '../src/sampler/families.ts';
import { makePlan, planJson } from '../src/sampler/plan.ts';
import { DDIM_COLUMNS, HAVE_REFERENCE, loadReference, maxRelErr, reversed } from './refFixtures.ts';

describe('roundHalfEven', () => {
  it('rounds halves to even like numpy.round', () => {
    expect([0.5, 1.5, 2.5, 3.5, -0.4, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, 4, -0, 2, 3]);
  });
});

describe('DDIM timesteps', () => {
  it('uniform_trailing, M = 1000, 50 steps: 19, 39, …, 999', () => {
    const expected = Array.from({ length: 50 }, (_, k) => 19 + 20 * k);
    expect(Array.from(ddimTimesteps('uniform_trailing', 1000, 50))).toEqual(expected);
  });

  it('uniform, M = 1000, 50 steps: 1, 21, …, 981 (both compat modes)', () => {
    const expected = Array.from({ length: 50 }, (_, k) => 1 + 20 * k);
    expect(Array.from(ddimTimesteps('uniform', 1000, 50))).toEqual(expected);
    expect(Array.from(ddimTimesteps('uniform', 1000, 50, 'reference'))).toEqual(expected);
  });

  it("uniform over M = 940 at 50 steps: the reference's 53 entries under compat, exactly 50 otherwise", () => {
    const ref = Array.from(ddimTimesteps('uniform', 940, 50, 'reference'));
    expect(ref.length).toBe(53);
    expect(ref.slice(0, 3)).toEqual([1, 19, 37]);
    const ours = ddimTimesteps('uniform', 940, 50);
    expect(ours.length).toBe(50);
    expect(ours[0]).toBe(1);
    expect(ours[49]).toBe(Math.floor((49 * 940) / 50) + 1);
  });

  it('quad: ((linspace(0, √(0.8M), S))²).astype(int) + 1', () => {
    const ts = Array.from(ddimTimesteps('quad', 1000, 5));
    const stop = Math.sqrt(800);
    expect(ts).toEqual([0, 0.25, 0.5, 0.75].map((f) => Math.trunc((f * stop) ** 2) + 1).concat([801]));
  });

  it('uniform_trailing: exactly S valid, strictly decreasing timesteps starting at M − 1, for every M ≤ 1000 at 10/25/50/100 steps', () => {
    for (const S of [10, 25, 50, 100]) {
      for (let M = S; M <= 1000; M++) {
        const ts = ddimTimesteps('uniform_trailing', M, S);
        expect(ts.length).toBe(S);
        expect(ts[S - 1]).toBe(M - 1);
        expect(ts[0]).toBeGreaterThanOrEqual(0);
        const c = M / S;
        for (let i = 1; i < S; i++) {
          const gap = ts[i] - ts[i - 1];
          // gaps are round(c)-ish: within [⌊c⌋, ⌈c⌉] up to a rounding step each side
          expect(gap).toBeGreaterThanOrEqual(Math.max(1, Math.floor(c) - 1));
          expect(gap).toBeLessThanOrEqual(Math.ceil(c) + 1);
        }
        if (M % S === 0) {
          expect(Array.from(ts)).toEqual(Array.from({ length: S }, (_, k) => M - 1 - (S - 1 - k) * c));
        }
      }
    }
  });

  it('never returns the spurious −1 at M = 820, 920, 945 (50 steps)', () => {
    for (const M of [820, 920, 945]) {
      const ts = ddimTimesteps('uniform_trailing', M, 50);
      expect(ts.length).toBe(50);
      expect(Math.min(...ts)).toBeGreaterThanOrEqual(0);
    }
  });

  it('refuses steps > M and unknown spacings with clear messages', () => {
    expect(() => ddimTimesteps('uniform_trailing', 20, 50)).toThrow(/steps \(50\) must not exceed the start time M \(20\)/);
    expect(() => ddimTimesteps('bogus' as 'quad', 1000, 50)).toThrow(/allowed: uniform, uniform_trailing, quad/);
    expect(() => ddimTimesteps('uniform', 0, 1)).toThrow(/start M/);
  });
});

// An independent oracle: the reference's make_ddim_timesteps run by numpy itself (Debian's
// python3-numpy, installed by .ci/run). Skips loudly when numpy is absent.
const PY = ['/usr/bin/python3', 'python3'].find((p) => {
  try {
    execFileSync(p, ['-c', 'import numpy'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
});
if (!PY) announceSkip('numpy oracle for DDIM timesteps', 'no python3 with numpy', 'apt-get install python3-numpy (as root: bash scripts/setup-system.sh, which npm test runs)');

describe.skipIf(!PY)('uniform_trailing equals numpy running the reference formula, minus the spurious −1', () => {
  it('all M ≤ 1000 at 10, 25, 50, 100 steps', () => {
    const script = `
import json, numpy as np
out = {}
for S in (10, 25, 50, 100):
    for M in range(S, 1001):
        c = M / S
        ts = np.flip(np.round(np.arange(M, 0, -c))).astype(np.int64) - 1
        out[f"{S}:{M}"] = [int(t) for t in ts if t >= 0]
print(json.dumps(out))`;
    const ref = JSON.parse(execFileSync(PY!, ['-c', script], { maxBuffer: 64 << 20 }).toString()) as Record<string, number[]>;
    let checked = 0;
    for (const [key, ts] of Object.entries(ref)) {
      const [S, M] = key.split(':').map(Number);
      expect(Array.from(ddimTimesteps('uniform_trailing', M, S)), key).toEqual(ts);
      checked++;
    }
    expect(checked).toBeGreaterThan(3500);
  });
});

describe('DDIM plan', () => {
  it('σ, a_prev and the direction coefficient follow DDIM eq. 16 (hand check at one index)', () => {
    const p = ddimPlan({ schedule: FAMILY_TABLE.videocrafter.schedule, steps: 10, start: 1000, eta: 0.5, spacing: 'uniform', dynamicRescale: null });
    const j = 3;
    const a = p.alphas[j];
    const ap = p.alphasPrev[j];
    expect(ap).toBe(p.alphas[j + 1]);
    expect(p.alphasPrev[9]).toBe(p.alphasCumprod[0]);
    const sigma = 0.5 * Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
    expect(p.sigmas[j]).toBeCloseTo(sigma, 15);
    expect(p.dirCoefs[j]).toBeCloseTo(Math.sqrt(1 - ap - sigma * sigma), 15);
    expect(Array.from(p.scale).every((v) => v === 1)).toBe(true);
  });

  it('zero-SNR first step (a = 0) has a finite, zero direction coefficient', () => {
    const p = makePlan({ family: 'dynamicrafter', start: 1000 }).schedule;
    if (p.kind !== 'ddim') throw new Error('expected ddim');
    expect(p.alphas[0]).toBe(0);
    expect(p.dirCoefs[0]).toBe(0);
    expect(Number.isFinite(p.sigmas[0])).toBe(true);
  });

  it('dynamic rescale: DynamiCrafter repeats scale_arr[τ0] for the last step, VideoCrafter1 uses scale_arr[0]', () => {
    const dc = makePlan({ family: 'dynamicrafter', steps: 50, start: 1000 }).schedule;
    const vc = makePlan({ family: 'videocrafter', steps: 50, start: 1000 }).schedule;
    if (dc.kind !== 'ddim' || vc.kind !== 'ddim') throw new Error('expected ddim');
    expect(dc.scalePrev[49]).toBe(dc.scale[49]);
    expect(dc.scale[49]).toBeCloseTo(1 - (0.3 / 399) * 19, 14);
    expect(vc.scalePrev[49]).toBe(1);
    // the others are the scale of the next (smaller) timestep
    expect(dc.scalePrev[10]).toBe(dc.scale[11]);
  });

  it('VideoCrafter1: paper mode starts at M; compat reference keeps the 1000-step grid but inits for M − 1', () => {
    const paper = makePlan({ family: 'videocrafter', start: 940, trCovD: 0.2 });
    const ref = makePlan({ family: 'videocrafter', start: 940, trCovD: 0.2, compat: 'reference' });
    if (paper.schedule.kind !== 'ddim' || ref.schedule.kind !== 'ddim') throw new Error('expected ddim');
    expect(paper.schedule.timesteps[0]).toBeLessThanOrEqual(939);
    expect(paper.schedule.timesteps.length).toBe(50);
    expect(ref.schedule.timesteps[0]).toBe(981);
    expect(ref.schedule.timesteps[49]).toBe(1);
    expect(ref.init).toEqual(paper.init);
    const a = paper.schedule.alphasCumprod[939];
    expect(paper.init.meanCoef).toBeCloseTo(Math.sqrt(a), 15);
    expect(paper.init.std).toBeCloseTo(Math.sqrt(1 - a + a * 0.2), 15);
  });
});

interface DdimRef {
  ddim: Record<'float64' | 'float32', Record<string, number[]> & { effective_per_index: Record<string, number[]> }>;
  analytic_init_M1000: { sqrt_alpha_t: number; sigma_p_by_trCov_d: Record<string, number> };
}

describe.skipIf(!HAVE_REFERENCE)('DynamiCrafter DDIM plan vs the authors\' sampler (50 steps, M = 1000)', () => {
  const ref = HAVE_REFERENCE ? loadReference<DdimRef>('dynamicrafter_50steps_M1000.json') : null;
  const plan = planJson(makePlan({ family: 'dynamicrafter', steps: 50, start: 1000 })) as Record<string, number[]>;
  const cases = DDIM_COLUMNS;
  for (const [ours, theirs] of cases) {
    it(`${ours} = ${theirs} (float64 to 1e-12, float32 to 1e-6 beyond its own rounding)`, () => {
      const r64 = reversed(ref!.ddim.float64[theirs]);
      const r32 = reversed(ref!.ddim.float32[theirs]);
      expect(maxRelErr(plan[ours], r64)).toBeLessThan(1e-12);
      // The float32 reference is itself off from exact where its arithmetic cancels (σ at small t:
      // 1 − a/a_prev loses digits, 1.2e-5 relative); we match it to 1e-6 beyond that own error.
      const own = maxRelErr(r32, r64);
      expect(maxRelErr(plan[ours], r32)).toBeLessThan(own + 1e-6);
    });
  }
  it('direction coefficients √(1 − a_prev − σ²) and the pred_x0 rescale ratio', () => {
    const p = makePlan({ family: 'dynamicrafter', steps: 50, start: 1000 }).schedule;
    if (p.kind !== 'ddim') throw new Error('expected ddim');
    const eff = ref!.ddim.float64.effective_per_index;
    expect(maxRelErr(p.dirCoefs, reversed(eff.dir_xt_coef_sqrt_1_minus_a_prev_minus_sigma2))).toBeLessThan(1e-9);
    const ratio = Array.from(p.scale, (s, j) => p.scalePrev[j] / s);
    expect(maxRelErr(ratio, reversed(eff.pred_x0_rescale_prev_scale_over_scale))).toBeLessThan(1e-12);
  });
  it('Analytic-Init coefficients at M = 1000', () => {
    for (const [tr, std] of Object.entries(ref!.analytic_init_M1000.sigma_p_by_trCov_d)) {
      const init = makePlan({ family: 'dynamicrafter', start: 1000, trCovD: Number(tr) }).init;
      expect(init.meanCoef).toBeCloseTo(ref!.analytic_init_M1000.sqrt_alpha_t, 12);
      expect(init.std).toBeCloseTo(std, 12);
    }
  });
});
