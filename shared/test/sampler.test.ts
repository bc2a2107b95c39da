import { describe, expect, it } from 'vitest';
import { cfg, materialize, perFrameGuidance, twoScaleGuidance } from '../src/sampler/guidance.ts';
import type { BranchName, BranchedModel, Branches } from '../src/sampler/guidance.ts';
import { makePlan } from '../src/sampler/plan.ts';
import { fusedUpdate, sample } from '../src/sampler/sampler.ts';
import type { StepEvent } from '../src/sampler/sampler.ts';
import { NormalGenerator } from '../src/sampler/rng.ts';
import { tensor } from '../src/sampler/tensor.ts';
import { HAVE_REFERENCE, loadReference, reversed } from './refFixtures.ts';
import type { Tensor } from '../src/sampler/tensor.ts';

const gen = (seed: number) => NormalGenerator.fromSeed(seed);
const rand = (dims: number[], seed: number): Tensor => {
  const d = new Float32Array(dims.reduce((a, b) => a * b, 1));
  gen(seed).fill(d);
  return tensor(d, dims);
};

/** Sample std with Bessel's correction, two-pass (independent of guidance.ts's one-pass sums). */
function std(a: ArrayLike<number>, from = 0, to = a.length): number {
  let m = 0;
  for (let i = from; i < to; i++) m += a[i];
  m /= to - from;
  let v = 0;
  for (let i = from; i < to; i++) v += (a[i] - m) ** 2;
  return Math.sqrt(v / (to - from - 1));
}

/** A fixed fake network: branch outputs are fixed random tensors (x-independent for clarity). */
function fixedModel(outs: Branches, calls: BranchName[][] = []): BranchedModel {
  return (_input, branches) => {
    calls.push([...branches]);
    return Promise.resolve(outs);
  };
}

const input = (x: Tensor) => ({ x, modelTime: 999, inputScale: 1, step: 0 });

describe('guidance wrappers', () => {
  const dims = [2, 4, 3, 5, 6];
  const c = rand(dims, 1);
  const u = rand(dims, 2);
  const x = rand(dims, 3);

  it('CFG: out = u + s·(c − u), one call with both branches; s = 1 asks only for cond', async () => {
    const calls: BranchName[][] = [];
    const g = await cfg(fixedModel({ cond: c, uncond: u }, calls), { scale: 7.5 })(input(x));
    const out = materialize(g);
    for (const i of [0, 17, 359, 719]) expect(out[i]).toBeCloseTo(u.data[i] + 7.5 * (c.data[i] - u.data[i]), 4);
    expect(calls).toEqual([['cond', 'uncond']]);
    await cfg(fixedModel({ cond: c }, calls), { scale: 1 })(input(x));
    expect(calls[1]).toEqual(['cond']);
  });

  it('guidance rescale: φ·out·std(c)/std(out) + (1−φ)·out per batch item, Bessel-corrected std', async () => {
    const s = 7.5;
    const phi = 0.7;
    const g = await cfg(fixedModel({ cond: c, uncond: u }), { scale: s, rescale: phi })(input(x));
    const out = materialize(g);
    const half = c.data.length / 2;
    for (let b = 0; b < 2; b++) {
      const plain = new Float64Array(half);
      for (let i = 0; i < half; i++) plain[i] = u.data[b * half + i] + s * (c.data[b * half + i] - u.data[b * half + i]);
      const r = std(c.data, b * half, (b + 1) * half) / std(plain);
      for (const i of [0, 5, half - 1]) expect(out[b * half + i]).toBeCloseTo(phi * plain[i] * r + (1 - phi) * plain[i], 4);
    }
  });

  it("two-scale guidance: u + s_img·(u_img − u) + s_txt·(c − u_img), as DynamiCrafter's multiplecond sampler", async () => {
    const ui = rand(dims, 4);
    const g = await twoScaleGuidance(fixedModel({ cond: c, uncond: u, uncondImage: ui }), { text: 7.5, image: 3 })(input(x));
    const out = materialize(g);
    for (const i of [0, 100, 700]) {
      expect(out[i]).toBeCloseTo(u.data[i] + 3 * (ui.data[i] - u.data[i]) + 7.5 * (c.data[i] - ui.data[i]), 4);
    }
  });

  it('per-frame guidance: s_f = linspace(min, max, F) over axis 1 of [B, F, C, H, W]', async () => {
    const d = [1, 5, 2, 3, 4];
    const cc = rand(d, 5);
    const uu = rand(d, 6);
    const g = await perFrameGuidance(fixedModel({ cond: cc, uncond: uu }), { min: 1, max: 3 })(input(rand(d, 7)));
    const out = materialize(g);
    const per = 2 * 3 * 4;
    for (let f = 0; f < 5; f++) {
      const sf = 1 + (2 * f) / 4;
      const i = f * per + 7;
      expect(out[i]).toBeCloseTo(uu.data[i] + sf * (cc.data[i] - uu.data[i]), 4);
    }
  });

  it('a missing or mis-sized branch is a clear error', async () => {
    await expect(cfg(fixedModel({ cond: c }), { scale: 2 })(input(x))).rejects.toThrow(/'uncond' branch/);
    const small = rand([1, 2], 1);
    await expect(cfg(fixedModel({ cond: small, uncond: u }), { scale: 2 })(input(x))).rejects.toThrow(/'cond' has 2 elements/);
  });
});

