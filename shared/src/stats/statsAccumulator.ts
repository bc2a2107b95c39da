/**
 * Dataset statistics for Analytic-Init, the pure part (docs/statistics.md): a float64 accumulator
 * of per-element moments over videos, its exact merge, the partial-statistics file a shard writes
 * (and resumes from), the final statistics file, deterministic sharding and clip placement.
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
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { readSafetensors, writeSafetensors } from '#shared/formats';
import { Family } from '#shared/schemas';
import { encodeStatisticsMetadata, STATISTICS_FORMAT, STATISTICS_TENSORS } from '#shared/schemas';
import { tensor } from '#shared/sampler';

/** A partial-statistics file that is malformed or inconsistent with itself. */
export class PartialFormatError extends Error {
  override readonly name = 'PartialFormatError';
}

/** Partials (or a partial and a run) that cannot be combined; the message names both sides. */
export class PartialMismatchError extends Error {
  override readonly name = 'PartialMismatchError';
}

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

// ---------------------------------------------------------------------------------------------
// Sharding and clip placement.

/** Sorts ids by Unicode code point (the order is part of the run: shards and resume depend on it). */
export function sortIds(ids: Iterable<string>): string[] {
  return [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** SHA-256 (hex) of the sorted id list: shards and resumes must see the same listing. */
export function datasetHash(sortedIds: readonly string[]): string {
  const h = createHash('sha256');
  for (const id of sortedIds) h.update(id).update('\u0000');
  return h.digest('hex');
}

/** The ids shard `index` of `count` processes: every count-th of the sorted list (balanced, disjoint, covering). */
export function shardIds(sortedIds: readonly string[], index: number, count: number): string[] {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
    throw new RangeError(`shard ${index}/${count}: need an integer count ≥ 1 and 0 ≤ index < count`);
  }
  const out: string[] = [];
  for (let i = index; i < sortedIds.length; i += count) out.push(sortedIds[i]);
  return out;
}

/** A uniform number in [0, 1) from (seed, video id): every shard and rerun places a video's clip alike. */
export function clipFraction(seed: number, id: string): number {
  const b = createHash('sha256').update(`cil-stats-clip/1\u0000${seed}\u0000${id}`).digest();
  return b.readUIntBE(0, 6) / 2 ** 48;
}

/** First frame (on the model-fps grid) of a `frames`-long clip in a video with `available` such frames. */
export function clipStartIndex(seed: number, id: string, available: number, frames: number): number {
  if (available < frames) throw new RangeError(`clip of ${frames} frames does not fit in ${available}`);
  return Math.floor(clipFraction(seed, id) * (available - frames + 1));
}

// ---------------------------------------------------------------------------------------------
// Skips.

/** Why a video was not counted. */
export const SKIP_KINDS = {
  'no-decode': 'do not decode',
  'no-video': 'have no video stream',
  'zero-size': 'have zero-size frames',
  'too-short': 'are shorter than the clip',
  'few-frames': 'decoded fewer frames than the clip',
  'non-finite': 'encode to non-finite latents',
} as const;
export type SkipKind = keyof typeof SKIP_KINDS;
export const SkipRecord = z.strictObject({
  id: z.string().min(1),
  kind: z.enum(Object.keys(SKIP_KINDS) as [SkipKind, ...SkipKind[]]),
  reason: z.string(),
});
export type SkipRecord = z.infer<typeof SkipRecord>;

/** `N used, K skipped: 2 are shorter than the clip, 1 does not decode`. */
export function usageSummary(used: number, skipped: readonly SkipRecord[]): string {
  if (skipped.length === 0) return `${used} used, 0 skipped`;
  const counts = new Map<SkipKind, number>();
  for (const s of skipped) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  const parts = [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([k, c]) => `${c} ${c === 1 ? singular(SKIP_KINDS[k]) : SKIP_KINDS[k]}`);
  return `${used} used, ${skipped.length} skipped: ${parts.join(', ')}`;
}

function singular(phrase: string): string {
  return phrase.replace(/^do not/, 'does not').replace(/^have/, 'has').replace(/^are/, 'is').replace(/^encode/, 'encodes').replace(/^decoded/, 'decoded');
}

// ---------------------------------------------------------------------------------------------
// The partial-statistics file.

export const PARTIAL_FORMAT = 'cil-stats-partial/1';
export const PARTIAL_TENSORS = { mean: 'mean', m2: 'm2' } as const;

const Hex64 = z.string().regex(/^[0-9a-f]{64}$/, { error: 'must be 64 lower-case hex digits' });
const Count = z.int().min(0).max(Number.MAX_SAFE_INTEGER);

/** What every shard of one run shares; merge and resume refuse anything that differs. */
const runShape = {
  family: Family,
  modelId: z.string().min(1).max(256),
  /** Content hash of the bundle (gpu-worker/src/bundle.ts). */
  bundleHash: z.string().min(1).max(128),
  vaeId: z.string().min(1).max(256),
  scaleFactor: z.number().gt(0),
  height: z.int().min(1).max(16384),
  width: z.int().min(1).max(16384),
  frames: z.int().min(1).max(1024),
  fps: z.int().min(1).max(240),
  seed: Count,
  latentShape: z.array(z.int().min(1)).min(1).max(8),
  shardCount: z.int().min(1).max(100000),
  datasetHash: Hex64,
  datasetSize: Count,
};
export const RUN_KEYS = Object.keys(runShape) as (keyof typeof runShape)[];

export const PartialMetadata = z.strictObject({
  format: z.literal(PARTIAL_FORMAT),
  ...runShape,
  shardIndex: Count,
  /** Videos assigned to this shard. */
  shardSize: Count,
  /** Ids counted, in the order they were added (its length is the sample count). */
  videos: z.array(z.string().min(1)),
  skipped: z.array(SkipRecord),
  complete: z.boolean(),
  /** Where the videos were listed from (for people; not compared). */
  source: z.string().max(2048),
  createdAt: z.iso.datetime({ offset: true }),
  updatedAt: z.iso.datetime({ offset: true }),
});
export type PartialMetadata = z.infer<typeof PartialMetadata>;
export type RunIdentity = Pick<PartialMetadata, (typeof RUN_KEYS)[number]>;

/** Fields stored as plain text; everything else is stored as JSON text (safetensors metadata is string → string). */
const TEXT_FIELDS = new Set(['format', 'family', 'modelId', 'bundleHash', 'vaeId', 'datasetHash', 'source', 'createdAt', 'updatedAt']);

export interface PartialStats {
  readonly meta: PartialMetadata;
  readonly acc: MomentAccumulator;
}

/** Encodes a partial (F64 mean and M2, metadata as text). Validates the metadata against the accumulator first. */
export function encodePartial(meta: PartialMetadata, acc: MomentAccumulator): Uint8Array {
  checkPartial(meta, acc, 'encodePartial');
  const record: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta) as [string, unknown][]) record[k] = typeof v === 'string' && TEXT_FIELDS.has(k) ? v : JSON.stringify(v);
  return writeSafetensors(
    {
      [PARTIAL_TENSORS.mean]: { data: acc.mean, dims: acc.dims },
      [PARTIAL_TENSORS.m2]: { data: acc.m2, dims: acc.dims },
    },
    record,
  );
}

