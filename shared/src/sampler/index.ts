/**
 * `#shared/sampler`: the sampler library (docs/sampler.md). Tensors, the seeded generator,
 * schedules, prediction types, guidance, the linear-update loop, DDIM, Euler, Analytic-Init,
 * TimeNoise, the per-family defaults and the plan. Pure: no I/O, no OS randomness, no Node
 * built-ins (eslint.config.js enforces it), so the same code runs in a worker, a Lambda or a browser.
 */
export * from './tensor.ts';
export * from './rng.ts';
export { kernelBackend, kernelBackends, setKernelBackend } from './kernels.ts';
export type { KernelBackend } from './kernels.ts';
export * from './schedules.ts';
export * from './prediction.ts';
export * from './guidance.ts';
export * from './sampler.ts';
export * from './ddim.ts';
export * from './euler.ts';
export * from './analyticInit.ts';
export * from './timeNoise.ts';
export * from './families.ts';
export * from './plan.ts';
