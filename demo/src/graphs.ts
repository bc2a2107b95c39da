/**
 * The demo model's five ONNX graphs (docs/demo-model.md). Each follows the DynamiCrafter component
 * contract (shared/src/schemas/bundleContract.ts); their boundary tensors come from `demoSpecs`,
 * which the manifest also lists, so graph and manifest cannot disagree.
 */
import { vpAlphasCumprod } from '#shared/sampler';
import type { VpScheduleConfig } from '#shared/sampler';
import { CLIP_SIZE, TEXT_LENGTH } from '#shared/schemas';
import { NormalGenerator } from '#shared/sampler';
import { GraphBuilder, encodeModel } from './onnx/graph.ts';
import { DIRECTIONS, LATENT_CHANNELS, MOTION_WORDS, component, componentCount, warpAffine } from './paths.ts';
import type { DemoGeometry } from './paths.ts';
import { EMBED_DIM, IDENTITY_DIM, VOCAB, embeddingTable } from './tokenizer.ts';

/** Latent downsampling of the tiny VAE (8×8 pixel blocks per latent pixel). */
export const DOWNSAMPLE = 8;
/** Image tokens from the image encoder (a 2×2 grid of pooled patches). */
export const IMAGE_TOKENS = 4;

/**
 * The static-image bias ("leak") λ(t) = leak·sigmoid((t − LEAK_CENTER)/LEAK_WIDTH): x̂0 is pulled
 * towards the repeated conditional image at large t, as a model with conditional image leakage
 * does. Centred high so that it covers the steps where the posterior picks its path (t ≳ 940 for
 * this schedule and latent size; see docs/demo-model.md).
 */
export const LEAK_CENTER = 940;
export const LEAK_WIDTH = 20;
/** Floor on 1 − ᾱ inside the graph (ᾱ → 1 never happens in this schedule; it keeps 1/(1−ᾱ) finite). */
export const VAR_FLOOR = 1e-6;
/** Prior log-odds per motion word in the prompt for the paths it names. */
export const TEXT_PRIOR = 48;

/**
 * The tiny linear VAE's 3→4 channel map (before VAE_GAIN): luma, the two BT.601 chroma
 * differences, and the RGB mean at half weight (a 4th channel correlated with luma; the map has
 * rank 3, so the decoder's pseudo-inverse reconstructs RGB exactly from an encoded latent).
 */
const VAE_ROWS: readonly (readonly [number, number, number])[] = [
  [0.299, 0.587, 0.114],
  [-0.168736, -0.331264, 0.5],
  [0.5, -0.418688, -0.081312],
  [1 / 6, 1 / 6, 1 / 6],
];
/** Gain on the channel map (luma latent in [−2, 2]); the manifest's scaleFactor stays 1. */
export const VAE_GAIN = 2;

export interface TensorSpecLike {
  readonly name: string;
  readonly dtype: 'float32' | 'int64';
  readonly dims: readonly (number | string)[];
}
export interface ComponentSpec {
  readonly file: string;
  readonly inputs: readonly TensorSpecLike[];
  readonly outputs: readonly TensorSpecLike[];
}
export type ComponentName = 'unet' | 'vae_encoder' | 'vae_decoder' | 'text_encoder' | 'image_encoder';
export const COMPONENT_NAMES: readonly ComponentName[] = ['unet', 'vae_encoder', 'vae_decoder', 'text_encoder', 'image_encoder'];

/**
 * Boundary tensors of every component. Sizes the graph is built for are fixed numbers (the UNet's
 * motion paths are precomputed for one latent size and frame count); axes that take any size are
 * symbolic, named as in the contract.
 */
