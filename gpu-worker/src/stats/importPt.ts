/**
 * `cil stats import`: the authors' published initial-noise statistics (`torch.save` of a dict of
 * two tensors) into our statistics file. Read by shared/src/formats/torchPt.ts's restricted unpickler
 * (nothing in the file is executed); key names per family (docs/design.md §5.3); float16 and bfloat16
 * widen exactly to float32; E[X0] keeps the file's dims (a leading batch axis of 1 or none).
 */
import { STATISTICS_FORMAT, STATISTICS_TENSORS, checkStatisticsValues, encodeStatisticsMetadata } from '#shared/schemas';
import type { StatisticsMetadata } from '#shared/schemas';
import type { Family } from '#shared/schemas';
import { writeSafetensors } from '#shared/formats';
import { tensor } from '#shared/sampler';
import { readTorchStatistics } from '#shared/formats';
import { FAMILY_NAMES } from '#shared/sampler';
import { FAMILY_ADAPTERS } from '../families/index.ts';
import type { LatentAxes } from '../families/index.ts';

/** A readable file whose contents do not fit the family or the stated geometry. */
export class StatisticsImportError extends Error {
  override readonly name = 'StatisticsImportError';
}

/** The authors' key names, by family (each adapter's `authorStatistics`): DynamiCrafter and VideoCrafter1 share theirs. */
export const AUTHOR_KEYS: Readonly<Record<Family, { readonly expectation: string; readonly trCovD: string }>> = Object.freeze(
  Object.fromEntries(FAMILY_NAMES.map((f) => [f, FAMILY_ADAPTERS[f].authorStatistics])) as Record<Family, { expectation: string; trCovD: string }>,
);

/** The families whose files use the same key names as `family`'s, e.g. 'dynamicrafter/videocrafter'. */
export function familiesSharingKeys(family: Family): string {
  const k = AUTHOR_KEYS[family];
  return FAMILY_NAMES.filter((f) => AUTHOR_KEYS[f].expectation === k.expectation && AUTHOR_KEYS[f].trCovD === k.trCovD).join('/');
}

/** How a family's E[X0] is laid out, for messages: e.g. '[(1,) C, F, h, w]'. */
export function layoutText(family: Family): string {
  return `[(1,) ${FAMILY_ADAPTERS[family].layout.axisNames.join(', ')}]`;
}

export interface ImportOptions {
  readonly family: Family;
  readonly height: number;
  readonly width: number;
  /** Checked against the file's frame axis; taken from it when absent. */
  readonly frames?: number;
  readonly modelId?: string;
  readonly vaeId?: string;
  /** Videos the authors averaged, when known (the files do not say; recorded as 1 and flagged otherwise). */
  readonly sampleCount?: number;
  readonly createdAt?: string;
  /** The file's name, recorded in the metadata. */
  readonly sourceName?: string;
}

export interface ImportResult {
  readonly bytes: Uint8Array;
  readonly meta: StatisticsMetadata;
  readonly trCovD: number;
  readonly sourceDtypes: { readonly expectation: string; readonly trCovD: string };
}

/**
 * Axis positions in E[X0] for a family (its adapter's latent layout): [(1,) C, F, h, w] for the VP
 * families, [(1,) F, C, h, w] for SVD. Returns null for a rank other than 4, or 5 with a leading 1.
 */
export function latentAxes(family: Family, dims: readonly number[]): LatentAxes | null {
  return FAMILY_ADAPTERS[family].layout.axes(dims);
}

/**
 * torchPt.ts copies storages with `bytes.slice().buffer`, which for a Node Buffer (what readFile
 * returns) is a view of the whole pool, not a copy; hand it a plain Uint8Array.
 */
export function plainBytes(bytes: Uint8Array): Uint8Array {
  return Buffer.isBuffer(bytes) ? new Uint8Array(bytes) : bytes;
}

export function importTorchStatistics(bytes: Uint8Array, where: string, o: ImportOptions): ImportResult {
  const file = readTorchStatistics(plainBytes(bytes), where);
  const want = AUTHOR_KEYS[o.family];
  const has = (k: string): boolean => file.tensors.has(k);
  if (!has(want.expectation) || !has(want.trCovD)) {
    const other = (Object.entries(AUTHOR_KEYS) as [Family, { expectation: string; trCovD: string }][]).find(
      ([f, k]) => f !== o.family && has(k.expectation) && has(k.trCovD),
    );
    const hint = other ? `; it has ${other[1].expectation}/${other[1].trCovD}, the names of ${familiesSharingKeys(other[0])} files` : '';
    throw new StatisticsImportError(
      `${where}: a ${o.family} statistics file holds ${want.expectation} and ${want.trCovD}; found keys ${file.keys.join(', ') || '(none)'}${hint}`,
    );
  }
  const e = file.tensors.get(want.expectation)!;
  const c = file.tensors.get(want.trCovD)!;
  const dims = e.tensor.dims;
  const axes = latentAxes(o.family, dims);
  const layout = layoutText(o.family);
  if (!axes) throw new StatisticsImportError(`${where}: ${want.expectation} has dims [${dims.join(', ')}]; a ${o.family} latent is ${layout}`);
  if (o.frames !== undefined && axes.frames !== o.frames) {
    throw new StatisticsImportError(`${where}: ${want.expectation} [${dims.join(', ')}] has ${axes.frames} frames (layout ${layout}), --frames is ${o.frames}`);
  }
  const dh = o.height / axes.h;
  const dw = o.width / axes.w;
  if (!Number.isInteger(dh) || dh !== dw) {
    throw new StatisticsImportError(
      `${where}: ${want.expectation} [${dims.join(', ')}] has a ${axes.h}×${axes.w} latent, which no single VAE downsampling maps to ${o.height}×${o.width}`,
    );
  }
  if (c.tensor.data.length !== 1) {
    throw new StatisticsImportError(`${where}: ${want.trCovD} must be a scalar, got dims [${c.tensor.dims.join(', ')}]`);
  }
  const expectation = tensor(e.tensor.data, dims, STATISTICS_TENSORS.expectationX0);
  const tr = tensor(Float32Array.of(c.tensor.data[0]), [], STATISTICS_TENSORS.trCovD);
  checkStatisticsValues(expectation, tr, where);
  const meta: StatisticsMetadata = {
    format: STATISTICS_FORMAT,
    family: o.family,
    height: o.height,
    width: o.width,
    frames: axes.frames,
    latentShape: [...dims],
    sampleCount: o.sampleCount ?? 1,
    vaeId: o.vaeId ?? (o.modelId ? `${o.modelId}/vae (authors' statistics)` : `${o.family} VAE (authors' statistics)`),
    createdAt: o.createdAt ?? new Date().toISOString(),
    source: 'imported',
  };
  const extra: Record<string, string> = {
    importedFrom: o.sourceName ?? where,
    sourceKeys: `${want.expectation},${want.trCovD}`,
    sourceDtypes: `${e.dtype},${c.dtype}`,
    sampleCountKnown: o.sampleCount === undefined ? 'false' : 'true',
  };
  if (o.modelId !== undefined) extra.modelId = o.modelId;
  const out = writeSafetensors({ [STATISTICS_TENSORS.expectationX0]: expectation, [STATISTICS_TENSORS.trCovD]: tr }, { ...extra, ...encodeStatisticsMetadata(meta) });
  return { bytes: out, meta, trCovD: tr.data[0], sourceDtypes: { expectation: e.dtype, trCovD: c.dtype } };
}
