/**
 * The demo model's data distribution (docs/demo-model.md): a video is the conditional image latent
 * c moved along one of M = directions × speeds motion paths, each equally likely. Path m is a fixed
 * affine warp per frame, sampled bilinearly (every channel alike): frame f of μ_m = P_m(c) is c
 * resampled at source points A_{m,f}·(x, y, 1). Frame 0 of every path is c itself (A = identity).
 * Every warp is axis-wise (the source row depends on the destination row only): pans and zooms are
 * separable, an orbit shears rows sideways. That keeps the in-graph warp to small matrix products.
 *
 * Motion has constant velocity: the travel u grows linearly with the frame index, and pans move the
 * content by the same sub-pixel amount every frame (no rounding to whole latent pixels, so no
 * stutter). Directions name the way the picture content moves. Outside the picture the warp
 * reflects it (ONNX GridSample's `reflection` padding), so what comes into view continues the image
 * without a seam or a smeared edge.
 */
import { ShapeError, tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';

/** Thrown for demo-model options outside what the demo supports. */
export class DemoModelError extends Error {
  override readonly name = 'DemoModelError';
}

/**
 * Text-embedding dimensions that carry motion words (see tokenizer.ts); the rest carry identity.
 */
export const MOTION_WORDS = ['left', 'right', 'up', 'down', 'in', 'out', 'orbit'] as const;
export type MotionWord = (typeof MOTION_WORDS)[number];

export interface Direction {
  readonly name: string;
  /** Content displacement per unit travel, in units of PAN_TRAVEL × the latent width / height (pans). */
  readonly dx: number;
  readonly dy: number;
  /** +1 zoom in, −1 zoom out, 0 none. */
  readonly zoom: number;
  /**
   * Orbit (an arc shot around the picture's middle row, as parallax without depth): the rows
   * slide sideways in proportion to their distance from the middle; +1: the bottom (near) half
   * slides right and the top (far) half left, −1 the reverse; 0 none.
   */
  readonly orbit: number;
  /**
   * The direction's prior weight per motion dim of the summed prompt embedding: log π_m =
   * TEXT_PRIOR · Σ_k count_k · words[k]. Chosen so that the most specific reading of a prompt wins
   * by at least half a word (docs/demo-model.md, "Prompt prior").
   */
  readonly words: Readonly<Partial<Record<MotionWord, number>>>;
}

/** In order: `--paths n` takes the first n. */
export const DIRECTIONS: readonly Direction[] = Object.freeze([
  { name: 'left', dx: -1, dy: 0, zoom: 0, orbit: 0, words: { left: 1 } },
  { name: 'right', dx: 1, dy: 0, zoom: 0, orbit: 0, words: { right: 1 } },
  { name: 'up', dx: 0, dy: -1, zoom: 0, orbit: 0, words: { up: 1 } },
  { name: 'down', dx: 0, dy: 1, zoom: 0, orbit: 0, words: { down: 1 } },
  { name: 'zoom-in', dx: 0, dy: 0, zoom: 1, orbit: 0, words: { in: 1 } },
  { name: 'zoom-out', dx: 0, dy: 0, zoom: -1, orbit: 0, words: { out: 1 } },
  { name: 'orbit-left', dx: 0, dy: 0, zoom: 0, orbit: -1, words: { orbit: 1, left: 0.5 } },
  { name: 'orbit-right', dx: 0, dy: 0, zoom: 0, orbit: 1, words: { orbit: 1, right: 0.5 } },
  { name: 'up-left', dx: -1, dy: -1, zoom: 0, orbit: 0, words: { up: 0.75, left: 0.75 } },
  { name: 'down-right', dx: 1, dy: 1, zoom: 0, orbit: 0, words: { down: 0.75, right: 0.75 } },
]);

/** Over the whole clip, a full-speed pan moves the content by this fraction of the width (or height). */
export const PAN_TRAVEL = 0.25;
/** Over the whole clip, a full-speed zoom scales by 1 + ZOOM_TRAVEL (in) or its inverse (out), at a constant rate. */
export const ZOOM_TRAVEL = 0.5;
/** Over the whole clip, a full-speed orbit slides the bottom and top rows by this fraction of the width each, in opposite directions. */
export const ORBIT_TRAVEL = 0.25;

export interface DemoGeometry {
  /** Latent height and width (pixels / DOWNSAMPLE). */
  readonly h: number;
  readonly w: number;
  readonly frames: number;
  /** Number of directions (first of DIRECTIONS), 1 … DIRECTIONS.length. */
  readonly paths: number;
  /** Speed levels per direction: speeds s/S for s = 1 … S. */
  readonly speeds: number;
}

export const LATENT_CHANNELS = 4;

export function checkGeometry(g: DemoGeometry): void {
  const int = (v: number, lo: number, hi: number, what: string): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new DemoModelError(`demo model: ${what} must be an integer in [${lo}, ${hi}], got ${v}`);
  };
  int(g.h, 2, 256, 'latent height (height / downsample)');
  int(g.w, 2, 256, 'latent width (width / downsample)');
  int(g.frames, 2, 64, 'frames');
  int(g.paths, 1, DIRECTIONS.length, 'paths');
  int(g.speeds, 1, 8, 'speeds');
}

