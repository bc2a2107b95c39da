/**
 * Guidance as wrappers around a branched denoiser (k-diffusion's CFGDenoiser idea). A wrapper
 * does not materialise the guided output: it resolves it into weights per branch and per
 * segment, out = Σ_b w_b[seg]·branch_b, and the sampler's fused loop applies them. Guidance
 * rescale needs statistics of the guided output; those come from one reduction pass.
 */
import { wasmKernels } from './kernels.ts';
import { ShapeError } from './tensor.ts';
import type { Tensor } from './tensor.ts';

export type BranchName = 'cond' | 'uncond' | 'uncondImage';

/** What the network produced for each requested branch, all of the latent's shape. */
export type Branches = Partial<Record<BranchName, Tensor>>;

/** The guided output as a linear combination; segments are equal contiguous runs of elements. */
export interface GuidedOutput {
  readonly branches: readonly Float32Array[];
  /** weights[b][s]: weight of branch b over segment s. */
  readonly weights: readonly Float64Array[];
  readonly segmentLength: number;
}

export interface DenoiserInput {
  /** The current latent (not scaled). */
  readonly x: Tensor;
  /** The network's time input (τ for DDIM, c_noise for EDM). */
  readonly modelTime: number;
  /** Scale to apply to x before the network (c_in; 1 for DDIM). */
  readonly inputScale: number;
  /** Step index in sampling order. */
  readonly step: number;
  readonly signal?: AbortSignal;
}

/** The network with its conditioning bound: returns the raw outputs of the requested branches. */
export type BranchedModel = (input: DenoiserInput, branches: readonly BranchName[]) => Promise<Branches>;

/** A guided denoiser: what samplers call. */
export type GuidedDenoiser = (input: DenoiserInput) => Promise<GuidedOutput>;

function branch(b: Branches, name: BranchName, like: Tensor): Float32Array {
  const t = b[name];
  if (!t) throw new ShapeError(`model did not return the '${name}' branch`);
  if (t.data.length !== like.data.length) {
    throw new ShapeError(`model output '${name}' has ${t.data.length} elements, latent has ${like.data.length}`);
  }
  return t.data;
}

function batchOf(x: Tensor): number {
  return x.dims.length > 0 ? x.dims[0] : 1;
}

export interface CfgOptions {
  /** s: out = u + s·(c − u). s = 1 skips the unconditional branch, as the reference. */
  readonly scale: number;
  /** φ ∈ [0, 1]: out ← φ·out·std(c)/std(out) + (1 − φ)·out (Lin et al. 2023, §3.4). */
  readonly rescale?: number;
}

/** Σu, Σc, Σu², Σc², Σuc of cfgStds, reused (one reduction at a time: the code is synchronous). */
const SUMS = new Float64Array(5);

/** The five float64 sums over [from, to), each in element order (kernels.wat `stats` does the same). */
function cfgSums(u: Float32Array, c: Float32Array, from: number, to: number, sums: Float64Array): void {
  let su = 0;
  let sc = 0;
  let suu = 0;
  let scc = 0;
  let suc = 0;
  for (let i = from; i < to; i++) {
    const a = u[i];
    const b = c[i];
    su += a;
    sc += b;
    suu += a * a;
    scc += b * b;
    suc += a * b;
  }
  sums[0] = su;
  sums[1] = sc;
  sums[2] = suu;
  sums[3] = scc;
  sums[4] = suc;
}

/**
 * Sample standard deviation with Bessel's correction, as torch.std, of g = wu·u + wc·c over
 * [from, to), computed from one pass of five float64 sums (no guided array is materialised).
 */
function cfgStds(u: Float32Array, c: Float32Array, wu: number, wc: number, from: number, to: number): { stdC: number; stdG: number } {
  if (!wasmKernels()?.cfgSums(u, c, from, to, SUMS)) cfgSums(u, c, from, to, SUMS);
  const su = SUMS[0];
  const sc = SUMS[1];
  const n = to - from;
  const varU = (SUMS[2] - (su * su) / n) / (n - 1);
  const varC = (SUMS[3] - (sc * sc) / n) / (n - 1);
  const cov = (SUMS[4] - (su * sc) / n) / (n - 1);
  const varG = wu * wu * varU + wc * wc * varC + 2 * wu * wc * cov;
  return { stdC: Math.sqrt(Math.max(0, varC)), stdG: Math.sqrt(Math.max(0, varG)) };
}