export function demoSpecs(g: DemoGeometry): Readonly<Record<ComponentName, ComponentSpec>> {
  const C = LATENT_CHANNELS;
  const ctx = TEXT_LENGTH + IMAGE_TOKENS;
  return {
    unet: {
      file: 'unet.onnx',
      inputs: [
        { name: 'x', dtype: 'float32', dims: ['batch', 2 * C, g.frames, g.h, g.w] },
        { name: 'timestep', dtype: 'int64', dims: ['batch'] },
        { name: 'context', dtype: 'float32', dims: ['batch', ctx, EMBED_DIM] },
        { name: 'fs', dtype: 'int64', dims: ['batch'] },
      ],
      outputs: [{ name: 'out', dtype: 'float32', dims: ['batch', C, g.frames, g.h, g.w] }],
    },
    vae_encoder: {
      file: 'vae_encoder.onnx',
      inputs: [{ name: 'image', dtype: 'float32', dims: ['batch', 3, 'height', 'width'] }],
      outputs: [{ name: 'latent', dtype: 'float32', dims: ['batch', C, 'h', 'w'] }],
    },
    vae_decoder: {
      file: 'vae_decoder.onnx',
      inputs: [{ name: 'latent', dtype: 'float32', dims: ['batch', C, 'h', 'w'] }],
      outputs: [{ name: 'image', dtype: 'float32', dims: ['batch', 3, 'height', 'width'] }],
    },
    text_encoder: {
      file: 'text_encoder.onnx',
      inputs: [{ name: 'input_ids', dtype: 'int64', dims: ['batch', TEXT_LENGTH] }],
      outputs: [{ name: 'text_embeds', dtype: 'float32', dims: ['batch', TEXT_LENGTH, EMBED_DIM] }],
    },
    image_encoder: {
      file: 'image_encoder.onnx',
      inputs: [{ name: 'image', dtype: 'float32', dims: ['batch', 3, CLIP_SIZE, CLIP_SIZE] }],
      outputs: [{ name: 'image_embeds', dtype: 'float32', dims: ['batch', IMAGE_TOKENS, EMBED_DIM] }],
    },
  };
}

function declareInputs(b: GraphBuilder, spec: ComponentSpec): string[] {
  return spec.inputs.map((t) => b.input(t.name, t.dtype, t.dims));
}

function declareOutput(b: GraphBuilder, spec: ComponentSpec, value: string): void {
  const o = spec.outputs[0];
  b.output(value, o.dtype, o.dims, o.name);
}

/** The encoder's 4×3 matrix (with VAE_GAIN). */
export function vaeEncoderMatrix(): Float64Array {
  const a = new Float64Array(12);
  VAE_ROWS.forEach((r, i) => r.forEach((v, j) => (a[i * 3 + j] = VAE_GAIN * v)));
  return a;
}

/** The decoder's 3×4 matrix: the Moore–Penrose pseudo-inverse (AᵀA)⁻¹Aᵀ of the encoder's A (rank 3). */
export function vaeDecoderMatrix(): Float64Array {
  const a = vaeEncoderMatrix();
  const m = new Float64Array(9); // AᵀA
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 4; k++) m[i * 3 + j] += a[k * 3 + i] * a[k * 3 + j];
  // 3×3 inverse by cofactors (AᵀA is symmetric positive definite here).
  const [a0, a1, a2, b0, b1, b2, c0, c1, c2] = m;
  const co = [b1 * c2 - b2 * c1, -(b0 * c2 - b2 * c0), b0 * c1 - b1 * c0, -(a1 * c2 - a2 * c1), a0 * c2 - a2 * c0, -(a0 * c1 - a1 * c0), a1 * b2 - a2 * b1, -(a0 * b2 - a2 * b0), a0 * b1 - a1 * b0];
  const det = a0 * co[0] + a1 * co[1] + a2 * co[2];
  const inv = new Float64Array(9);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) inv[i * 3 + j] = co[j * 3 + i] / det;
  const out = new Float64Array(12);
  for (let i = 0; i < 3; i++) for (let k = 0; k < 4; k++) for (let j = 0; j < 3; j++) out[i * 4 + k] += inv[i * 3 + j] * a[k * 3 + j];
  return out;
}

