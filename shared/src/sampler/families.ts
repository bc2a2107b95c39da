/**
 * The defaults table: every default value the pipeline uses, in one place. A row per model family
 * holds its reference sampler settings (from the reference configs and inference scripts, docs/design.md
 * §3), the defaults an exported manifest states, and which request fields the family takes;
 * `REQUEST_FALLBACKS` says what a field means when neither a request nor a manifest sets it.
 * `--family` alone in `cil plan` gives the reference behaviour. tools/export/contract.py mirrors
 * this table (test/export.test.ts checks the two agree).
 */
import type { Spacing } from './ddim.ts';
import type { Parameterization } from './prediction.ts';

export const FAMILY_NAMES = ['dynamicrafter', 'videocrafter', 'svd'] as const;
/** A model family's name (the `family` of manifests, statistics files and resolved requests). */
export type FamilyName = (typeof FAMILY_NAMES)[number];

/** The sampler kind of a family: VP models sample with DDIM, EDM models (SVD) with Euler. */
export type SamplerKind = 'vp-ddim' | 'edm-euler';

/**
 * DynamiCrafter's dynamic x̂0 rescale, as a manifest states it: scale_arr = concat(linspace(1,
 * base, rampSteps), full(timesteps, base)); `finalPrev` is the "previous" scale of the last step:
 * 'tau0' uses scale_arr[τ0] (DynamiCrafter), 'index0' uses scale_arr[0] (VideoCrafter1).
 */
export interface ModelDynamicRescale {
  readonly enabled: boolean;
  readonly base: number;
  readonly rampSteps: number;
  readonly finalPrev: 'tau0' | 'index0';
}

/** A VP model's noise schedule in the form manifest.json states it (docs/contracts.md). */
export interface VpModelSchedule {
  readonly kind: 'vp-ddim';
  readonly linearStart: number;
  readonly linearEnd: number;
  readonly timesteps: number;
  readonly rescaleZeroSnr: boolean;
  readonly parameterization: Parameterization;
  readonly spacing: Spacing;
  readonly dynamicRescale?: ModelDynamicRescale;
}

/** An EDM model's noise schedule in the form manifest.json states it. */
export interface EdmModelSchedule {
  readonly kind: 'edm-euler';
  readonly sigmaMin: number;
  readonly sigmaMax: number;
  readonly rho: number;
  readonly parameterization: 'v';
}

export type ModelSchedule = VpModelSchedule | EdmModelSchedule;

/** Job-request fields that only some families take; a request setting one its family does not take is refused. */
export const FAMILY_FIELDS = [
  'guidanceScale', 'guidanceRescale', 'eta', 'imageGuidanceScale', 'frameStride',
  'motionBucketId', 'noiseAugStrength', 'minGuidanceScale', 'maxGuidanceScale',
] as const;
export type FamilyField = (typeof FAMILY_FIELDS)[number];

/** Reference values of the job-request fields (the names of docs/contracts.md), as exported manifests state them. */
export interface FamilyDefaults {
  readonly steps: number;
  /** M for VP families, σ_max for EDM ones: the base checkpoint's value. */
  readonly start: number;
  /** The fps the reference scripts save at (and VideoCrafter1 and SVD condition on). */
  readonly fps: number;
  readonly guidanceScale?: number;
  /** No family has a reference value: two-scale guidance is off unless a request or manifest sets it. */
  readonly imageGuidanceScale?: number;
  readonly guidanceRescale?: number;
  readonly eta?: number;
  readonly frameStride?: number;
  readonly motionBucketId?: number;
  readonly noiseAugStrength?: number;
  readonly minGuidanceScale?: number;
  readonly maxGuidanceScale?: number;
}

interface FamilySpecBase {
  readonly name: FamilyName;
  readonly kind: SamplerKind;
  readonly schedule: ModelSchedule;
  /** The family fields (FAMILY_FIELDS) this family takes. */
  readonly fields: readonly FamilyField[];
  /** Defaults every manifest of this family must state (beyond steps and start, which every model must). */
  readonly requiredDefaults: readonly (FamilyField | 'fps')[];
  /** Whether the model is conditioned on a text prompt (and so needs a tokenizer). */
  readonly textPrompt: boolean;
  readonly defaults: FamilyDefaults;
  /** Default start (M or σ_max) for a CIL (TimeNoise fine-tuned) checkpoint. */
  readonly startCil: number;
  /** Native geometry of the reference checkpoint. */
  readonly frames: number;
  readonly height: number;
  readonly width: number;
}

