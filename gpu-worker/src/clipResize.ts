/**
 * Resize of the conditioning image to the CLIP image encoder's input, as the reference pipelines
 * do it: a Gaussian anti-aliasing blur followed by torch's bicubic interpolation with
 * align_corners=True.
 *
 * - DynamiCrafter / VideoCrafter1 (lvdm `FrozenOpenCLIPImageEmbedderV2.preprocess`):
 *   `kornia.geometry.resize(x, (224, 224), interpolation='bicubic', align_corners=True,
 *   antialias=True)` (antialias is the class default; no config overrides it).
 * - SVD (diffusers `StableVideoDiffusionPipeline._encode_image`, and the CIL authors' copy):
 *   `_resize_with_antialiasing(x, (224, 224))`.
 *
 * The two use the same sigma rule (max((in/out − 1)/2, 0.001) per axis), kernel-size rule
 * (int(max(4σ, 3)), bumped to odd), kernel (exp(−n²/2σ²) normalised to sum 1), reflect padding,
 * pass order (along W, then along H) and interpolation. They differ only where kornia skips the
 * blur: when no axis is downscaled (max factor ≤ 1) and on a singleton axis. Diffusers blurs there
 * with σ = 0.001 and 3 taps, a kernel of exactly [0, 1, 0] in float32 (exp(−500000) underflows to
 * 0), i.e. the identity for finite input (and it fails on a singleton axis, which reflect padding
 * rejects). So one implementation serves both families; it follows kornia's skips. The cross-check
 * against both references is gpu-worker/test/clipResize.test.ts.
 *
 * Hand-written because no npm library reproduces this bit for bit: sharp/libvips' and canvas'
 * bicubic resamplers use other kernels, support widths and pixel-centre conventions (none has
 * torch's align_corners=True grid with A = −0.75 and clamped taps), and none applies kornia's
 * sigma/kernel-size rule for the anti-aliasing blur. Arithmetic follows torch's float32 steps
 * (scale, source index, lambda, cubic coefficients and the weighted sums, as upsample_bicubic2d's
 * and conv2d's CPU kernels compute them, including where the x86-64 build fuses multiply-adds),
 * because the align_corners grid in float32 alone moves the result by up to ~1e-5 from the exact
 * (float64) resize. The result is bit-identical to torch 2.14 on x86-64 CPU (the pinned .venv);
 * another build that fuses differently (or CUDA) would differ by a few float32 ulp.
 */
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import { ShapeError } from '#shared/sampler';

const f32 = Math.fround;

/**
 * float32 fused multiply-add: a·b is exact in double for float32 a, b, so one rounding of the sum
 * to double and one to float32 (a double rounding that can differ from a true fma in rare ties).
 */
const fma32 = (a: number, b: number, c: number): number => f32(a * b + c);

/** The anti-aliasing blur along one axis: its float32 kernel (odd length) or null when skipped. */
export interface AxisBlur {
  readonly sigma: number;
  readonly kernel: Float32Array;
}

/**
 * kornia.geometry.resize's anti-aliasing parameters for both axes (rows first), or null when it
 * does not blur at all (no axis downscaled). Exported for the tests.
 */
export function antialiasBlur(h: number, w: number, outH: number, outW: number): { y: AxisBlur | null; x: AxisBlur | null } | null {
  const fy = h / outH;
  const fx = w / outW;
  if (!(Math.max(fy, fx) > 1)) return null;
  const axis = (factor: number, size: number): AxisBlur | null => {
    const sigma = Math.max((factor - 1) / 2, 0.001);
    let ks = Math.trunc(Math.max(2 * 2 * sigma, 3));
    if (ks % 2 === 0) ks += 1;
    // A singleton axis has nothing to smooth (kornia: kernel size 1).
    return size === 1 ? null : { sigma, kernel: gaussianKernel(ks, sigma) };
  };
  return { y: axis(fy, h), x: axis(fx, w) };
}

/** exp(−n²/2σ²) at the integer offsets n of an odd window, normalised to sum 1, in float32 like torch. */
function gaussianKernel(size: number, sigma: number): Float32Array {
  const s = f32(sigma); // sigma becomes a float32 tensor (the input's dtype)
  const denom = f32(2 * f32(s * s));
  const half = (size - 1) / 2;
  const g = new Float32Array(size);
  let sum = 0;
  for (let i = 0; i < size; i++) {
    const n = i - half;
    g[i] = f32(Math.exp(f32(-(n * n) / denom)));
    sum = f32(sum + g[i]);
  }
  for (let i = 0; i < size; i++) g[i] = f32(g[i] / sum);
  return g;
}

/** torch's 'reflect' padding index (edge not repeated); valid for offsets smaller than the size. */
const reflect = (i: number, n: number): number => (i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i);

/**
 * Correlates every row (axis 'x') or column (axis 'y') of `src` ([planes, h, w]) with `k`,
 * reflect-padded, into `dst`.
 */
function blurAxis(src: Float32Array, dst: Float32Array, planes: number, h: number, w: number, k: Float32Array, axis: 'x' | 'y'): void {
  const r = (k.length - 1) / 2;
  const n = axis === 'x' ? w : h;
  if (r >= n) throw new ShapeError(`clip resize: blur radius ${r} does not fit an axis of ${n} pixels (reflect padding)`);
  const step = axis === 'x' ? 1 : w;
  const idx = new Int32Array(n * k.length); // source offsets along the axis, padding resolved once
  for (let i = 0; i < n; i++) for (let t = 0; t < k.length; t++) idx[i * k.length + t] = reflect(i + t - r, n) * step;
  const plane = h * w;
  const kl = k.length;
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < h; y++) {
      const row = p * plane + y * w;
      for (let x = 0; x < w; x++) {
        // along x the taps move within the row, along y within the column
        const base = axis === 'x' ? row : p * plane + x;
        const o = (axis === 'x' ? x : y) * kl;
        // float32 fused multiply-adds in tap order: bit for bit what kornia's addcmul chain and
        // torch's conv2d (both references) give at the real resolutions (320×512 and larger)
        let acc = f32(src[base + idx[o]] * k[0]);
        for (let t = 1; t < kl; t++) acc = fma32(src[base + idx[o + t]], k[t], acc);
        dst[row + x] = acc;
      }
    }
  }
}

