/**
 * The project's one seeded noise source (docs/design.md §3.8): the same seed and the same sequence of
 * draws give bit-identical values on every machine and Node version.
 *
 * - Uniform source: xoshiro128++ (Blackman & Vigna 2019), 32-bit integer arithmetic only, its four
 *   state words seeded from the user's seed by two outputs of splitmix64 (Vigna's recommendation).
 * - Normals: a 128-layer Ziggurat (Marsaglia & Tsang 2000, tables as in Doornik's ZIGNOR 2005),
 *   with the layer index and the signed coordinate taken from disjoint bits of one 32-bit word, so
 *   the layer is not correlated with the value (the defect Doornik found in the original RNOR).
 *
 * docs/rng.md specifies the stream layout bit for bit. Written by hand because no maintained npm
 * package offers a documented, cross-platform bit-exact seeded normal stream with a resumable state.
 * Changing anything below that alters the stream must also change ALGORITHM.
 */
import { tensor, numel, formatDims, ShapeError } from './tensor.ts';
import { kernelBackends, setZigguratTables, wasmKernels } from './kernels.ts';
import type { Tensor } from './tensor.ts';

/** Names the exact stream; stored in every state so a checkpoint is never resumed by another algorithm. */
export const ALGORITHM = 'xoshiro128++/splitmix64/ziggurat128-v1';

/** Largest accepted seed: seeds are JS integers 0 … 2^53−1. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/** Thrown for a seed outside the integers 0 … 2^53−1. */
export class SeedError extends RangeError {
  override readonly name = 'SeedError';
}

/** Thrown by `NormalGenerator.fromState` when a saved state is malformed. */
export class GeneratorStateError extends Error {
  override readonly name = 'GeneratorStateError';
}

/** A resumable snapshot of a generator: plain JSON (round-trips through JSON.stringify/parse). */
export interface GeneratorState {
  /** Always ALGORITHM. */
  readonly algorithm: string;
  /** The seed the stream started from (for logs; the position is carried by `s`). */
  readonly seed: number;
  /** xoshiro128++ state words s0..s3 as unsigned 32-bit integers, not all zero. */
  readonly s: readonly [number, number, number, number];
  /** Normals produced so far by next()/fill() (for logs; uniform() draws are not counted). */
  readonly drawn: number;
}

// ---------------------------------------------------------------------------------------------
// Ziggurat tables, built once. Layer i (0..127) spans heights [f(X[i]), f(X[i+1])] of
// f(x) = exp(-x²/2) and horizontal extent [0, X[i]]; its inner rectangle is [0, X[i+1]].
// Layer 0 is the base strip: X[0] = V/f(R) is its virtual width, whose part beyond R maps to the
// tail. R and V are Doornik's ZIGNOR constants for 128 layers.
const LAYERS = 128;
const R = 3.442619855899;
const V = 9.91256303526217e-3;
const INV_R = 1 / R;
const TWO_POW_M24 = 1 / 16777216; // 2^-24
const TWO_POW_M32 = 1 / 4294967296; // 2^-32

/** X[i+1]: the fast-path bound of layer i. */
const X_NEXT = new Float64Array(LAYERS);
/** X[i]·2^-24: turns the signed 25-bit field (plus ½) into a coordinate in (−X[i], X[i]). */
const X_SCALED = new Float64Array(LAYERS);
/** f(X[i]), i = 0..128 (F[0] is unused). */
const F = new Float64Array(LAYERS + 1);

{
  const x = new Float64Array(LAYERS + 1);
  const fR = Math.exp(-0.5 * R * R);
  x[0] = V / fR;
  x[1] = R;
  for (let i = 1; i < LAYERS - 1; i++) x[i + 1] = Math.sqrt(-2 * Math.log(V / x[i] + Math.exp(-0.5 * x[i] * x[i])));
  x[LAYERS] = 0;
  for (let i = 0; i <= LAYERS; i++) F[i] = Math.exp(-0.5 * x[i] * x[i]);
  for (let i = 0; i < LAYERS; i++) {
    X_NEXT[i] = x[i + 1];
    X_SCALED[i] = x[i] * TWO_POW_M24;
  }
}
setZigguratTables(X_NEXT, X_SCALED, F, R, INV_R);

// ---------------------------------------------------------------------------------------------
// Seeding: splitmix64 needs 64-bit wrap-around multiplies; BigInt is exact and runs once per seed.
const M64 = (1n << 64n) - 1n;

function splitmix64Pair(seed: number): [number, number, number, number] {
  let st = BigInt(seed);
  const out: number[] = [];
  for (let k = 0; k < 2; k++) {
    st = (st + 0x9e3779b97f4a7c15n) & M64;
    let z = st;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
    z ^= z >> 31n;
    out.push(Number(z & 0xffffffffn), Number(z >> 32n));
  }
  return [out[0], out[1], out[2], out[3]];
}

