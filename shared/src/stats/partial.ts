/**
 * The partial-statistics file one shard writes (and resumes from), the run identity every shard
 * shares, and the exact merge of partials into one accumulator.
 */
import { z } from 'zod';
import { readSafetensors, writeSafetensors } from '#shared/formats';
import { Family, STATISTICS_FORMAT } from '#shared/schemas';
import { MomentAccumulator } from './moments.ts';
import { SkipRecord } from './dataset.ts';

/** A partial-statistics file that is malformed or inconsistent with itself. */
export class PartialFormatError extends Error {
  override readonly name = 'PartialFormatError';
}

/** Partials (or a partial and a run) that cannot be combined; the message names both sides. */
export class PartialMismatchError extends Error {
  override readonly name = 'PartialMismatchError';
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
