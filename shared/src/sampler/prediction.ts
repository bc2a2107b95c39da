/**
 * Denoiser preconditioning (k-diffusion style): the parameterisation lives here, as the
 * coefficients that turn the network output o and the latent x into x̂0 and ε̂, so samplers
 * never branch on the prediction type.
 */

/** x̂0 = x0FromX·x + x0FromOut·o and ε̂ = epsFromX·x + epsFromOut·o at ᾱ = a. */
export interface VpCoefs {
  readonly x0FromX: number;
  readonly x0FromOut: number;
  readonly epsFromX: number;
  readonly epsFromOut: number;
}
export type VpPrediction = (alphaBar: number) => VpCoefs;

/** ε-prediction (VideoCrafter1): ε̂ = o, x̂0 = (x − √(1−a)·o)/√a. */
export const epsPrediction: VpPrediction = (a) => {
  const sa = Math.sqrt(a);
  return { x0FromX: 1 / sa, x0FromOut: -Math.sqrt(1 - a) / sa, epsFromX: 0, epsFromOut: 1 };
};

/** v-prediction (DynamiCrafter; Salimans & Ho 2022): ε̂ = √a·v + √(1−a)·x, x̂0 = √a·x − √(1−a)·v. */
export const vPrediction: VpPrediction = (a) => {
  const sa = Math.sqrt(a);
  const s1a = Math.sqrt(1 - a);
  return { x0FromX: sa, x0FromOut: -s1a, epsFromX: s1a, epsFromOut: sa };
};

export type Parameterization = 'eps' | 'v';

export function vpPrediction(p: Parameterization): VpPrediction {
  return p === 'v' ? vPrediction : epsPrediction;
}

/** EDM preconditioning (Karras et al. 2022, Table 1) for a VE view of a VP model. */
export interface EdmCoefs {
  /** Network input scale c_in = 1/√(σ²+1). */
  readonly cIn: number;
  /** Network time input c_noise = 0.25·ln σ. */
  readonly cNoise: number;
  /** x̂0 = cSkip·x + cOut·o. */
  readonly cSkip: number;
  readonly cOut: number;
}

/** v-prediction as SVD: x̂0 = x/(σ²+1) − v·σ/√(σ²+1). */
export function edmVCoefs(sigma: number): EdmCoefs {
  const s2 = sigma * sigma + 1;
  return { cIn: 1 / Math.sqrt(s2), cNoise: 0.25 * Math.log(sigma), cSkip: 1 / s2, cOut: -sigma / Math.sqrt(s2) };
}
