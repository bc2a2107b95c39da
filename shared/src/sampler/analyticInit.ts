/**
 * Analytic-Init (Zhao et al. 2024, §4.1): start the reverse process at M < T from the Gaussian
 * that minimises KL to the marginal q_M — per element, mean α_M·E[X0] and variance
 * α_M²·tr(Cov[X0])/d + σ_M². E[X0] and tr(Cov)/d are precomputed dataset statistics.
 */
import { ShapeError, assertSameShape, tensor } from './tensor.ts';
import type { Tensor } from './tensor.ts';
import type { NoiseSource } from './sampler.ts';

export interface DatasetStatistics {
  /** E[X0], latent shape. */
  readonly expectation: Tensor;
  /** tr(Cov[X0])/d. */
  readonly trCovD: number;
}

/** x_M = meanCoef·E[X0] + std·z. */
export interface InitCoefs {
  readonly meanCoef: number;
  readonly std: number;
}

function checkTrCov(trCovD: number): void {
  if (!Number.isFinite(trCovD) || trCovD < 0) throw new RangeError(`tr_cov_d must be a finite number ≥ 0, got ${trCovD}`);
}

/**
 * VP (DDIM) at start M, with ᾱ = ᾱ[M−1] (the reference's index):
 *   x_M = √ᾱ·E[X0] + √(1 − ᾱ + ᾱ·trCov_d)·z.
 * Without statistics ("start at M only"): x_M = z.
 */
export function vpInitCoefs(alphaStart: number, trCovD: number | null): InitCoefs {
  if (trCovD === null) return { meanCoef: 0, std: 1 };
  checkTrCov(trCovD);
  return { meanCoef: Math.sqrt(alphaStart), std: Math.sqrt(1 - alphaStart + alphaStart * trCovD) };
}

/**
 * VE (SVD, EDM): x = z·√(init_noise_sigma² + trCov_d) + E[X0]. The paper's formula; the authors'
 * SVD pipeline unpacks its estimator's (trCov_d, E[X0]) in the opposite order (see
 * docs/reference-differences.md). Without statistics: x = init_noise_sigma·z.
 */
export function veInitCoefs(initNoiseSigma: number, trCovD: number | null): InitCoefs {
  if (trCovD === null) return { meanCoef: 0, std: initNoiseSigma };
  checkTrCov(trCovD);
  return { meanCoef: 1, std: Math.sqrt(initNoiseSigma * initNoiseSigma + trCovD) };
}

export interface InitialLatentOptions {
  readonly dims: readonly number[];
  readonly coefs: InitCoefs;
  /** Required when coefs.meanCoef ≠ 0. */
  readonly expectation?: Tensor;
  /**
   * Unit Gaussian noise z: an explicit tensor (as diffusers' `latents`, e.g. loaded from .npy)
   * or a seeded source. An explicit tensor wins.
   */
  readonly noise: Tensor | NoiseSource;
}

/** x = meanCoef·E[X0] + std·z, in one pass. */
export function initialLatent(o: InitialLatentOptions): Tensor {
  const n = o.dims.reduce((a, b) => a * b, 1);
  const x = new Float32Array(n);
  if ('data' in o.noise) {
    if (o.noise.data.length !== n || o.noise.dims.length !== o.dims.length || o.noise.dims.some((d, i) => d !== o.dims[i])) {
      throw new ShapeError(`initial noise: expected dims [${o.dims.join(', ')}], got [${o.noise.dims.join(', ')}]`);
    }
    x.set(o.noise.data);
  } else {
    o.noise.fill(x);
  }
  const out = tensor(x, o.dims, 'initial latent');
  const { meanCoef, std } = o.coefs;
  if (meanCoef !== 0) {
    if (!o.expectation) throw new ShapeError('Analytic-Init needs expectation_x0 (E[X0])');
    assertSameShape(o.expectation, 'expectation_x0 (E[X0])', out, 'latent');
    const e = o.expectation.data;
    for (let i = 0; i < n; i++) x[i] = meanCoef * e[i] + std * x[i];
  } else if (std !== 1) {
    for (let i = 0; i < n; i++) x[i] = std * x[i];
  }
  return out;
}