/** Number of mixture components M = paths × speeds. */
export function componentCount(g: DemoGeometry): number {
  return g.paths * g.speeds;
}

/** Component m = direction·speeds + (level − 1): its direction and speed in (0, 1]. */
export function component(g: DemoGeometry, m: number): { direction: Direction; speed: number } {
  const k = Math.floor(m / g.speeds);
  const s = (m % g.speeds) + 1;
  return { direction: DIRECTIONS[k], speed: s / g.speeds };
}

/**
 * The source point of frame f of component m as an affine map of the destination pixel, in latent
 * pixel coordinates (pixel centres at integers): (sx, sy) = (a·x + b·y + e, c·x + d·y + k),
 * returned as [a, b, e, c, d, k]. Travel u = speed·f/(F − 1) grows linearly with f, so pans move at
 * a constant sub-pixel velocity, zooms scale by a constant factor per frame and orbits shear by a
 * constant amount per frame. Frame 0 is the identity. The source row never depends on x (c = 0).
 */
export function warpAffine(g: DemoGeometry, m: number, f: number): [number, number, number, number, number, number] {
  const { direction: d, speed } = component(g, m);
  const u = (speed * f) / (g.frames - 1);
  const cx = (g.w - 1) / 2;
  const cy = (g.h - 1) / 2;
  if (d.zoom !== 0) {
    // Destination (x, y) shows source centre + (x − centre)/s; s = (1 + ZOOM_TRAVEL)^(±u).
    const inv = (1 + ZOOM_TRAVEL) ** (-d.zoom * u);
    return [inv, 0, cx - inv * cx, 0, inv, cy - inv * cy];
  }
  if (d.orbit !== 0) {
    // Row y slides by k·(y − cy): destination (x, y) shows source (x − k·(y − cy), y).
    const k = (d.orbit * ORBIT_TRAVEL * g.w * u) / ((g.h - 1) / 2);
    return [1, -k, k * cy, 0, 1, 0];
  }
  // Content displaced by (ox, oy): destination p shows source p − (ox, oy).
  const ox = d.dx * PAN_TRAVEL * g.w * u;
  const oy = d.dy * PAN_TRAVEL * g.h * u;
  return [1, 0, -ox, 0, 1, -oy];
}

/** Reflects a source coordinate into [−0.5, n − 0.5], as ONNX Runtime's GridSample does (align_corners = 0). */
function reflect(v: number, n: number): number {
  const lo = -0.5;
  const hi = n - 0.5;
  const range = hi - lo;
  if (v < lo) {
    const dv = lo - v;
    const k = Math.trunc(dv / range);
    const r = dv - k * range;
    return k % 2 === 0 ? lo + r : hi - r;
  }
  if (v > hi) {
    const dv = v - hi;
    const k = Math.trunc(dv / range);
    const r = dv - k * range;
    return k % 2 === 0 ? hi - r : lo + r;
  }
  return v;
}

/**
 * The bilinear taps of every (component, frame, pixel), as ONNX GridSample samples with
 * `reflection` padding and align_corners = 0: the source point is reflected into the picture, then
 * the four nearest pixels are interpolated (clamped to the picture at its border). `index` holds
 * source pixels y·w + x and `weight` their weights, 4 per destination pixel.
 */
export interface PathTaps {
  readonly index: Int32Array;
  readonly weight: Float64Array;
}