/**
 * p_sample_ddim's op order, transcribed by hand into float64 (DynamiCrafter
 * lvdm/models/samplers/ddim.py): guidance, rescale_noise_cfg, v→ε, pred_x0, dynamic rescale,
 * dir_xt, noise. The transcription is ours, not the authors' code running; its per-index
 * coefficients (α_t, α_prev, σ_t, the dir_xt coefficient, scale_prev/scale) are given.
 */
function transcribedDdimStep(
  x: Float32Array, c: Float32Array, u: Float32Array, z: Float32Array,
  p: { a: number; ap: number; sigma: number; dirCoef: number; x0Rescale: number }, s: number, phi: number, param: 'v' | 'eps',
): Float64Array {
  const n = x.length;
  let e = Float64Array.from(u, (ui, i) => ui + s * (c[i] - ui));
  if (phi > 0) {
    const r = std(c) / std(e);
    e = e.map((v) => phi * v * r + (1 - phi) * v);
  }
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const sa = Math.sqrt(p.a);
    const s1 = Math.sqrt(1 - p.a);
    const eps = param === 'v' ? sa * e[i] + s1 * x[i] : e[i];
    let x0 = param === 'v' ? sa * x[i] - s1 * e[i] : (x[i] - s1 * eps) / sa;
    x0 *= p.x0Rescale;
    out[i] = Math.sqrt(p.ap) * x0 + p.dirCoef * eps + p.sigma * z[i];
  }
  return out;
}

interface DdimFixture {
  ddim: { float64: Record<string, number[]> & { effective_per_index: Record<string, number[]> } };
}

/** Our fused step against the transcription on random x, branches and noise, every 4th step; returns the steps checked. */
async function checkFusedAgainstTranscription(
  plan: ReturnType<typeof makePlan>, coefs: (j: number) => { a: number; ap: number; sigma: number; dirCoef: number; x0Rescale: number },
  s: number, phi: number, param: 'v' | 'eps',
): Promise<number> {
  const dims = [1, 4, 2, 6, 8];
  let checked = 0;
  for (let j = 0; j < plan.steps.length; j += 4) {
    const x = rand(dims, 10 + j);
    const c = rand(dims, 100 + j);
    const u = rand(dims, 200 + j);
    const z = rand(dims, 300 + j);
    const expected = transcribedDdimStep(x.data, c.data, u.data, z.data, coefs(j), s, phi, param);
    const g = await cfg(fixedModel({ cond: c, uncond: u }), { scale: s, rescale: phi })(input(x));
    const xs = x.data.slice();
    fusedUpdate(xs, plan.steps[j], g, z.data);
    let worst = 0;
    for (let i = 0; i < xs.length; i++) worst = Math.max(worst, Math.abs(xs[i] - expected[i]) / Math.max(1e-3, Math.abs(expected[i])));
    expect(worst, `step ${j}`).toBeLessThan(1e-5);
    checked++;
  }
  return checked;
}