export interface VpFamilySpec extends FamilySpecBase {
  readonly kind: 'vp-ddim';
  readonly schedule: VpModelSchedule;
  readonly defaults: FamilyDefaults & { readonly eta: number; readonly guidanceScale: number };
  /** The published sampler ignores M for its schedule (VideoCrafter1), reproduced only with compat 'reference'. */
  readonly scheduleIgnoresStart: boolean;
}

export interface EdmFamilySpec extends FamilySpecBase {
  readonly kind: 'edm-euler';
  readonly schedule: EdmModelSchedule;
  readonly defaults: FamilyDefaults & { readonly minGuidanceScale: number; readonly maxGuidanceScale: number };
}

/** One row of the defaults table. */
export type FamilySpec = VpFamilySpec | EdmFamilySpec;

/** LDM's linear schedule (0.00085 → 0.012 over 1000 steps) with the references' dynamic rescale (0.7 over 400 steps). */
function ldmSchedule(s: Pick<VpModelSchedule, 'rescaleZeroSnr' | 'parameterization' | 'spacing'>, finalPrev: ModelDynamicRescale['finalPrev']): VpModelSchedule {
  return { kind: 'vp-ddim', linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, ...s, dynamicRescale: { enabled: true, base: 0.7, rampSteps: 400, finalPrev } };
}
const VP_FIELDS: readonly FamilyField[] = ['guidanceScale', 'guidanceRescale', 'eta'];

export const FAMILY_TABLE: Readonly<{ dynamicrafter: VpFamilySpec; videocrafter: VpFamilySpec; svd: EdmFamilySpec }> = Object.freeze({
  // DynamiCrafter 320×512 (configs/inference_512_v1.0.yaml + the CIL inference scripts).
  dynamicrafter: {
    name: 'dynamicrafter',
    kind: 'vp-ddim',
    schedule: ldmSchedule({ rescaleZeroSnr: true, parameterization: 'v', spacing: 'uniform_trailing' }, 'tau0'),
    fields: [...VP_FIELDS, 'imageGuidanceScale', 'frameStride'],
    requiredDefaults: ['guidanceScale', 'eta', 'frameStride'],
    textPrompt: true,
    defaults: { steps: 50, start: 940, fps: 8, guidanceScale: 7.5, guidanceRescale: 0.7, eta: 1, frameStride: 24 },
    startCil: 1000,
    scheduleIgnoresStart: false,
    frames: 16,
    height: 320,
    width: 512,
  },
  // VideoCrafter1 i2v 320×512 (configs/inference_i2v_512_v1.0.yaml: use_scale, scale_b 0.7).
  videocrafter: {
    name: 'videocrafter',
    kind: 'vp-ddim',
    schedule: ldmSchedule({ rescaleZeroSnr: false, parameterization: 'eps', spacing: 'uniform' }, 'index0'),
    fields: VP_FIELDS,
    requiredDefaults: ['guidanceScale', 'eta', 'fps'],
    textPrompt: true,
    defaults: { steps: 50, start: 940, fps: 24, guidanceScale: 12, eta: 1 },
    startCil: 940,
    scheduleIgnoresStart: true,
    frames: 16,
    height: 320,
    width: 512,
  },
  // Stable Video Diffusion 576×1024 (diffusers' EulerDiscreteScheduler config for SVD).
  svd: {
    name: 'svd',
    kind: 'edm-euler',
    schedule: { kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' },
    fields: ['motionBucketId', 'noiseAugStrength', 'minGuidanceScale', 'maxGuidanceScale'],
    requiredDefaults: ['minGuidanceScale', 'maxGuidanceScale', 'fps', 'motionBucketId', 'noiseAugStrength'],
    textPrompt: false,
    defaults: { steps: 25, start: 700, fps: 7, minGuidanceScale: 1, maxGuidanceScale: 3, motionBucketId: 127, noiseAugStrength: 0.02 },
    startCil: 100,
    frames: 14,
    height: 576,
    width: 1024,
  },
});

/**
 * What a request field means when neither the request nor the model's manifest sets it: `fps` 8
 * (DynamiCrafter's reference save fps), Analytic-Init on, and no guidance rescale.
 */
export const REQUEST_FALLBACKS = Object.freeze({ fps: 8, analyticInit: true, guidanceRescale: 0 });

/** The table row of `family`. */
export function familySpec(family: FamilyName): FamilySpec {
  return FAMILY_TABLE[family];
}
