/**
 * Dataset statistics for Analytic-Init (docs/design.md §5.3): a safetensors file with `expectation_x0`
 * (latent shape) and `tr_cov_d` (scalar) plus metadata. Refused, naming both sides, when its
 * family, resolution or shape does not match the model.
 */
import { readSafetensors } from '#shared/formats';
import { checkStatisticsTensors, decodeStatisticsMetadata } from '#shared/schemas';
import type { StatisticsMetadata } from '#shared/schemas';
import type { Manifest } from '#shared/schemas';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';

export class StatisticsMismatchError extends Error {
  override readonly name = 'StatisticsMismatchError';
}

export interface LoadedStatistics {
  readonly meta: StatisticsMetadata;
  readonly expectation: Tensor;
  readonly trCovD: number;
}

export function readStatistics(bytes: Uint8Array, where: string): LoadedStatistics {
  const f = readSafetensors(bytes, where);
  const meta = decodeStatisticsMetadata(f.metadata, where);
  checkStatisticsTensors(f.tensors, meta, where);
  const e = f.tensors.get('expectation_x0')!.tensor();
  const c = f.tensors.get('tr_cov_d')!.tensor();
  const trCovD = c.data[0];
  if (!Number.isFinite(trCovD) || trCovD < 0) throw new StatisticsMismatchError(`${where}: tr_cov_d must be a finite number ≥ 0, got ${trCovD}`);
  return { meta, expectation: e, trCovD };
}

const squeezeLeadingOnes = (d: readonly number[]): number[] => {
  const out = [...d];
  while (out.length > 1 && out[0] === 1) out.shift();
  return out;
};

/**
 * Checks statistics against the model and the latent it will sample; returns E[X0] reshaped to
 * the latent's dims (a leading batch axis of 1 is accepted on either side).
 */
export function statisticsForModel(s: LoadedStatistics, m: Manifest, latentDims: readonly number[], where: string): Tensor {
  const problems: string[] = [];
  if (s.meta.family !== m.family) problems.push(`family ${s.meta.family}, the model '${m.id}' is ${m.family}`);
  if (s.meta.height !== m.resolution.height || s.meta.width !== m.resolution.width) {
    problems.push(`resolution ${s.meta.height}×${s.meta.width}, the model '${m.id}' is ${m.resolution.height}×${m.resolution.width}`);
  }
  const have = squeezeLeadingOnes(s.expectation.dims);
  const want = squeezeLeadingOnes(latentDims);
  if (have.length !== want.length || have.some((d, i) => d !== want[i])) {
    problems.push(`expectation_x0 dims [${s.expectation.dims.join(', ')}], the latent of this job is [${latentDims.join(', ')}]`);
  }
  if (problems.length) throw new StatisticsMismatchError(`${where} does not fit model '${m.id}': ${problems.join('; ')}`);
  return tensor(s.expectation.data, latentDims, 'expectation_x0');
}