export function pathTaps(g: DemoGeometry): PathTaps {
  checkGeometry(g);
  const { h, w, frames: F } = g;
  const M = componentCount(g);
  const n = M * F * h * w;
  const index = new Int32Array(4 * n);
  const weight = new Float64Array(4 * n);
  const clampX = (v: number): number => (v < 0 ? 0 : v > w - 1 ? w - 1 : v);
  const clampY = (v: number): number => (v < 0 ? 0 : v > h - 1 ? h - 1 : v);
  let o = 0;
  for (let m = 0; m < M; m++) {
    for (let f = 0; f < F; f++) {
      const [a, b, e, c, d, k] = warpAffine(g, m, f);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const sx = reflect(a * x + b * y + e, w);
          const sy = reflect(c * x + d * y + k, h);
          const x0 = Math.floor(sx);
          const y0 = Math.floor(sy);
          const fx = sx - x0;
          const fy = sy - y0;
          const xl = clampX(x0);
          const xh = clampX(x0 + 1);
          const yl = clampY(y0) * w;
          const yh = clampY(y0 + 1) * w;
          index[o] = yl + xl;
          index[o + 1] = yl + xh;
          index[o + 2] = yh + xl;
          index[o + 3] = yh + xh;
          weight[o] = (1 - fy) * (1 - fx);
          weight[o + 1] = (1 - fy) * fx;
          weight[o + 2] = fy * (1 - fx);
          weight[o + 3] = fy * fx;
          o += 4;
        }
      }
    }
  }
  return { index, weight };
}

/**
 * μ_m = P_m(c) for every component: [M, C, F, h, w] from a conditional latent c [C, h, w]
 * (or [1, C, h, w]), computed in float64 from the same affine maps the UNet warps with.
 * For tests, statistics and docs; the UNet does the same warp in-graph. Pass `taps` to reuse
 * them across images.
 */
export function pathMeans(g: DemoGeometry, cond: Tensor, taps: PathTaps = pathTaps(g)): Float32Array {
  checkGeometry(g);
  const { h, w, frames: F } = g;
  const hw = h * w;
  const C = LATENT_CHANNELS;
  const ok = cond.data.length === C * hw && (cond.dims.length === 3 || (cond.dims.length === 4 && cond.dims[0] === 1));
  if (!ok) throw new ShapeError(`conditional latent: expected dims [${C}, ${h}, ${w}], got [${cond.dims.join(', ')}]`);
  const M = componentCount(g);
  const out = new Float32Array(M * C * F * hw);
  const c = cond.data;
  const { index, weight } = taps;
  for (let m = 0; m < M; m++) {
    for (let f = 0; f < F; f++) {
      const base = (m * F + f) * hw;
      for (let p = 0; p < hw; p++) {
        const o = 4 * (base + p);
        const i0 = index[o], i1 = index[o + 1], i2 = index[o + 2], i3 = index[o + 3];
        const w0 = weight[o], w1 = weight[o + 1], w2 = weight[o + 2], w3 = weight[o + 3];
        for (let ch = 0; ch < C; ch++) {
          const q = ch * hw;
          out[((m * C + ch) * F + f) * hw + p] = w0 * c[q + i0] + w1 * c[q + i1] + w2 * c[q + i2] + w3 * c[q + i3];
        }
      }
    }
  }
  return out;
}

/**
 * Closed-form statistics of the demo data distribution given one conditional latent c: the
 * mixture mean E[X0 | c] = mean_m μ_m (dims [C, F, h, w]) and tr(Cov[X0 | c])/d =
 * mean_m ‖μ_m − E‖² / d, with E as a batch-1 latent [1, C, F, h, w]. These are per-image
 * statistics (the demo has no dataset); the statistics job computes the dataset-level ones.
 */
export function demoConditionalStatistics(g: DemoGeometry, cond: Tensor, taps?: PathTaps): { expectation: Tensor; trCovD: number } {
  const mu = pathMeans(g, cond, taps);
  const M = componentCount(g);
  const d = mu.length / M;
  const mean = new Float64Array(d);
  for (let m = 0; m < M; m++) for (let i = 0; i < d; i++) mean[i] += mu[m * d + i] / M;
  let ss = 0;
  for (let m = 0; m < M; m++) {
    for (let i = 0; i < d; i++) {
      const r = mu[m * d + i] - mean[i];
      ss += r * r;
    }
  }
  const expectation = tensor(Float32Array.from(mean), [1, LATENT_CHANNELS, g.frames, g.h, g.w], 'demo expectation_x0');
  return { expectation, trCovD: ss / (M * d) };
}