function checkPartial(meta: PartialMetadata, acc: MomentAccumulator, where: string): void {
  const r = PartialMetadata.safeParse(meta);
  if (!r.success) {
    throw new PartialFormatError(`${where}: invalid partial metadata: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  const fail = (m: string): never => {
    throw new PartialFormatError(`${where}: ${m}`);
  };
  if (meta.shardIndex >= meta.shardCount) fail(`shardIndex ${meta.shardIndex} must be below shardCount ${meta.shardCount}`);
  if (acc.dims.length !== meta.latentShape.length || acc.dims.some((d, i) => d !== meta.latentShape[i])) {
    fail(`mean/m2 dims [${acc.dims.join(', ')}] differ from latentShape [${meta.latentShape.join(', ')}]`);
  }
  if (acc.n !== meta.videos.length) fail(`sample count ${acc.n} differs from the ${meta.videos.length} videos listed`);
  const seen = new Set<string>();
  for (const id of [...meta.videos, ...meta.skipped.map((s) => s.id)]) {
    if (seen.has(id)) fail(`video '${id}' is listed twice`);
    seen.add(id);
  }
  const done = meta.videos.length + meta.skipped.length;
  if (done > meta.shardSize) fail(`${done} videos done but the shard has only ${meta.shardSize}`);
  if (meta.complete !== (done === meta.shardSize)) fail(`complete is ${meta.complete} but ${done} of ${meta.shardSize} videos are done`);
  if (meta.shardSize > meta.datasetSize) fail(`shardSize ${meta.shardSize} exceeds datasetSize ${meta.datasetSize}`);
  for (let i = 0; i < acc.size; i++) {
    if (!Number.isFinite(acc.mean[i]) || !Number.isFinite(acc.m2[i]) || acc.m2[i] < 0) {
      fail(`element ${i}: mean ${acc.mean[i]}, m2 ${acc.m2[i]}; need finite values and m2 ≥ 0`);
    }
  }
}

/** Reads and checks a partial file; PartialFormatError names `where` (or SafetensorsFormatError for bad bytes). */
export function decodePartial(bytes: Uint8Array, where: string): PartialStats {
  const f = readSafetensors(bytes, where);
  const md = f.metadata;
  if (md.format !== PARTIAL_FORMAT) {
    const hint = md.format === STATISTICS_FORMAT ? ' (this is a final statistics file, not a partial)' : '';
    throw new PartialFormatError(`${where}: format is ${md.format === undefined ? 'missing' : `'${md.format}'`}, expected '${PARTIAL_FORMAT}'${hint}`);
  }
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(md)) {
    if (TEXT_FIELDS.has(k)) raw[k] = v;
    else {
      try {
        raw[k] = JSON.parse(v);
      } catch {
        throw new PartialFormatError(`${where}: metadata '${k}' is not valid JSON text`);
      }
    }
  }
  const r = PartialMetadata.safeParse(raw);
  if (!r.success) {
    throw new PartialFormatError(`${where}: invalid partial metadata: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  const meta = r.data;
  const mean = f.tensors.get(PARTIAL_TENSORS.mean);
  const m2 = f.tensors.get(PARTIAL_TENSORS.m2);
  for (const [name, e] of [[PARTIAL_TENSORS.mean, mean], [PARTIAL_TENSORS.m2, m2]] as const) {
    if (!e) throw new PartialFormatError(`${where}: tensor '${name}' is missing`);
    if (e.dtype !== 'F64') throw new PartialFormatError(`${where}: tensor '${name}' must be F64 (exact accumulator state), got ${e.dtype}`);
  }
  const acc = new MomentAccumulator(mean!.dims, { n: meta.videos.length, mean: mean!.float64(), m2: m2!.float64() });
  if (m2!.dims.length !== mean!.dims.length || m2!.dims.some((d, i) => d !== mean!.dims[i])) {
    throw new PartialFormatError(`${where}: m2 dims [${m2!.dims.join(', ')}] differ from mean dims [${mean!.dims.join(', ')}]`);
  }
  checkPartial(meta, acc, where);
  return { meta, acc };
}

function shortHash(h: string): string {
  return h.length > 12 ? `${h.slice(0, 12)}…` : h;
}

/** One line describing a run, for messages. */
export function describeRun(m: RunIdentity): string {
  return (
    `model '${m.modelId}' (${m.family}, bundle ${shortHash(m.bundleHash)}), ${m.height}×${m.width}, ${m.frames} frames at ${m.fps} fps, ` +
    `seed ${m.seed}, ${m.shardCount} shard${m.shardCount === 1 ? '' : 's'}, ${m.datasetSize} videos (listing ${shortHash(m.datasetHash)})`
  );
}

function show(v: unknown): string {
  return typeof v === 'string' ? `'${v}'` : JSON.stringify(v);
}

/** The fields where two runs differ, as `field A vs B`; empty when they match. */
export function runDifferences(a: RunIdentity, b: RunIdentity): string[] {
  const out: string[] = [];
  for (const k of RUN_KEYS) {
    const va = a[k];
    const vb = b[k];
    if (JSON.stringify(va) !== JSON.stringify(vb)) out.push(`${k} ${show(va)} vs ${show(vb)}`);
  }
  return out;
}

export interface MergeInput extends PartialStats {
  readonly where: string;
}

export interface MergeOptions {
  /** Merge even with missing or unfinished shards (the result then covers only part of the dataset). */
  readonly allowIncomplete?: boolean;
}

export interface MergeResult {
  readonly acc: MomentAccumulator;
  readonly run: RunIdentity;
  readonly skipped: SkipRecord[];
  readonly shards: number[];
  /** Shard indices absent from the inputs, and inputs that are not complete (only with allowIncomplete). */
  readonly missingShards: number[];
  readonly incomplete: string[];
}

/**
 * Combines partials of one run: same RUN_KEYS (refused otherwise, naming both files and every
 * differing field), distinct shard indices, no video counted twice, and (unless allowIncomplete)
 * every shard present and complete. Merged in shard order, so the argument order does not matter.
 */
export function mergePartials(parts: readonly MergeInput[], o: MergeOptions = {}): MergeResult {
  if (parts.length === 0) throw new PartialMismatchError('no partial files to merge');
  const first = parts[0];
  for (const p of parts.slice(1)) {
    const diff = runDifferences(first.meta, p.meta);
    if (diff.length > 0) {
      throw new PartialMismatchError(
        `${p.where} (${describeRun(p.meta)}) does not match ${first.where} (${describeRun(first.meta)}): ${diff.join('; ')}`,
      );
    }
  }
  const byShard = new Map<number, MergeInput>();
  for (const p of parts) {
    const other = byShard.get(p.meta.shardIndex);
    if (other) throw new PartialMismatchError(`${p.where} and ${other.where} are both shard ${p.meta.shardIndex}/${p.meta.shardCount}`);
    byShard.set(p.meta.shardIndex, p);
  }
  const count = first.meta.shardCount;
  const missingShards: number[] = [];
  for (let i = 0; i < count; i++) if (!byShard.has(i)) missingShards.push(i);
  const incomplete = parts
    .filter((p) => !p.meta.complete)
    .map((p) => `${p.where} (shard ${p.meta.shardIndex}/${count}: ${p.meta.videos.length + p.meta.skipped.length} of ${p.meta.shardSize} videos done)`);
  if (!o.allowIncomplete && (missingShards.length > 0 || incomplete.length > 0)) {
    const parts2: string[] = [];
    if (missingShards.length > 0) parts2.push(`shard${missingShards.length === 1 ? '' : 's'} ${missingShards.join(', ')} of ${count} missing`);
    if (incomplete.length > 0) parts2.push(`unfinished: ${incomplete.join(', ')}`);
    throw new PartialMismatchError(`incomplete run: ${parts2.join('; ')} (finish those shards, or pass --allow-incomplete to merge what is there)`);
  }
  const owner = new Map<string, string>();
  for (const p of parts) {
    for (const id of [...p.meta.videos, ...p.meta.skipped.map((s) => s.id)]) {
      const prev = owner.get(id);
      if (prev !== undefined) throw new PartialMismatchError(`video '${id}' appears in both ${prev} and ${p.where}`);
      owner.set(id, p.where);
    }
  }
  const ordered = [...byShard.keys()].sort((a, b) => a - b).map((k) => byShard.get(k)!);
  const acc = new MomentAccumulator(first.acc.dims);
  const skipped: SkipRecord[] = [];
  for (const p of ordered) {
    acc.merge(p.acc);
    skipped.push(...p.meta.skipped);
  }
  const run = Object.fromEntries(RUN_KEYS.map((k) => [k, first.meta[k]])) as RunIdentity;
  return { acc, run, skipped, shards: ordered.map((p) => p.meta.shardIndex), missingShards, incomplete };
}

// ---------------------------------------------------------------------------------------------
// The final statistics file (the contract of shared/src/schemas/statistics.ts).

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
