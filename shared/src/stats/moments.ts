/**
 * The moment accumulator behind dataset statistics (docs/statistics.md): per-element count, mean
 * and M2 over videos, and its exact merge.
 *
 * Estimator. Per latent element i over N videos: E[X0]_i = mean, and tr(Cov[X0])/d = (1/d)·Σ_i
 * M2_i/N, the population (1/N) variance averaged over elements. The paper's Cov is over the data
 * distribution; moment-matching the empirical distribution (the maximum-likelihood Gaussian fit)
 * divides by N. For the thousands of videos used the 1/(N−1) version differs by N/(N−1) − 1 < 0.1 %.
 *
 * Numerics. Welford's update per video and Chan et al.'s pairwise merge of (n, mean, M2), all in
 * float64: no cancellation of Σx² − (Σx)²/N, and merging shards agrees with one pass to float64
 * rounding. Memory is O(latent size): three numbers per element, never per video.
 */

/** Accumulator misuse: wrong element count, non-finite input, merging different shapes. */
export class AccumulatorError extends Error {
  override readonly name = 'AccumulatorError';
}

// ---------------------------------------------------------------------------------------------
// The accumulator.

function numelOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** Per-element count, mean and sum of squared deviations (M2) of equally shaped samples. */
export class MomentAccumulator {
  readonly dims: readonly number[];
  /** Samples (videos) counted. */
  n: number;
  readonly mean: Float64Array;
  readonly m2: Float64Array;

  constructor(dims: readonly number[], state?: { n: number; mean: Float64Array; m2: Float64Array }) {
    this.dims = Object.freeze([...dims]);
    const size = numelOf(dims);
    if (state) {
      if (state.mean.length !== size || state.m2.length !== size) {
        throw new AccumulatorError(`accumulator state has ${state.mean.length}/${state.m2.length} elements, dims [${dims.join(', ')}] need ${size}`);
      }
      this.n = state.n;
      this.mean = state.mean;
      this.m2 = state.m2;
    } else {
      this.n = 0;
      this.mean = new Float64Array(size);
      this.m2 = new Float64Array(size);
    }
  }

  get size(): number {
    return this.mean.length;
  }

  /** Adds one sample (Welford). Refuses a wrong size or a non-finite element, leaving the state unchanged. */
  add(x: Float32Array | Float64Array): void {
    const mean = this.mean;
    const m2 = this.m2;
    if (x.length !== mean.length) throw new AccumulatorError(`sample has ${x.length} elements, the accumulator [${this.dims.join(', ')}] has ${mean.length}`);
    for (let i = 0; i < x.length; i++) {
      if (!Number.isFinite(x[i])) throw new AccumulatorError(`sample element ${i} is ${x[i]}; every element must be finite`);
    }
    const n1 = this.n + 1;
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      const d = v - mean[i];
      const m = mean[i] + d / n1;
      mean[i] = m;
      m2[i] += d * (v - m);
    }
    this.n = n1;
  }

  /** Adds `o`'s samples (Chan, Golub & LeVeque's pairwise update). `o` is unchanged. */
  merge(o: MomentAccumulator): void {
    if (o.size !== this.size || o.dims.some((d, i) => d !== this.dims[i]) || o.dims.length !== this.dims.length) {
      throw new AccumulatorError(`cannot merge accumulators of dims [${o.dims.join(', ')}] into [${this.dims.join(', ')}]`);
    }
    if (o.n === 0) return;
    if (this.n === 0) {
      this.mean.set(o.mean);
      this.m2.set(o.m2);
      this.n = o.n;
      return;
    }
    const na = this.n;
    const nb = o.n;
    const n = na + nb;
    const wb = nb / n;
    const w = (na * nb) / n;
    const ma = this.mean;
    const m2a = this.m2;
    for (let i = 0; i < ma.length; i++) {
      const d = o.mean[i] - ma[i];
      ma[i] += d * wb;
      m2a[i] += o.m2[i] + d * d * w;
    }
    this.n = n;
  }

  /** E[X0] as float32. */
  expectation(): Float32Array {
    return Float32Array.from(this.mean);
  }

  /** tr(Cov)/d: the population variance (1/N) averaged over elements, in float64. */
  trCovD(): number {
    if (this.n === 0) throw new AccumulatorError('no samples: tr(Cov)/d is undefined');
    let s = 0;
    for (let i = 0; i < this.m2.length; i++) s += this.m2[i];
    return s / this.n / this.m2.length;
  }
}
