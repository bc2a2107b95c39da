/**
 * The final statistics file Analytic-Init reads (the contract of `#shared/schemas` statistics).
 */
import { writeSafetensors } from '#shared/formats';
import { encodeStatisticsMetadata, STATISTICS_FORMAT, STATISTICS_TENSORS } from '#shared/schemas';
import { tensor } from '#shared/sampler';
import { AccumulatorError } from './moments.ts';
import type { MomentAccumulator } from './moments.ts';
import type { RunIdentity } from './partial.ts';

export interface FinalInfo {
  readonly run: RunIdentity;
  readonly createdAt: string;
  readonly skipped: number;
  /** Shards merged, when not all of them (allowIncomplete). */
  readonly partialCoverage?: string;
}

/**
 * The statistics file Analytic-Init reads: `expectation_x0` (float32 mean) and `tr_cov_d`, the
 * contract metadata (source 'computed'), plus keys recording how it was made (ignored by readers).
 */
export function encodeFinalStatistics(acc: MomentAccumulator, info: FinalInfo): Uint8Array {
  if (acc.n < 1) throw new AccumulatorError('no videos were counted: refusing to write statistics of an empty dataset');
  const r = info.run;
  const meta = encodeStatisticsMetadata({
    format: STATISTICS_FORMAT,
    family: r.family,
    height: r.height,
    width: r.width,
    frames: r.frames,
    latentShape: [...r.latentShape],
    sampleCount: acc.n,
    vaeId: r.vaeId,
    createdAt: info.createdAt,
    source: 'computed',
  });
  const extra: Record<string, string> = {
    modelId: r.modelId,
    bundleHash: r.bundleHash,
    scaleFactor: String(r.scaleFactor),
    fps: String(r.fps),
    seed: String(r.seed),
    shardCount: String(r.shardCount),
    datasetHash: r.datasetHash,
    datasetSize: String(r.datasetSize),
    skippedCount: String(info.skipped),
    estimator: 'population variance (1/N), averaged over elements',
    latentStatistic: 'posterior mean (mode) x scaleFactor',
  };
  if (info.partialCoverage !== undefined) extra.partialCoverage = info.partialCoverage;
  return writeSafetensors(
    {
      [STATISTICS_TENSORS.expectationX0]: tensor(acc.expectation(), acc.dims, STATISTICS_TENSORS.expectationX0),
      [STATISTICS_TENSORS.trCovD]: tensor(Float32Array.of(acc.trCovD()), [], STATISTICS_TENSORS.trCovD),
    },
    { ...extra, ...meta },
  );
}
