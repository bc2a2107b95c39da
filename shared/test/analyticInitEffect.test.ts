/**
 * What Analytic-Init does, shown on a data model where the answer is known in closed form: the
 * demo model cannot show it (docs/demo-model.md), a Gaussian can.
 *
 * Data: x0 ~ N(μ, s²·I) with a fixed per-element mean μ. Then every marginal is Gaussian,
 *   q_t = N(√ᾱ_t·μ, (ᾱ_t·s² + 1 − ᾱ_t)·I),
 * and the exact denoiser is linear: E[x0 | x_t] = μ + g_t·(x_t − √ᾱ_t·μ), g_t = √ᾱ_t·s²/(ᾱ_t·s² + 1 − ᾱ_t).
 * With E[X0] = μ and tr(Cov)/d = s², Analytic-Init's Gaussian N(√ᾱ_M·E, ᾱ_M·trCov_d + 1 − ᾱ_M) IS q_M,
 * so starting from it at M < T is exact; x_M = z (start at M without it) is not.
 *
 * The sampler is ours (ddimPlan/ddimSteps with DynamiCrafter's schedule and v-parameterisation,
 * vpInitCoefs, initialLatent, sample) with the exact denoiser as the "network". Dynamic rescale is
 * off: it deliberately rescales x̂0 and so samples another distribution, whatever the start.
 *
 * Every element of the latent is an independent draw, so the statistics pool over elements and
 * seeds (n = 131,072 per arm). "Matches" means within 4 standard errors; "differs" means more
 * than 10. All seeds are fixed; none was chosen.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { FAMILY_TABLE, NormalGenerator, cfg, ddimPlan, ddimSteps, initialLatent, sample, tensor, vPrediction, vpInitCoefs } from '../src/sampler/index.ts';
import type { BranchedModel, DdimPlan, InitCoefs, Tensor } from '../src/sampler/index.ts';

const FAMILY = FAMILY_TABLE.dynamicrafter;
const DIMS = [1, 4, 8, 32, 32];
const D = DIMS.reduce((a, b) => a * b, 1); // 32,768 elements per latent
const SEEDS = 4;
const S = 2; // data std: ≠ 1, so that x_M = z also has the wrong variance
const TR_COV_D = S * S;
/** μ in [0.5, 1.5]: every element has its own mean, none near 0. */
const MU = Float32Array.from({ length: D }, (_, i) => 1 + 0.5 * Math.sin(0.37 * i));
const MU_T = tensor(MU, DIMS, 'E[X0]');
const M = 600; // ᾱ[599] ≈ 0.13: large enough that the start's mean matters (ᾱ[939] ≈ 0.0009)
const STEPS = 25;

function plan(): DdimPlan {
  return ddimPlan({ schedule: FAMILY.schedule, steps: STEPS, start: M, eta: 1, spacing: FAMILY.schedule.spacing, dynamicRescale: null });
}

/** The exact denoiser of N(μ, s²I), as the v-prediction a network would give: v = (√ᾱ·x − x̂0)/√(1 − ᾱ). */
function gaussianModel(p: DdimPlan): BranchedModel {
  return (input, branches) => {
    const a = p.alphasCumprod[input.modelTime];
    const sa = Math.sqrt(a);
    const g = (sa * TR_COV_D) / (a * TR_COV_D + 1 - a);
    const x = input.x.data;
    const v = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const x0 = MU[i] + g * (x[i] - sa * MU[i]);
      v[i] = (sa * x[i] - x0) / Math.sqrt(1 - a);
    }
    const r: Record<string, Tensor> = {};
    for (const b of branches) r[b] = tensor(v, DIMS);
    return Promise.resolve(r);
  };
}

/** Pooled statistics of x − k·μ over all elements of all runs. */
class Residuals {
  n = 0;
  sum = 0;
  sq = 0;
  /** Σ r·μ and Σ μ²: the least-squares slope of the residual on μ (a bias proportional to μ). */
  rmu = 0;
  mu2 = 0;
  add(x: Float32Array, k: number): void {
    for (let i = 0; i < x.length; i++) {
      const r = x[i] - k * MU[i];
      this.n++;
      this.sum += r;
      this.sq += r * r;
      this.rmu += r * MU[i];
      this.mu2 += MU[i] * MU[i];
    }
  }
  get mean(): number {
    return this.sum / this.n;
  }
  get variance(): number {
    return this.sq / this.n - this.mean ** 2;
  }
  get seMean(): number {
    return Math.sqrt(this.variance / this.n);
  }
  /** SE of the sample variance of n Gaussian draws: v·√(2/n). */
  get seVariance(): number {
    return this.variance * Math.sqrt(2 / this.n);
  }
  /** Slope β of r ≈ β·μ, and its SE (residuals independent, equal variance). */
  get slope(): number {
    return this.rmu / this.mu2;
  }
  get seSlope(): number {
    return Math.sqrt(this.variance / this.mu2);
  }
}

interface Arm {
  readonly start: Residuals; // x_M − √ᾱ_M·μ
  readonly final: Residuals; // x_0 − √ᾱ_0·μ
}

/**
 * Runs SEEDS samples. `init`: Analytic-Init coefficients, or 'oracle' = x_M drawn by diffusing
 * true data, √ᾱ_M·x0 + √(1 − ᾱ_M)·ε with x0 ~ N(μ, s²I): the start a perfect model of q_M would give.
 */
