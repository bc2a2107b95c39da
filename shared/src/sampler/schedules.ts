/**
 * Noise schedules as pure functions, all float64 (docs/design.md §3.1).
 * Each function reproduces the reference's arithmetic (numpy/torch float64), so the
 * values match the authors' buffers to ~1e-12.
 */

export class ScheduleError extends Error {
  override readonly name = 'ScheduleError';
}

/** numpy.linspace(start, stop, num) with endpoint=True: y_k = start + k·step, last = stop. */
export function linspace(start: number, stop: number, num: number): Float64Array {
  if (!Number.isInteger(num) || num < 1) throw new ScheduleError(`linspace: num must be a positive integer, got ${num}`);
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let k = 0; k < num; k++) out[k] = k * step + start;
  out[num - 1] = stop;
  return out;
}

/** LDM "linear" betas: β = linspace(√start, √end, n)² (make_beta_schedule("linear")). */
export function ldmLinearBetas(linearStart: number, linearEnd: number, n: number): Float64Array {
  const r = linspace(Math.sqrt(linearStart), Math.sqrt(linearEnd), n);
  for (let i = 0; i < n; i++) r[i] = r[i] * r[i];
  return r;
}

/**
 * Zero-terminal-SNR rescale (Lin et al. 2023, Algorithm 1), as the reference's
 * rescale_zero_terminal_snr: shift √ᾱ so the last is 0, scale so the first is unchanged.
 */
export function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const n = betas.length;
  const sqrtBar = new Float64Array(n);
  let prod = 1;
  for (let i = 0; i < n; i++) {
    prod *= 1 - betas[i];
    sqrtBar[i] = Math.sqrt(prod);
  }
  const first = sqrtBar[0];
  const last = sqrtBar[n - 1];
  const scale = first / (first - last);
  for (let i = 0; i < n; i++) sqrtBar[i] = (sqrtBar[i] - last) * scale;
  const out = new Float64Array(n);
  const bar0 = sqrtBar[0] * sqrtBar[0];
  out[0] = 1 - bar0;
  for (let i = 1; i < n; i++) {
    const cur = sqrtBar[i] * sqrtBar[i];
    const prev = sqrtBar[i - 1] * sqrtBar[i - 1];
    out[i] = 1 - cur / prev;
  }
  return out;
}

/** ᾱ = cumprod(1 − β). */
export function alphasCumprod(betas: Float64Array): Float64Array {
  const out = new Float64Array(betas.length);
  let prod = 1;
  for (let i = 0; i < betas.length; i++) {
    prod *= 1 - betas[i];
    out[i] = prod;
  }
  return out;
}

export interface VpScheduleConfig {
  /** Default 0.00085 (LDM / DynamiCrafter / VideoCrafter1). */
  readonly linearStart: number;
  /** Default 0.012. */
  readonly linearEnd: number;
  /** Training steps T, default 1000. */
  readonly timesteps: number;
  /** DynamiCrafter: true; VideoCrafter1: false. */
  readonly rescaleZeroSnr: boolean;
}

export const LDM_VP_SCHEDULE: VpScheduleConfig = Object.freeze({
  linearStart: 0.00085,
  linearEnd: 0.012,
  timesteps: 1000,
  rescaleZeroSnr: false,
});

/** ᾱ for a VP model, exactly as the reference model's `alphas_cumprod` buffer (float64). */
export function vpAlphasCumprod(cfg: VpScheduleConfig): Float64Array {
  let betas = ldmLinearBetas(cfg.linearStart, cfg.linearEnd, cfg.timesteps);
  if (cfg.rescaleZeroSnr) betas = rescaleZeroTerminalSnr(betas);
  return alphasCumprod(betas);
}

export interface DynamicRescaleConfig {
  /** Scale reached at `turningStep` and kept after it (0.7 in both references). */
  readonly baseScale: number;
  /** Length of the linear ramp from 1 (400 in both references). */
  readonly turningStep: number;
  /**
   * What the first sampling step (i = 0, the last one run) uses as its "previous" scale:
   * DynamiCrafter repeats scale_arr[τ_0]; VideoCrafter1 uses scale_arr[0] (= 1).
   */
  readonly firstPrev: 'repeat' | 'scale0';
}

/**
 * scale_arr = concat(linspace(1, base, turning), full(T, base)) — the references append T
 * (not T − turning) constant entries, so the array has turning + T entries.
 */
export function dynamicRescaleArray(cfg: DynamicRescaleConfig, timesteps: number): Float64Array {
  const ramp = linspace(1, cfg.baseScale, cfg.turningStep);
  const out = new Float64Array(cfg.turningStep + timesteps);
  out.set(ramp, 0);
  out.fill(cfg.baseScale, cfg.turningStep);
  return out;
}

/** Training sigmas of a VP schedule seen as VE: σ_k = √((1 − ᾱ_k)/ᾱ_k). */
export function trainingSigmas(alphasBar: Float64Array): Float64Array {
  const out = new Float64Array(alphasBar.length);
  for (let i = 0; i < alphasBar.length; i++) out[i] = Math.sqrt((1 - alphasBar[i]) / alphasBar[i]);
  return out;
}

/**
 * Karras et al. (2022) eq. 5: σ_i = (σmax^(1/ρ) + i/(n−1)·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, i = 0…n−1
 * (diffusers' _convert_to_karras, ramp = linspace(0, 1, n)). The trailing 0 is not included.
 */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): Float64Array {
  if (!(sigmaMax > sigmaMin) || !(sigmaMin > 0)) {
    throw new ScheduleError(`karras sigmas need 0 < sigmaMin < sigmaMax, got sigmaMin=${sigmaMin}, sigmaMax=${sigmaMax}`);
  }
  const ramp = linspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (maxInv + ramp[i] * (minInv - maxInv)) ** rho;
  return out;
}