function checkSeed(seed: unknown, where: string): number {
  if (typeof seed !== 'number' || !Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) {
    const shown = typeof seed === 'number' ? String(seed) : `${typeof seed} ${String(seed)}`;
    throw new SeedError(`${where}: seed ${shown} is not allowed; a seed must be an integer 0 … ${MAX_SEED} (2^53−1)`);
  }
  return seed;
}

function isUint32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}

// ---------------------------------------------------------------------------------------------
// The stream itself, as module functions over an Int32Array state (s0..s3 as signed int32, the
// same bits as the documented uint32 words): V8 optimises these loops far better than the same
// code reading and writing object fields.

/** One xoshiro128++ step on `st`; returns the output word as a signed int32. */
function step(st: Int32Array): number {
  const s0 = st[0];
  const s1 = st[1];
  const s2 = st[2] ^ s0;
  const s3 = st[3] ^ s1;
  const sum = (s0 + st[3]) | 0;
  st[0] = s0 ^ s3;
  st[1] = s1 ^ s2;
  st[2] = s2 ^ (s1 << 9);
  st[3] = (s3 << 11) | (s3 >>> 21);
  return (((sum << 7) | (sum >>> 25)) + s0) | 0;
}

/** Uniform in the open interval (0, 1) from one word: (u + ½)·2^-32. */
function open01(st: Int32Array): number {
  return ((step(st) >>> 0) + 0.5) * TWO_POW_M32;
}

/**
 * Finishes a normal whose word `w` failed the fast path with coordinate `x`: the tail (layer 0)
 * or a wedge test; a wedge rejection starts over with a fresh word.
 */
function slowNormal(st: Int32Array, w: number, x: number): number {
  for (;;) {
    const i = w & 127;
    if (i === 0) {
      // Marsaglia's tail beyond R, on the side given by the sign of x; two uniforms per try.
      for (;;) {
        const tx = -Math.log(open01(st)) * INV_R;
        const ty = -Math.log(open01(st));
        if (ty + ty >= tx * tx) return x < 0 ? -(R + tx) : R + tx;
      }
    }
    // Wedge: a uniform height within layer i, accepted when under the curve.
    const y = F[i] + open01(st) * (F[i + 1] - F[i]);
    if (y < Math.exp(-0.5 * x * x)) return x;
    w = step(st);
    const j = w & 127;
    x = ((w >> 7) + 0.5) * X_SCALED[j];
    if (Math.abs(x) < X_NEXT[j]) return x;
  }
}

/** One normal: fast path inline, otherwise slowNormal. */
function normal(st: Int32Array): number {
  const w = step(st);
  const i = w & 127;
  const x = ((w >> 7) + 0.5) * X_SCALED[i];
  if (Math.abs(x) < X_NEXT[i]) return x;
  return slowNormal(st, w, x);
}

/**
 * normal() for out[start..end) (≤ CHUNK elements). The inner loop inlines xoshiro and the fast
 * path on local state words and has no call in it (a call there made V8 spill every iteration,
 * ≈25 % slower); it breaks out to the slow path and resumes.
 */
function fillChunk(st: Int32Array, out: Float32Array, start: number, end: number): void {
  let s0 = st[0];
  let s1 = st[1];
  let s2 = st[2];
  let s3 = st[3];
  let k = start;
  let w = 0;
  let x = 0;
  while (k < end) {
    for (; k < end; k++) {
      const sum = (s0 + s3) | 0;
      w = (((sum << 7) | (sum >>> 25)) + s0) | 0;
      const t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >>> 21);
      const i = w & 127;
      x = ((w >> 7) + 0.5) * X_SCALED[i];
      // Bits 0-6 pick the layer, bits 7-31 (signed) the coordinate; the sign rides in the product
      // and the test uses |x|, so the common path has no unpredictable branch.
      if (Math.abs(x) >= X_NEXT[i]) break;
      out[k] = x;
    }
    if (k === end) break;
    st[0] = s0;
    st[1] = s1;
    st[2] = s2;
    st[3] = s3;
    out[k++] = slowNormal(st, w, x);
    s0 = st[0];
    s1 = st[1];
    s2 = st[2];
    s3 = st[3];
  }
  st[0] = s0;
  st[1] = s1;
  st[2] = s2;
  st[3] = s3;
}

/**
 * The JavaScript fill, in chunks. One call over a whole latent made V8 optimise fillChunk only by
 * on-stack replacement, from feedback the first (lazily allocated) calls had not finished
 * collecting: `node --trace-deopt` showed the OSR code bailing out with "Insufficient type
 * feedback for binary operation" at `s0 ^= s3`, and the first 2–6 steps ran interpreted or
 * deoptimised (5–30 ms each instead of 0.7). Chunks make fillChunk an ordinary hot function that
 * V8 optimises between two calls with complete feedback.
 */
function fillNormals(st: Int32Array, out: Float32Array, start: number, end: number): void {
  for (let k = start; k < end; k += CHUNK) fillChunk(st, out, k, Math.min(end, k + CHUNK));
}
const CHUNK = 2048;

