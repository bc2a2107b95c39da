/**
 * Per-family sampler defaults, taken from the reference configs and inference scripts
 * (DESIGN.md §3.1, §3.2). `--family` alone gives the reference behaviour.
 */
import type { Spacing } from './ddim.ts';
import type { Parameterization } from './prediction.ts';
import type { DynamicRescaleConfig, VpScheduleConfig } from './schedules.ts';

export type FamilyName = 'dynamicrafter' | 'videocrafter' | 'svd';
export const FAMILY_NAMES: readonly FamilyName[] = ['dynamicrafter', 'videocrafter', 'svd'];

export interface VpFamily {
  readonly kind: 'vp-ddim';
  readonly name: FamilyName;
  readonly schedule: VpScheduleConfig;
  readonly parameterization: Parameterization;
  readonly spacing: Spacing;
  readonly eta: number;
  readonly steps: number;
  /** Default start M for the base checkpoint (with Analytic-Init). */
  readonly start: number;
  /** Default start M for a CIL (TimeNoise fine-tuned) checkpoint. */
  readonly startCil: number;
  readonly guidanceScale: number;
  readonly guidanceRescale: number;
  readonly dynamicRescale: DynamicRescaleConfig | null;
  /** The published sampler ignores M for its schedule (VideoCrafter1), reproduced only with compat 'reference'. */
  readonly scheduleIgnoresStart: boolean;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
}

export interface EdmFamily {
  readonly kind: 'edm-euler';
  readonly name: FamilyName;
  readonly schedule: VpScheduleConfig;
  readonly parameterization: 'v';
  readonly steps: number;
  /** σ_max of the baseline. */
  readonly start: number;
  /** σ_max used by the CIL configs. */
  readonly startCil: number;
  readonly sigmaMin: number;
  readonly rho: number;
  readonly minGuidanceScale: number;
  readonly maxGuidanceScale: number;
  readonly frames: number;
  readonly height: number;
  readonly width: number;
}

export type Family = VpFamily | EdmFamily;

const LDM = { linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000 } as const;

export const FAMILIES: Readonly<Record<FamilyName, Family>> = Object.freeze({
  // DynamiCrafter 320×512 (configs/inference_512_v1.0.yaml + the CIL inference scripts).
  dynamicrafter: {
    kind: 'vp-ddim',
    name: 'dynamicrafter',
    schedule: { ...LDM, rescaleZeroSnr: true },
    parameterization: 'v',
    spacing: 'uniform_trailing',
    eta: 1,
    steps: 50,
    start: 940,
    startCil: 1000,
    guidanceScale: 7.5,
    guidanceRescale: 0.7,
    dynamicRescale: { baseScale: 0.7, turningStep: 400, firstPrev: 'repeat' },
    scheduleIgnoresStart: false,
    frames: 16,
    height: 320,
    width: 512,
  },
  // VideoCrafter1 i2v 320×512 (configs/inference_i2v_512_v1.0.yaml: use_scale, scale_b 0.7).
  videocrafter: {
    kind: 'vp-ddim',
    name: 'videocrafter',
    schedule: { ...LDM, rescaleZeroSnr: false },
    parameterization: 'eps',
    spacing: 'uniform',
    eta: 1,
    steps: 50,
    start: 940,
    startCil: 940,
    guidanceScale: 12,
    guidanceRescale: 0,
    dynamicRescale: { baseScale: 0.7, turningStep: 400, firstPrev: 'scale0' },
    scheduleIgnoresStart: true,
    frames: 16,
    height: 320,
    width: 512,
  },
  // Stable Video Diffusion 576×1024 (diffusers' EulerDiscreteScheduler config for SVD).
  svd: {
    kind: 'edm-euler',
    name: 'svd',
    schedule: { ...LDM, rescaleZeroSnr: false },
    parameterization: 'v',
    steps: 25,
    start: 700,
    startCil: 100,
    sigmaMin: 0.002,
    rho: 7,
    minGuidanceScale: 1,
    maxGuidanceScale: 3,
    frames: 14,
    height: 576,
    width: 1024,
  },
});