/**
 * torch's cubic convolution coefficients (A = −0.75) for fraction t, in float32 with the
 * contractions torch's x86-64 CPU build compiles, found by matching its weights bit for bit over
 * 5000 taps: in cubic_convolution2 the first two multiply-adds are fused, the last is not; in
 * cubic_convolution1 the last is not (its first gave the same bits either way; fused here like
 * its twin in cubic_convolution2).
 */
function cubicCoefficients(t: number, out: Float32Array, o: number): void {
  const A = -0.75;
  const c1 = (x: number): number => f32(f32(f32(fma32(A + 2, x, -(A + 3)) * x) * x) + 1); // ((A+2)x − (A+3))·x·x + 1
  const c2 = (x: number): number => f32(f32(fma32(fma32(A, x, -5 * A), x, 8 * A) * x) - 4 * A); // ((Ax − 5A)x + 8A)x − 4A
  const x2 = f32(1 - t);
  out[o] = c2(f32(t + 1));
  out[o + 1] = c1(t);
  out[o + 2] = c1(x2);
  out[o + 3] = c2(f32(x2 + 1));
}

/** Per output index: the 4 clamped source indices and weights of torch's bicubic, align_corners=True. */
function bicubicTaps(inSize: number, outSize: number): { index: Int32Array; weight: Float32Array } {
  const index = new Int32Array(4 * outSize);
  const weight = new Float32Array(4 * outSize);
  const scale = outSize > 1 ? f32((inSize - 1) / (outSize - 1)) : 0;
  for (let i = 0; i < outSize; i++) {
    const real = f32(scale * i);
    const base = Math.min(Math.floor(real), inSize - 1);
    const lambda = Math.min(Math.max(f32(real - base), 0), 1);
    cubicCoefficients(lambda, weight, 4 * i);
    for (let j = 0; j < 4; j++) index[4 * i + j] = Math.max(Math.min(base - 1 + j, inSize - 1), 0);
  }
  return { index, weight };
}

/**
 * Σ v_j·w_j over 4 taps in float32 as torch's upsample kernel compiles `output = v0·w0; output +=
 * v·w …` on x86-64 (matched against its outputs): fma(v0, w0, v1·w1), then fma for taps 2 and 3.
 */
const sum4 = (v0: number, v1: number, v2: number, v3: number, wt: Float32Array, o: number): number =>
  fma32(v3, wt[o + 3], fma32(v2, wt[o + 2], fma32(v0, wt[o], f32(v1 * wt[o + 1]))));

/** One row's 4 horizontal taps (sum4 over src[row + index]). */
const dot4 = (src: Float32Array, row: number, tx: { index: Int32Array; weight: Float32Array }, o: number): number =>
  sum4(src[row + tx.index[o]], src[row + tx.index[o + 1]], src[row + tx.index[o + 2]], src[row + tx.index[o + 3]], tx.weight, o);

/**
 * The CLIP resize of a [1, C, H, W] image (RGB in [−1, 1] for the worker) to [1, C, size, size]:
 * Gaussian anti-aliasing when downscaling, then bicubic with align_corners=True, as the reference
 * pipelines (module comment). Allocates its buffers per call (it runs once per job).
 */
export function clipResize(image: Tensor, size: number): Tensor {
  if (image.dims.length !== 4 || image.dims[0] !== 1) throw new ShapeError(`clip resize: expected [1, C, H, W], got [${image.dims.join(', ')}]`);
  const [, c, h, w] = image.dims;
  if (h < 1 || w < 1 || !Number.isInteger(size) || size < 1) throw new ShapeError(`clip resize: cannot resize ${h}×${w} to ${size}×${size}`);
  let src = image.data;
  const blur = antialiasBlur(h, w, size, size);
  if (blur) {
    const tmp = new Float32Array(src.length);
    if (blur.x) {
      blurAxis(src, tmp, c, h, w, blur.x.kernel, 'x');
      src = tmp;
    }
    if (blur.y) {
      const dst = src === tmp ? new Float32Array(src.length) : tmp;
      blurAxis(src, dst, c, h, w, blur.y.kernel, 'y');
      src = dst;
    }
  }
  const ty = bicubicTaps(h, size);
  const tx = bicubicTaps(w, size);
  const out = new Float32Array(c * size * size);
  for (let k = 0; k < c; k++) {
    const plane = k * h * w;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const t0 = dot4(src, plane + ty.index[4 * y] * w, tx, 4 * x);
        const t1 = dot4(src, plane + ty.index[4 * y + 1] * w, tx, 4 * x);
        const t2 = dot4(src, plane + ty.index[4 * y + 2] * w, tx, 4 * x);
        const t3 = dot4(src, plane + ty.index[4 * y + 3] * w, tx, 4 * x);
        out[(k * size + y) * size + x] = sum4(t0, t1, t2, t3, ty.weight, 4 * y);
      }
    }
  }
  return tensor(out, [1, c, size, size], `image_${size}`);
}