// Not a parity test with the authors' code running: the reference fixtures hold the coefficients
// p_sample_ddim forms (shared/test/ddim.test.ts compares our plan with them), not its outputs. What
// is checked here is that the fused one-pass update (x ← a·x + b·guided + σ·z) equals that op order.
describe('DDIM fused update equals a float64 transcription of p_sample_ddim’s op order', () => {
  it.skipIf(!HAVE_REFERENCE)('dynamicrafter, 50 steps from M = 1000, with the per-index coefficients from the authors’ sampler (reference fixture): ≤ 1e-5 relative at every 4th step', async () => {
    const plan = makePlan({ family: 'dynamicrafter', steps: 50, start: 1000 });
    if (plan.schedule.kind !== 'ddim') throw new Error('ddim');
    const ref = loadReference<DdimFixture>('dynamicrafter_50steps_M1000.json').ddim.float64;
    const eff = ref.effective_per_index;
    // The fixture is in ascending t; the sampler walks it backwards.
    expect([...plan.schedule.timesteps]).toEqual(reversed(ref.ddim_timesteps));
    const at = (k: string, j: number): number => reversed(eff[k])[j];
    const checked = await checkFusedAgainstTranscription(
      plan,
      (j) => ({ a: at('a_t', j), ap: at('a_prev', j), sigma: at('sigma_t', j), dirCoef: at('dir_xt_coef_sqrt_1_minus_a_prev_minus_sigma2', j), x0Rescale: at('pred_x0_rescale_prev_scale_over_scale', j) }),
      7.5, 0.7, 'v');
    expect(checked).toBe(13);
  });

  for (const family of ['dynamicrafter', 'videocrafter'] as const) {
    it(`${family}: with our plan's coefficients, 25 steps (≤ 1e-5 relative at every 4th step, float32 storage)`, async () => {
      const plan = makePlan({ family, steps: 25, start: family === 'dynamicrafter' ? 940 : 1000 });
      if (plan.schedule.kind !== 'ddim') throw new Error('ddim');
      const sch = plan.schedule;
      const checked = await checkFusedAgainstTranscription(
        plan,
        (j) => ({
          a: sch.alphas[j], ap: sch.alphasPrev[j], sigma: sch.sigmas[j],
          dirCoef: Math.sqrt(Math.max(0, 1 - sch.alphasPrev[j] - sch.sigmas[j] ** 2)), x0Rescale: sch.scalePrev[j] / sch.scale[j],
        }),
        family === 'dynamicrafter' ? 7.5 : 12, family === 'dynamicrafter' ? 0.7 : 0, family === 'dynamicrafter' ? 'v' : 'eps');
      expect(checked).toBe(7);
    });
  }
});

