/**
 * The sampler library's public API (DESIGN.md §2, §3): plans, samplers, guidance, Analytic-Init,
 * TimeNoise, the seeded generator, tensors and tensor files. Usage: docs/sampler.md.
 */
export { tensor, zeros, clone, numel, assertShape, assertSameShape, sameDims, formatDims, ShapeError } from './tensor.ts';
export type { Tensor } from './tensor.ts';

export {
  linspace, ldmLinearBetas, rescaleZeroTerminalSnr, alphasCumprod, vpAlphasCumprod, dynamicRescaleArray, trainingSigmas, karrasSigmas,
  LDM_VP_SCHEDULE, ScheduleError,
} from './schedules.ts';
export type { VpScheduleConfig, DynamicRescaleConfig } from './schedules.ts';

export { ddimTimesteps, ddimPlan, ddimStepCoefs, ddimSteps, roundHalfEven, SPACINGS } from './ddim.ts';
export type { Spacing, Compat, DdimPlan, DdimPlanOptions } from './ddim.ts';
export { eulerPlan, eulerStepCoefs, eulerSteps } from './euler.ts';
export type { EulerPlan, EulerPlanOptions } from './euler.ts';
export { epsPrediction, vPrediction, vpPrediction, edmVCoefs } from './prediction.ts';
export type { VpPrediction, VpCoefs, EdmCoefs, Parameterization } from './prediction.ts';

export { cfg, twoScaleGuidance, perFrameGuidance, materialize } from './guidance.ts';
export type { BranchName, Branches, BranchedModel, GuidedDenoiser, GuidedOutput, DenoiserInput, CfgOptions, TwoScaleOptions, PerFrameOptions } from './guidance.ts';
export { sample, fusedUpdate } from './sampler.ts';
export type { StepCoefs, StepEvent, SampleOptions, NoiseSource } from './sampler.ts';

export { vpInitCoefs, veInitCoefs, initialLatent } from './analyticInit.ts';
export type { DatasetStatistics, InitCoefs, InitialLatentOptions } from './analyticInit.ts';
export { timeNoiseMean, sampleTimeNoiseBeta, corruptCondition, timeNoiseMoments, TIME_NOISE_DEFAULTS } from './timeNoise.ts';
export type { TimeNoiseOptions } from './timeNoise.ts';

export { FAMILIES, FAMILY_NAMES } from './families.ts';
export type { Family, FamilyName, VpFamily, EdmFamily } from './families.ts';
export { makePlan, planJson } from './plan.ts';
export type { PlanRequest, SamplerPlan } from './plan.ts';

export { NormalGenerator, randn, ALGORITHM as RNG_ALGORITHM, MAX_SEED, SeedError, GeneratorStateError } from './rng.ts';
export type { GeneratorState } from './rng.ts';
