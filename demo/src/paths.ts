/**
 * The demo model's data distribution (docs/demo-model.md): a video is the conditional image latent
 * c moved along one of M = directions × speeds motion paths, each equally likely. Path m is a fixed
 * gather P_m over the latent: frame f, pixel p of μ_m = P_m(c) is c at source pixel idx[m, f, p]
 * (nearest neighbour), the same for every channel. Frame 0 of every path is c itself.
 *
 * Directions name the way the picture content moves. Pans wrap around (the latent is a torus, so a
 * pan keeps every pixel); zooms scale about the centre and clamp at the edges.
 */
import { ShapeError, tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';

/** Thrown for demo-model options outside what the demo supports. */
export class DemoModelError extends Error {
  override readonly name = 'DemoModelError';
}

/** Text-embedding dimensions that carry motion words (see tokenizer.ts); the rest carry identity. */
export const MOTION_WORDS = ['left', 'right', 'up', 'down', 'in', 'out'] as const;
export type MotionWord = (typeof MOTION_WORDS)[number];

export interface Direction {
  readonly name: string;
  /** Content displacement per unit travel, in fractions of the latent width / height (pans). */
  readonly dx: number;
  readonly dy: number;
  /** +1 zoom in, −1 zoom out, 0 none. */
  readonly zoom: number;
  /** Prompt words that raise this direction's prior, with weights. */
  readonly words: Readonly<Partial<Record<MotionWord, number>>>;
}

/** In order: `--paths n` takes the first n. */
export const DIRECTIONS: readonly Direction[] = Object.freeze([
  { name: 'left', dx: -1, dy: 0, zoom: 0, words: { left: 1 } },
  { name: 'right', dx: 1, dy: 0, zoom: 0, words: { right: 1 } },
  { name: 'up', dx: 0, dy: -1, zoom: 0, words: { up: 1 } },
  { name: 'down', dx: 0, dy: 1, zoom: 0, words: { down: 1 } },
  { name: 'zoom-in', dx: 0, dy: 0, zoom: 1, words: { in: 1 } },
  { name: 'zoom-out', dx: 0, dy: 0, zoom: -1, words: { out: 1 } },
  { name: 'up-left', dx: -1, dy: -1, zoom: 0, words: { up: 0.5, left: 0.5 } },
  { name: 'down-right', dx: 1, dy: 1, zoom: 0, words: { down: 0.5, right: 0.5 } },
]);

/** Over the whole clip, a full-speed pan moves the content by half the latent width (or height). */
export const PAN_TRAVEL = 0.5;
/** Over the whole clip, a full-speed zoom scales by 1 + ZOOM_TRAVEL (in) or its inverse (out). */
export const ZOOM_TRAVEL = 0.5;

export interface DemoGeometry {
  /** Latent height and width (pixels / 8). */
  readonly h: number;
  readonly w: number;
  readonly frames: number;
  /** Number of directions (first of DIRECTIONS), 1 … 8. */
  readonly paths: number;
  /** Speed levels per direction: speeds s/S for s = 1 … S. */
  readonly speeds: number;
}

export const LATENT_CHANNELS = 4;

export function checkGeometry(g: DemoGeometry): void {
  const int = (v: number, lo: number, hi: number, what: string): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new DemoModelError(`demo model: ${what} must be an integer in [${lo}, ${hi}], got ${v}`);
  };
  int(g.h, 1, 256, 'latent height (height / 8)');
  int(g.w, 1, 256, 'latent width (width / 8)');
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

/** Rounds half away from zero, so opposite motions are exact mirror images. */
function roundSym(v: number): number {
  return Math.sign(v) * Math.round(Math.abs(v));
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function mod(a: number, n: number): number {
  return ((a % n) + n) % n;
}

/**
 * The source pixel of every (component, frame, pixel): idx[(m·F + f)·h·w + y·w + x] = sy·w + sx,
 * so frame f of μ_m is c gathered at those pixels (every channel alike).
 */
export function pathIndices(g: DemoGeometry): Int32Array {
  checkGeometry(g);
  const { h, w, frames: F } = g;
  const hw = h * w;
  const M = componentCount(g);
  const idx = new Int32Array(M * F * hw);
  const cy = (h - 1) / 2;
  const cx = (w - 1) / 2;
  for (let m = 0; m < M; m++) {
    const { direction: d, speed } = component(g, m);
    for (let f = 0; f < F; f++) {
      const u = (speed * f) / (F - 1); // travel so far, 0 … speed
      const base = (m * F + f) * hw;
      if (d.zoom === 0) {
        // Content displaced by (ox, oy): destination (x, y) shows source (x − ox, y − oy), wrapped.
        const ox = roundSym(d.dx * PAN_TRAVEL * w * u);
        const oy = roundSym(d.dy * PAN_TRAVEL * h * u);
        for (let y = 0; y < h; y++) {
          const sy = mod(y - oy, h);
          for (let x = 0; x < w; x++) idx[base + y * w + x] = sy * w + mod(x - ox, w);
        }
      } else {
        // Zoom about the centre by s: destination (x, y) shows source centre + (x − centre)/s.
        const s = d.zoom > 0 ? 1 + ZOOM_TRAVEL * u : 1 / (1 + ZOOM_TRAVEL * u);
        for (let y = 0; y < h; y++) {
          const sy = clamp(Math.round(cy + (y - cy) / s), 0, h - 1);
          for (let x = 0; x < w; x++) idx[base + y * w + x] = sy * w + clamp(Math.round(cx + (x - cx) / s), 0, w - 1);
        }
      }
    }
  }
  return idx;
}

/**
 * μ_m = P_m(c) for every component: [M, C, F, h, w] from a conditional latent c [C, h, w]
 * (or [1, C, h, w]). For tests, statistics and docs; the UNet does the same gather in-graph.
 */
export function pathMeans(g: DemoGeometry, cond: Tensor, idx: Int32Array = pathIndices(g)): Float32Array {
  const { h, w, frames: F } = g;
  const hw = h * w;
  const C = LATENT_CHANNELS;
  const ok = cond.data.length === C * hw && (cond.dims.length === 3 || (cond.dims.length === 4 && cond.dims[0] === 1));
  if (!ok) throw new ShapeError(`conditional latent: expected dims [${C}, ${h}, ${w}], got [${cond.dims.join(', ')}]`);
  const M = componentCount(g);
  const out = new Float32Array(M * C * F * hw);
  const c = cond.data;
  for (let m = 0; m < M; m++) {
    for (let ch = 0; ch < C; ch++) {
      for (let f = 0; f < F; f++) {
        const src = (m * F + f) * hw;
        const dst = ((m * C + ch) * F + f) * hw;
        for (let p = 0; p < hw; p++) out[dst + p] = c[ch * hw + idx[src + p]];
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
export function demoConditionalStatistics(g: DemoGeometry, cond: Tensor): { expectation: Tensor; trCovD: number } {
  const mu = pathMeans(g, cond);
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