describe('sample()', () => {
  const dims = [1, 4, 2, 3, 4];
  /** A toy network whose output depends on x and t, so trajectories are sensitive to every step. */
  const toy: BranchedModel = (inp, branches) => {
    const out: Branches = {};
    for (const b of branches) {
      const k = b === 'cond' ? 0.3 : 0.1;
      out[b] = tensor(Float32Array.from(inp.x.data, (v, i) => Math.tanh(v * inp.inputScale * k + Math.sin(i + inp.modelTime * 1e-3))), inp.x.dims);
    }
    return Promise.resolve(out);
  };

  it('is deterministic for a seed, differs across seeds, and reports every step', async () => {
    const plan = makePlan({ family: 'dynamicrafter', steps: 10, start: 940 });
    const run = async (seed: number, events: StepEvent[] = []) => {
      const g = gen(seed);
      const x0 = rand(dims, seed + 1000);
      return sample({ steps: plan.steps, x: x0, denoiser: cfg(toy, { scale: 7.5, rescale: 0.7 }), noise: g, onStep: (e) => void events.push(e) });
    };
    const events: StepEvent[] = [];
    const a = await run(1, events);
    const b = await run(1);
    const c = await run(2);
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(c.data.buffer))).toBe(false);
    expect(events.map((e) => e.completed)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(a.data.every(Number.isFinite)).toBe(true);
  });

  it('resuming from a checkpoint (latent, step, generator state) is bit-identical to an uninterrupted run', async () => {
    const plan = makePlan({ family: 'videocrafter', steps: 12, start: 940 });
    const den = cfg(toy, { scale: 12 });
    const x0 = rand(dims, 77);
    const full = await sample({ steps: plan.steps, x: x0, denoiser: den, noise: gen(5) });
    // interrupt after step 5: abort, keeping the checkpoint taken in onStep
    const ac = new AbortController();
    const g = gen(5);
    let ckpt: { completed: number; x: Float32Array; state: string } | null = null;
    await expect(
      sample({
        steps: plan.steps, x: x0, denoiser: den, noise: g, signal: ac.signal,
        onStep: (e) => {
          ckpt = { completed: e.completed, x: e.x.data.slice(), state: JSON.stringify(g.state()) };
          if (e.completed === 5) ac.abort(new Error('SIGTERM'));
        },
      }),
    ).rejects.toThrow('SIGTERM');
    const saved = ckpt!;
    expect(saved.completed).toBe(5);
    const resumed = await sample({
      steps: plan.steps, x: tensor(saved.x, dims), denoiser: den,
      noise: NormalGenerator.fromState(JSON.parse(saved.state) as ReturnType<NormalGenerator['state']>), startStep: saved.completed,
    });
    expect(Buffer.from(resumed.data.buffer).equals(Buffer.from(full.data.buffer))).toBe(true);
  });

  it('does not modify the caller\'s initial latent and requires noise when η > 0', async () => {
    const plan = makePlan({ family: 'dynamicrafter', steps: 4, start: 1000 });
    const x0 = rand(dims, 9);
    const copy = x0.data.slice();
    await sample({ steps: plan.steps, x: x0, denoiser: cfg(toy, { scale: 1 }), noise: gen(1) });
    expect(x0.data).toEqual(copy);
    await expect(sample({ steps: plan.steps, x: x0, denoiser: cfg(toy, { scale: 1 }) })).rejects.toThrow(/no noise source/);
    const eta0 = makePlan({ family: 'dynamicrafter', steps: 4, start: 1000, eta: 0 });
    const det = await sample({ steps: eta0.steps, x: x0, denoiser: cfg(toy, { scale: 1 }) });
    expect(det.data.every(Number.isFinite)).toBe(true);
  });

  it('an already-aborted signal stops before the first network call', async () => {
    const plan = makePlan({ family: 'svd', steps: 5, start: 700 });
    let called = 0;
    const counting: BranchedModel = (i, b) => {
      called++;
      return toy(i, b);
    };
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    await expect(sample({ steps: plan.steps, x: rand([1, 2, 4, 3, 4], 1), denoiser: perFrameGuidance(counting, { min: 1, max: 3 }), signal: ac.signal })).rejects.toThrow('stop');
    expect(called).toBe(0);
  });

  it('SVD Euler with an exact denoiser of a point mass follows the exact path x_σ = μ + (σ/σ₀)(x₀ − μ) at every step', async () => {
    // If the data is a single point μ, the ideal x̂0 is μ at every σ; solve x̂0 = c_skip·x + c_out·v
    // = μ for v. The probability-flow ODE dx/dσ = (x − x̂0)/σ is then linear, and an Euler step is
    // exact on it: x_{i+1} = μ + (σ_{i+1}/σ_i)(x_i − μ). The last step (σ = 0) returns x̂0 = μ
    // whatever x_i was, so the final latent alone would hide any earlier step's error: every
    // intermediate latent is checked against the closed form.
    const d = [1, 2, 4, 2, 3];
    const mu = rand(d, 42);
    const plan = makePlan({ family: 'svd', steps: 8, start: 80 });
    if (plan.schedule.kind !== 'euler') throw new Error('euler');
    const sch = plan.schedule;
    /** The exact denoiser; `bias` is added to x̂0 at step `wrongAt` (to show the check sees it). */
    const pointMass = (wrongAt = -1, bias = 0): BranchedModel => (inp, branches) => {
      const sigma = sch.sigmas[inp.step];
      const cSkip = 1 / (sigma * sigma + 1);
      const cOut = -sigma / Math.sqrt(sigma * sigma + 1);
      const target = inp.step === wrongAt ? bias : 0;
      const v = Float32Array.from(inp.x.data, (xv, i) => (mu.data[i] + target - cSkip * xv) / cOut);
      const out: Branches = {};
      for (const b of branches) out[b] = tensor(v, inp.x.dims);
      return Promise.resolve(out);
    };
    const x0 = rand(d, 1);
    for (let i = 0; i < x0.data.length; i++) x0.data[i] *= sch.initNoiseSigma;
    /** Worst deviation from the closed form over the intermediate latents (relative to max(1, |x|)), and of the final one. */
    const run = async (model: BranchedModel): Promise<{ intermediate: number; final: number; seen: number }> => {
      let intermediate = 0;
      let seen = 0;
      const res = await sample({
        steps: plan.steps,
        x: x0,
        denoiser: perFrameGuidance(model, { min: 1, max: 3 }),
        onStep: (e) => {
          const ratio = sch.sigmas[e.completed] / sch.sigmas[0];
          if (e.completed === e.total) return;
          seen++;
          for (let i = 0; i < e.x.data.length; i++) {
            const want = mu.data[i] + ratio * (x0.data[i] - mu.data[i]);
            intermediate = Math.max(intermediate, Math.abs(e.x.data[i] - want) / Math.max(1, Math.abs(want)));
          }
        },
      });
      let final = 0;
      for (let i = 0; i < res.data.length; i++) final = Math.max(final, Math.abs(res.data[i] - mu.data[i]));
      return { intermediate, final, seen };
    };
    expect(sch.sigmas.at(-1)).toBe(0);
    const exact = await run(pointMass());
    expect(exact.seen).toBe(plan.steps.length - 1);
    expect(exact.intermediate).toBeLessThan(1e-5);
    expect(exact.final).toBeLessThan(1e-5);
    // A denoiser off by 0.05 at step 3 only: the final latent still lands on μ, the path does not.
    const wrong = await run(pointMass(3, 0.05));
    expect(wrong.final).toBeLessThan(1e-5);
    expect(wrong.intermediate).toBeGreaterThan(1e-3);
  });
});