async function run(p: DdimPlan, init: InitCoefs | 'oracle', seedBase: number): Promise<Arm> {
  const steps = ddimSteps(p, vPrediction);
  const denoiser = cfg(gaussianModel(p), { scale: 1 });
  const aM = p.alphaStart;
  const a0 = p.alphasCumprod[0];
  const arm: Arm = { start: new Residuals(), final: new Residuals() };
  for (let k = 0; k < SEEDS; k++) {
    const gen = NormalGenerator.fromSeed(seedBase + k);
    let x: Tensor;
    if (init === 'oracle') {
      const x0 = new Float32Array(D);
      const eps = new Float32Array(D);
      gen.fill(x0);
      gen.fill(eps);
      x = tensor(Float32Array.from(x0, (z, i) => Math.sqrt(aM) * (MU[i] + S * z) + Math.sqrt(1 - aM) * eps[i]), DIMS);
    } else {
      x = initialLatent({ dims: DIMS, coefs: init, expectation: MU_T, noise: gen });
    }
    arm.start.add(x.data, Math.sqrt(aM));
    const out = await sample({ steps, x, denoiser, noise: gen });
    arm.final.add(out.data, Math.sqrt(a0));
  }
  return arm;
}

/**
 * The mean of x_0 − √ᾱ_0·μ when the start's mean is off by δ·μ: every step is affine in x and
 * the denoiser is affine, so a deviation of the mean from q_t's is multiplied by
 *   L_j = xCoef_j + outCoef_j·∂v/∂x,  ∂v/∂x = (√ᾱ − g)/√(1 − ᾱ)   (ᾱ = ᾱ[τ_j]),
 * and the final bias is δ·Π_j L_j·μ. (Computed from the plan's scalars, not by running the loop.)
 */
function carriedFraction(p: DdimPlan): number {
  const steps = ddimSteps(p, vPrediction);
  let f = 1;
  steps.forEach((c, j) => {
    const a = p.alphas[j];
    const g = (Math.sqrt(a) * TR_COV_D) / (a * TR_COV_D + 1 - a);
    f *= c.xCoef + c.outCoef * ((Math.sqrt(a) - g) / Math.sqrt(1 - a));
  });
  return f;
}

describe('Analytic-Init on Gaussian data (exact denoiser, our DDIM sampler, M = 600, 25 steps)', () => {
  const p = plan();
  const aM = p.alphaStart;
  const targetVarM = aM * TR_COV_D + 1 - aM;
  let withAi: Arm;
  let withoutAi: Arm;
  let oracle: Arm;
  beforeAll(async () => {
    withAi = await run(p, vpInitCoefs(aM, TR_COV_D), 1000);
    withoutAi = await run(p, vpInitCoefs(aM, null), 2000);
    oracle = await run(p, 'oracle', 3000);
  });

  it('Analytic-Init draws x_M from q_M exactly: mean √ᾱ_M·μ and variance ᾱ_M·s² + 1 − ᾱ_M; x_M = z misses both', () => {
    expect(aM).toBeGreaterThan(0.1);
    const ai = withAi.start;
    expect(Math.abs(ai.mean), `mean residual ${ai.mean} (SE ${ai.seMean})`).toBeLessThan(4 * ai.seMean);
    expect(Math.abs(ai.slope), `slope on μ ${ai.slope} (SE ${ai.seSlope})`).toBeLessThan(4 * ai.seSlope);
    expect(Math.abs(ai.variance - targetVarM), `variance ${ai.variance} vs ${targetVarM} (SE ${ai.seVariance})`).toBeLessThan(4 * ai.seVariance);
    // Without it: mean 0 (residual −√ᾱ_M·μ), variance 1.
    const z = withoutAi.start;
    expect(Math.abs(z.slope + Math.sqrt(aM))).toBeLessThan(4 * z.seSlope);
    expect(Math.abs(z.slope), 'x_M = z: mean off by −√ᾱ_M·μ').toBeGreaterThan(10 * z.seSlope);
    expect(Math.abs(z.variance - targetVarM), 'x_M = z: variance off').toBeGreaterThan(10 * z.seVariance);
  });

  it('final samples: with Analytic-Init the mean is μ (·√ᾱ_0) and the variance that of a start from true q_M; x_M = z pulls the mean toward 0 by the computed fraction', () => {
    const a0 = p.alphasCumprod[0];
    const ai = withAi.final;
    const z = withoutAi.final;
    const or = oracle.final;
    // Mean: unbiased with Analytic-Init.
    expect(Math.abs(ai.slope), `slope on μ ${ai.slope} (SE ${ai.seSlope})`).toBeLessThan(4 * ai.seSlope);
    expect(Math.abs(ai.mean)).toBeLessThan(4 * ai.seMean);
    // Without it: the start's deviation −√ᾱ_M·μ survives the 25 steps as −√ᾱ_M·ΠL·μ.
    const predicted = -Math.sqrt(aM) * carriedFraction(p);
    expect(predicted / Math.sqrt(a0)).toBeLessThan(-0.3); // a third of the mean lost
    expect(Math.abs(z.slope - predicted), `x_M = z: slope ${z.slope}, predicted ${predicted} (SE ${z.seSlope})`).toBeLessThan(4 * z.seSlope);
    expect(Math.abs(z.slope)).toBeGreaterThan(10 * z.seSlope);
    // Variance: 25 DDIM steps (η = 1) from the exact q_M end a little below s² (the ancestral
    // step leaves out Var[x0 | x_t]; ~8 % here), so the reference is the oracle start's final
    // variance, two independent samples.
    const seDiff = (a: Residuals, b: Residuals): number => Math.hypot(a.seVariance, b.seVariance);
    expect(Math.abs(ai.variance - or.variance), `variance ${ai.variance} vs oracle ${or.variance}`).toBeLessThan(4 * seDiff(ai, or));
    expect(Math.abs(z.variance - or.variance), `x_M = z: variance ${z.variance} vs oracle ${or.variance}`).toBeGreaterThan(10 * seDiff(z, or));
    expect(or.variance / (a0 * TR_COV_D + 1 - a0)).toBeGreaterThan(0.85);
  });
});