/** vae_encoder: DOWNSAMPLE×DOWNSAMPLE average pooling, then the fixed 3→4 channel map (a 1×1 convolution). */
export function vaeEncoderGraph(g: DemoGeometry): GraphBuilder {
  const spec = demoSpecs(g).vae_encoder;
  const b = new GraphBuilder('demo_vae_encoder').doc(`Tiny linear VAE encoder: ${DOWNSAMPLE}x${DOWNSAMPLE} average pooling, then a fixed 3->4 channel map.`);
  const [image] = declareInputs(b, spec);
  const pooled = b.op('AveragePool', [image], { kernel_shape: [DOWNSAMPLE, DOWNSAMPLE], strides: [DOWNSAMPLE, DOWNSAMPLE] });
  const w = b.constFloat32(Float32Array.from(vaeEncoderMatrix()), [LATENT_CHANNELS, 3, 1, 1], 'encoder_map');
  declareOutput(b, spec, b.op('Conv', [pooled, w]));
  return b;
}

/** vae_decoder: the pseudo-inverse 4→3 map, ×DOWNSAMPLE bilinear upsampling, clipped to [−1, 1]. */
export function vaeDecoderGraph(g: DemoGeometry): GraphBuilder {
  const spec = demoSpecs(g).vae_decoder;
  const b = new GraphBuilder('demo_vae_decoder').doc(`Tiny linear VAE decoder: pseudo-inverse 4->3 channel map, x${DOWNSAMPLE} bilinear upsampling, clip to [-1, 1].`);
  const [latent] = declareInputs(b, spec);
  const w = b.constFloat32(Float32Array.from(vaeDecoderMatrix()), [3, LATENT_CHANNELS, 1, 1], 'decoder_map');
  const rgb = b.op('Conv', [latent, w]);
  const scales = b.constFloat32([1, 1, DOWNSAMPLE, DOWNSAMPLE], [4], 'upsample_scales');
  const up = b.op('Resize', [rgb, '', scales], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
  const lo = b.constFloat32([-1], [], 'clip_min');
  const hi = b.constFloat32([1], [], 'clip_max');
  declareOutput(b, spec, b.op('Clip', [up, lo, hi]));
  return b;
}

/** text_encoder: a lookup in the fixed embedding table. */
export function textEncoderGraph(g: DemoGeometry): GraphBuilder {
  const spec = demoSpecs(g).text_encoder;
  const b = new GraphBuilder('demo_text_encoder').doc('Embedding lookup: dims 0-5 count motion words, dims 8-15 a fixed word identity.');
  const [ids] = declareInputs(b, spec);
  const table = b.constFloat32(embeddingTable(), [VOCAB.length, EMBED_DIM], 'embedding_table');
  declareOutput(b, spec, b.op('Gather', [table, ids], { axis: 0 }));
  return b;
}

const IMAGE_EMBED_SEED = 20240918;

/** image_encoder: 2×2 grid of pooled RGB patches, projected to EMBED_DIM (identity dims only). */
export function imageEncoderGraph(g: DemoGeometry): GraphBuilder {
  const spec = demoSpecs(g).image_encoder;
  const b = new GraphBuilder('demo_image_encoder').doc('2x2 average-pooled patches through a fixed 3->16 projection (motion dims left at zero).');
  const [image] = declareInputs(b, spec);
  const k = CLIP_SIZE / 2;
  const pooled = b.op('AveragePool', [image], { kernel_shape: [k, k], strides: [k, k] }); // [B, 3, 2, 2]
  const tokens = b.op('Reshape', [pooled, b.constInt64([0, 3, IMAGE_TOKENS])]);
  const perm = b.op('Transpose', [tokens], { perm: [0, 2, 1] }); // [B, 4, 3]
  const proj = new Float32Array(3 * EMBED_DIM);
  const gen = NormalGenerator.fromSeed(IMAGE_EMBED_SEED);
  const row = new Float32Array(EMBED_DIM - IDENTITY_DIM);
  for (let c = 0; c < 3; c++) {
    gen.fill(row);
    proj.set(row, c * EMBED_DIM + IDENTITY_DIM);
  }
  declareOutput(b, spec, b.op('MatMul', [perm, b.constFloat32(proj, [3, EMBED_DIM], 'projection')]));
  return b;
}

export interface UnetTables {
  readonly sqrtAlpha: Float32Array;
  readonly negHalfInvVar: Float32Array;
  readonly invSqrtVar: Float32Array;
  readonly leak: Float32Array;
}

/** Per-timestep constants, computed in float64 from the schedule and stored as float32. */
export function unetTables(schedule: VpScheduleConfig, leak: number): UnetTables {
  const abar = vpAlphasCumprod(schedule);
  const T = abar.length;
  const t: UnetTables = { sqrtAlpha: new Float32Array(T), negHalfInvVar: new Float32Array(T), invSqrtVar: new Float32Array(T), leak: new Float32Array(T) };
  for (let i = 0; i < T; i++) {
    const v = Math.max(1 - abar[i], VAR_FLOOR);
    t.sqrtAlpha[i] = Math.sqrt(abar[i]);
    t.negHalfInvVar[i] = -1 / (2 * v);
    t.invSqrtVar[i] = 1 / Math.sqrt(v);
    t.leak[i] = leak / (1 + Math.exp(-(i - LEAK_CENTER) / LEAK_WIDTH));
  }
  return t;
}

/** The prior matrix [EMBED_DIM, M]: summed text embeddings times it give each component's log-prior. */
export function textPriorMatrix(g: DemoGeometry): Float32Array {
  const M = componentCount(g);
  const p = new Float32Array(EMBED_DIM * M);
  for (let m = 0; m < M; m++) {
    const { direction } = component(g, m);
    for (const [word, weight] of Object.entries(direction.words)) {
      p[MOTION_WORDS.indexOf(word as (typeof MOTION_WORDS)[number]) * M + m] = TEXT_PRIOR * weight;
    }
  }
  return p;
}

/**
 * Resampling matrices along one axis, built in-graph from small constant coordinate tables (the
 * runtime folds them once per session, so the file stays small). `coords` [K, L, 1, n] holds, for
 * K warps and L lines, the source coordinate of every destination pixel; the result [K, L, n, n]
 * is R[k, l, src, dst] = the bilinear weight of source pixel src in destination pixel dst, with
 * GridSample's `reflection` padding (align_corners = 0): the coordinate is reflected into
 * [−0.5, n − 0.5], and the two taps either side of it are clamped into the picture.
 */
function resampleMatrices(b: GraphBuilder, coords: string, n: number, name: string): string {
  const c = (v: number, tag: string): string => b.constFloat32([v], [], `${name}_${tag}`);
  // Reflect: t = |s + 0.5| mod 2n, folded to [0, n], minus 0.5.
  const t0 = b.op('Abs', [b.op('Add', [coords, c(0.5, 'half')])]);
  const twoN = c(2 * n, 'two_n');
  const t1 = b.op('Sub', [t0, b.op('Mul', [twoN, b.op('Floor', [b.op('Div', [t0, twoN])])])]);
  const sr = b.op('Sub', [b.op('Min', [t1, b.op('Sub', [twoN, t1])]), c(0.5, 'half2')]);
  const lo = b.op('Floor', [sr]);
  const frac = b.op('Sub', [sr, lo]);
  const src = b.constFloat32(Float32Array.from({ length: n }, (_, i) => i), [n, 1], `${name}_src`);
  const tap = (idx: string, weight: string, tag: string): string => {
    const clamped = b.op('Clip', [idx, c(0, `${tag}_min`), c(n - 1, `${tag}_max`)]);
    return b.op('Mul', [b.op('Cast', [b.op('Equal', [clamped, src])], { to: 1 }), weight]);
  };
  const left = tap(lo, b.op('Sub', [c(1, 'one'), frac]), 'tap0');
  const right = tap(b.op('Add', [lo, c(1, 'one_b')]), frac, 'tap1');
  return b.op('Add', [left, right]);
}

/** A run of consecutive components whose μ the graph computes together, as [M_p, F, h, B, C, w]. */
interface PathPart {
  readonly first: number;
  readonly count: number;
  readonly mu: string;
}

/**
 * μ_m = P_m(c) for every component, from the conditional latent `cond` [B, C, 1, h, w], in parts
 * of consecutive components laid out [M_p, F, h, B, C, w] (frames and rows outermost, so no large
 * transpose is needed). Separable warps (pans, zooms) resample columns with one [h, h] matrix and
 * rows with one [w, w] matrix per (component, frame); orbits resample each row with its own [w, w]
 * matrix (rows keep their place). Both are batched MatMuls, much cheaper on a CPU than GridSample
 * or a 4-tap Gather at these sizes.
 */
function warpPaths(b: GraphBuilder, g: DemoGeometry, cond: string): PathPart[] {
  const C = LATENT_CHANNELS;
  const { h, w, frames: F } = g;
  const M = componentCount(g);
  const i64 = (v: readonly number[]): string => b.constInt64(v);
  // Runs of consecutive components of one kind (DIRECTIONS keeps each kind together).
  const runs: { first: number; count: number; orbit: boolean }[] = [];
  for (let m = 0; m < M; m++) {
    const orbit = component(g, m).direction.orbit !== 0;
    const last = runs[runs.length - 1];
    if (last && last.orbit === orbit) runs.push({ ...runs.pop()!, count: last.count + 1 });
    else runs.push({ first: m, count: 1, orbit });
  }
  // Planes of c with rows outermost: [h, B·C, w].
  const rowsFirst = b.op('Transpose', [b.op('Reshape', [cond, i64([-1, h, w])])], { perm: [1, 0, 2] });
  return runs.map((r, ri) => {
    const K = r.count * F;
    const name = `paths${ri}`;
    let out: string;
    if (!r.orbit) {
      const xs = new Float32Array(K * w);
      const ys = new Float32Array(K * h);
      for (let k = 0; k < K; k++) {
        const [a, , e, , d, kk] = warpAffine(g, r.first + Math.floor(k / F), k % F);
        for (let x = 0; x < w; x++) xs[k * w + x] = a * x + e;
        for (let y = 0; y < h; y++) ys[k * h + y] = d * y + kk;
      }
      const rx = b.op('Reshape', [resampleMatrices(b, b.constFloat32(xs, [K, 1, 1, w], `${name}_x_coords`), w, `${name}_x`), i64([K, w, w])]); // [K, src, dst]
      const ry = resampleMatrices(b, b.constFloat32(ys, [K, 1, 1, h], `${name}_y_coords`), h, `${name}_y`);
      const ryT = b.op('Transpose', [b.op('Reshape', [ry, i64([K, h, h])])], { perm: [0, 2, 1] }); // [K, dst, src]
      // Columns: [K, h, h] @ [h, B·C·w] → [K, h, B·C·w]; rows: [K, h·B·C, w] @ [K, w, w].
      const cols = b.op('MatMul', [ryT, b.op('Reshape', [rowsFirst, i64([h, -1])])]);
      out = b.op('MatMul', [b.op('Reshape', [cols, i64([K, -1, w])]), rx]);
    } else {
      // Source x = x + offset[k, row] (an orbit never scales x), expanded in-graph to [K, h, 1, w].
      const offsets = new Float32Array(K * h);
      for (let k = 0; k < K; k++) {
        const [a, bb, e] = warpAffine(g, r.first + Math.floor(k / F), k % F);
        if (a !== 1) throw new Error(`orbit warp of component ${r.first + Math.floor(k / F)} scales x (a = ${a})`);
        for (let y = 0; y < h; y++) offsets[k * h + y] = bb * y + e;
      }
      const xs = b.op('Add', [
        b.constFloat32(Float32Array.from({ length: w }, (_, x) => x), [1, 1, 1, w], `${name}_x_base`),
        b.constFloat32(offsets, [K, h, 1, 1], `${name}_row_offsets`),
      ]);
      // Each row with its own matrix: [1, h, B·C, w] @ [K, h, w, w] → [K, h, B·C, w].
      out = b.op('MatMul', [b.op('Unsqueeze', [rowsFirst, i64([0])]), resampleMatrices(b, xs, w, `${name}_x`)]);
    }
    return { first: r.first, count: r.count, mu: b.op('Reshape', [out, i64([r.count, F, h, -1, C, w])]) };
  });
}

/**
 * unet: the exact posterior-mean denoiser of the path mixture, with the leak, as a v-prediction.
 * The paths are bilinear warps of c by resampling matrices that the graph builds from small
 * coordinate tables (a runtime folds them once per session), so the file stays small.
 */
export function unetGraph(g: DemoGeometry, schedule: VpScheduleConfig, leak: number): GraphBuilder {
  const spec = demoSpecs(g).unet;
  const C = LATENT_CHANNELS;
  const M = componentCount(g);
  const F = g.frames;
  const b = new GraphBuilder('demo_unet').doc(
    `Exact posterior-mean denoiser of a uniform mixture of ${M} motion paths of the conditional latent (${g.paths} directions x ${g.speeds} speeds, ` +
      `bilinear warps), with a static-image leak ${leak}*sigmoid((t-${LEAK_CENTER})/${LEAK_WIDTH}); outputs v. See docs/demo-model.md.`,
  );
  const [x, timestep, context, fs] = declareInputs(b, spec);
  const i64 = (v: readonly number[]): string => b.constInt64(v);

  // Per-sample scalars, each [B, 1, 1].
  const tables = unetTables(schedule, leak);
  const T = tables.sqrtAlpha.length;
  const scalar = (name: string, table: Float32Array): string => b.op('Gather', [b.constFloat32(table, [T, 1, 1], name), timestep], { axis: 0 });
  const sqrtA = scalar('sqrt_alpha', tables.sqrtAlpha);
  const negHalfInvVar = scalar('neg_half_inv_var', tables.negHalfInvVar);
  const invSqrtVar = scalar('inv_sqrt_var', tables.invSqrtVar);
  const lambda = scalar('leak', tables.leak);

  // x_t [B, C, F, h, w] and the conditional latent c (frame 0 of the repeated copy) [B, C, 1, h, w].
  const xt = b.op('Slice', [x, i64([0]), i64([C]), i64([1])]);
  const cond = b.op('Slice', [x, i64([C, 0]), i64([2 * C, 1]), i64([1, 2])]);

  // μ_m = P_m(c) in parts [M_p, F, h, B, C, w]: bilinear warps by matrix products (see warpPaths).
  const parts = warpPaths(b, g, cond);
  // x_t in the same layout, [1, F, h, B, C, w], and per-sample scalars as [1, 1, 1, B, 1, 1].
  const xtT = b.op('Unsqueeze', [b.op('Transpose', [b.op('Reshape', [xt, i64([-1, C, F, g.h, g.w])])], { perm: [2, 3, 0, 1, 4] }), i64([0])]);
  const perB = (v: string): string => b.op('Reshape', [v, i64([1, 1, 1, -1, 1, 1])]);

  // Squared distances ‖x_t − √ᾱ·μ_m‖², computed directly (no cancellation near t = 0) → [B, M].
  const d2Parts = parts.map((p) => b.op('ReduceSumSquare', [b.op('Sub', [xtT, b.op('Mul', [p.mu, perB(sqrtA)])])], { axes: [1, 2, 4, 5], keepdims: 0 }));
  const d2 = b.op('Transpose', [parts.length === 1 ? d2Parts[0] : b.op('Concat', d2Parts, { axis: 0 })], { perm: [1, 0] });

  // Log-prior from motion words in the context (zero for an empty prompt), [B, M].
  const ctxSum = b.op('ReduceSum', [context, i64([1])], { keepdims: 0 }); // [B, D]
  const prior = b.op('MatMul', [ctxSum, b.constFloat32(textPriorMatrix(g), [EMBED_DIM, M], 'text_prior')]);
  // fs is accepted and ignored; 0·fs keeps it connected (and its batch size checked).
  const fsZero = b.op('Unsqueeze', [b.op('Mul', [b.op('Cast', [fs], { to: 1 }), b.constFloat32([0], [], 'zero')]), i64([1])]);

  // Posterior weights w = softmax_m(log-prior − d2/(2(1−ᾱ))); Softmax subtracts the max first,
  // and at ᾱ = 0 every d2 is ‖x_t‖², so the weights are the prior.
  const logits = b.op('Add', [b.op('Add', [b.op('Mul', [d2, b.op('Reshape', [negHalfInvVar, i64([-1, 1])])]), prior]), fsZero]);
  const weightsT = b.op('Transpose', [b.op('Softmax', [logits], { axis: 1 })], { perm: [1, 0] }); // [M, B]

  // x̂0 = Σ_m w_m·μ_m, part by part, → [F, h, B, C, w] → [B, C, F, h, w].
  const x0Parts = parts.map((p) => {
    const wp = b.op('Slice', [weightsT, i64([p.first]), i64([p.first + p.count]), i64([0])]);
    return b.op('ReduceSum', [b.op('Mul', [p.mu, b.op('Reshape', [wp, i64([p.count, 1, 1, -1, 1, 1])])]), i64([0])], { keepdims: 0 });
  });
  const x0T = x0Parts.reduce((acc, v) => b.op('Add', [acc, v]));
  const x0 = b.op('Transpose', [x0T], { perm: [2, 3, 0, 1, 4] });

  // Leak: x̂0 ← x̂0 + λ(t)·(c − x̂0), c repeated over frames by broadcasting.
  const lam = b.op('Reshape', [lambda, i64([-1, 1, 1, 1, 1])]);
  const x0Leak = b.op('Add', [x0, b.op('Mul', [lam, b.op('Sub', [cond, x0])])]);

  // v = (√ᾱ·x_t − x̂0)/√(1−ᾱ), so that the sampler's x̂0 = √ᾱ·x_t − √(1−ᾱ)·v is x̂0 again.
  const r5 = (v: string): string => b.op('Reshape', [v, i64([-1, 1, 1, 1, 1])]);
  const v = b.op('Mul', [b.op('Sub', [b.op('Mul', [xt, r5(sqrtA)]), x0Leak]), r5(invSqrtVar)]);
  declareOutput(b, spec, v);
  return b;
}

export interface DemoGraphOptions {
  readonly geometry: DemoGeometry;
  readonly schedule: VpScheduleConfig;
  readonly leak: number;
}

/** Every component as ONNX bytes, keyed by component name (deterministic). */
export function demoOnnxFiles(o: DemoGraphOptions): Record<ComponentName, Uint8Array> {
  const g = o.geometry;
  const meta = {
    'cil.demo.paths': DIRECTIONS.slice(0, g.paths)
      .map((d) => d.name)
      .join(','),
    'cil.demo.speeds': String(g.speeds),
    'cil.demo.leak': String(o.leak),
  };
  const enc = (gb: GraphBuilder, doc: string): Uint8Array => encodeModel(gb, { producerName: 'cil demo-model', docString: doc, metadata: meta });
  return {
    unet: enc(unetGraph(g, o.schedule, o.leak), 'CIL demo model: UNet (v-prediction)'),
    vae_encoder: enc(vaeEncoderGraph(g), 'CIL demo model: VAE encoder'),
    vae_decoder: enc(vaeDecoderGraph(g), 'CIL demo model: VAE decoder'),
    text_encoder: enc(textEncoderGraph(g), 'CIL demo model: text encoder'),
    image_encoder: enc(imageEncoderGraph(g), 'CIL demo model: image encoder'),
  };
}