/** Classifier-free guidance (Ho & Salimans 2022) with optional guidance rescale, per batch item. */
export function cfg(model: BranchedModel, o: CfgOptions): GuidedDenoiser {
  const s = o.scale;
  const phi = o.rescale ?? 0;
  if (s === 1) {
    return async (input) => {
      const out = await model(input, ['cond']);
      const c = branch(out, 'cond', input.x);
      return { branches: [c], weights: [Float64Array.of(1)], segmentLength: c.length };
    };
  }
  return async (input) => {
    const out = await model(input, ['cond', 'uncond']);
    const c = branch(out, 'cond', input.x);
    const u = branch(out, 'uncond', input.x);
    const B = batchOf(input.x);
    const seg = c.length / B;
    const wu = new Float64Array(B);
    const wc = new Float64Array(B);
    for (let b = 0; b < B; b++) {
      let r = 1;
      if (phi > 0) {
        const { stdC, stdG } = cfgStds(u, c, 1 - s, s, b * seg, (b + 1) * seg);
        r = phi * (stdC / stdG) + (1 - phi);
      }
      wu[b] = r * (1 - s);
      wc[b] = r * s;
    }
    return { branches: [u, c], weights: [wu, wc], segmentLength: seg };
  };
}

export interface TwoScaleOptions {
  /** Text scale s_t. */
  readonly text: number;
  /** Image scale s_i (the reference defaults it to the text scale). */
  readonly image?: number;
}

/**
 * DynamiCrafter's two-scale guidance (ddim_multiplecond.py):
 *   out = u + s_i·(u_img − u) + s_t·(c − u_img)
 * where u drops text and image, u_img keeps the image and drops the text.
 */
export function twoScaleGuidance(model: BranchedModel, o: TwoScaleOptions): GuidedDenoiser {
  const st = o.text;
  const si = o.image ?? o.text;
  return async (input) => {
    const out = await model(input, ['cond', 'uncond', 'uncondImage']);
    const c = branch(out, 'cond', input.x);
    const u = branch(out, 'uncond', input.x);
    const ui = branch(out, 'uncondImage', input.x);
    return {
      branches: [u, ui, c],
      weights: [Float64Array.of(1 - si), Float64Array.of(si - st), Float64Array.of(st)],
      segmentLength: c.length,
    };
  };
}

export interface PerFrameOptions {
  /** Scale at the first frame (SVD: 1.0). */
  readonly min: number;
  /** Scale at the last frame (SVD: 3.0). */
  readonly max: number;
}

/**
 * SVD's per-frame guidance: s_f = linspace(min, max, F), out = u + s_f·(c − u), for a latent laid
 * out [B, F, C, H, W] (frame segments are contiguous).
 */
export function perFrameGuidance(model: BranchedModel, o: PerFrameOptions): GuidedDenoiser {
  return async (input) => {
    const dims = input.x.dims;
    if (dims.length !== 5) throw new ShapeError(`per-frame guidance needs a [B, F, C, H, W] latent, got [${dims.join(', ')}]`);
    const [B, F] = dims;
    const out = await model(input, ['cond', 'uncond']);
    const c = branch(out, 'cond', input.x);
    const u = branch(out, 'uncond', input.x);
    const wu = new Float64Array(B * F);
    const wc = new Float64Array(B * F);
    for (let b = 0; b < B; b++) {
      for (let f = 0; f < F; f++) {
        const sf = F > 1 ? o.min + (f * (o.max - o.min)) / (F - 1) : o.min;
        wu[b * F + f] = 1 - sf;
        wc[b * F + f] = sf;
      }
    }
    return { branches: [u, c], weights: [wu, wc], segmentLength: c.length / (B * F) };
  };
}

/** Materialises a GuidedOutput (for tests, previews and debugging; the sampler never needs it). */
export function materialize(g: GuidedOutput, out = new Float32Array(g.branches[0].length)): Float32Array {
  const L = g.segmentLength;
  const nSeg = out.length / L;
  for (let s = 0; s < nSeg; s++) {
    for (let i = s * L; i < (s + 1) * L; i++) {
      let v = 0;
      for (let b = 0; b < g.branches.length; b++) v += g.weights[b][g.weights[b].length === 1 ? 0 : s] * g.branches[b][i];
      out[i] = v;
    }
  }
  return out;
}