// Warm-up on a scratch state (no generator's stream is touched), where the WebAssembly kernels
// are missing: the feedback above, and the optimised fillChunk before the first step.
if (kernelBackends().length === 1) {
  const scratch = new Float32Array(CHUNK);
  for (let i = 0; i < 64; i++) fillNormals(Int32Array.of(1, 2, 3, 4 + i), scratch, 0, CHUNK);
}

/**
 * Seeded standard-normal generator. `fill` is the hot path (no allocation) and writes exactly the
 * values repeated `next()` calls would return, rounded to float32.
 */
export class NormalGenerator {
  private readonly st: Int32Array;
  private readonly seed: number;
  private drawnCount: number;

  private constructor(seed: number, s: readonly number[], drawn: number) {
    this.seed = seed;
    this.st = Int32Array.from(s, (v) => v | 0);
    this.drawnCount = drawn;
  }

  /** A generator at the start of the stream for `seed` (an integer 0 … 2^53−1; SeedError otherwise). */
  static fromSeed(seed: number): NormalGenerator {
    checkSeed(seed, 'NormalGenerator.fromSeed');
    // splitmix64 is a bijection of its state, so two consecutive outputs are never both zero.
    return new NormalGenerator(seed, splitmix64Pair(seed), 0);
  }

  /** Resumes from a `state()` snapshot (possibly after a JSON round-trip); GeneratorStateError if malformed. */
  static fromState(state: GeneratorState): NormalGenerator {
    const where = 'NormalGenerator.fromState';
    if (typeof state !== 'object' || state === null || Array.isArray(state)) {
      throw new GeneratorStateError(`${where}: state must be a plain object, got ${JSON.stringify(state) ?? typeof state}`);
    }
    const st = state as unknown as Record<string, unknown>;
    if (st.algorithm !== ALGORITHM) {
      throw new GeneratorStateError(
        `${where}: field "algorithm" is ${JSON.stringify(st.algorithm)}; only "${ALGORITHM}" can be resumed`,
      );
    }
    try {
      checkSeed(st.seed, where);
    } catch (e) {
      throw new GeneratorStateError(`${where}: field "seed": ${(e as Error).message}`);
    }
    const s = st.s;
    if (!Array.isArray(s) || s.length !== 4 || !s.every(isUint32)) {
      throw new GeneratorStateError(
        `${where}: field "s" must be an array of 4 unsigned 32-bit integers, got ${JSON.stringify(s)}`,
      );
    }
    const words: number[] = s;
    if (words.every((w) => w === 0)) {
      throw new GeneratorStateError(`${where}: field "s" is all zero, a state xoshiro128++ can never reach or leave`);
    }
    const drawn = st.drawn;
    if (typeof drawn !== 'number' || !Number.isSafeInteger(drawn) || drawn < 0) {
      throw new GeneratorStateError(
        `${where}: field "drawn" must be a non-negative safe integer, got ${JSON.stringify(drawn)}`,
      );
    }
    return new NormalGenerator(st.seed as number, words, drawn);
  }

  /** A plain-JSON snapshot; `fromState` continues the exact same sequence from here. */
  state(): GeneratorState {
    const st = this.st;
    return {
      algorithm: ALGORITHM,
      seed: this.seed,
      s: [st[0] >>> 0, st[1] >>> 0, st[2] >>> 0, st[3] >>> 0],
      drawn: this.drawnCount,
    };
  }

  /** Normals produced so far by next() and fill(). */
  get drawn(): number {
    return this.drawnCount;
  }

  /** The next raw xoshiro128++ output, an unsigned 32-bit integer (advances the stream by one word). */
  nextUint32(): number {
    return step(this.st) >>> 0;
  }

  /** Uniform in [0, 1) with 53 random bits from two words a, b: ((a>>>5)·2^26 + (b>>>6)) / 2^53. */
  uniform(): number {
    const a = step(this.st) >>> 5;
    const b = step(this.st) >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** One standard normal (float64; `fill` stores Math.fround of the same value). */
  next(): number {
    this.drawnCount++;
    return normal(this.st);
  }

  /** Writes standard normals into out[start..end): the same values as repeated next(), as float32. */
  fill(out: Float32Array, start = 0, end: number = out.length): void {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > out.length || start > end) {
      throw new RangeError(
        `NormalGenerator.fill: range [${start}, ${end}) must be integers with 0 ≤ start ≤ end ≤ ${out.length} (out.length)`,
      );
    }
    if (!wasmKernels()?.fillNormals(this.st, out, start, end)) fillNormals(this.st, out, start, end);
    this.drawnCount += end - start;
  }
}

/** A tensor of `dims` filled with standard normals from `gen` (fill order = row-major element order). */
export function randn(dims: readonly number[], gen: NormalGenerator, name = 'randn'): Tensor {
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(`${name}: dims ${formatDims(dims)} must be non-negative integers`);
    }
  }
  const data = new Float32Array(numel(dims));
  gen.fill(data);
  return tensor(data, dims, name);
}
