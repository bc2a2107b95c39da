/**
 * The dataset statistics file (docs/design.md §5.3): a safetensors file holding E[X0]
 * (`expectation_x0`, float32, latent shape) and tr(Cov[X0])/d (`tr_cov_d`, float32 scalar), whose
 * `__metadata__` (string → string, so numbers and arrays are encoded as text) is described here.
 * Documented in docs/contracts.md.
 */
import { z } from 'zod';
import type { Tensor } from '#shared/sampler';
import type { SchemaIssue } from './common.ts';
import { arrayOf, ContractError, toSchemaIssues } from './common.ts';
import { Family } from './family.ts';

export const STATISTICS_FORMAT = 'cil-stats/1';

/** Tensor names in our files (the authors' files use other names; importers rename them). */
export const STATISTICS_TENSORS = { expectationX0: 'expectation_x0', trCovD: 'tr_cov_d' } as const;

/** Names the authors' published files use, to point users at the importer. */
const AUTHOR_TENSOR_NAMES = ['Expectation_X0', 'Tr_Cov_d', 'Expectation_x_0', 'trCov_d'];

const statisticsShape = {
  format: z.literal(STATISTICS_FORMAT),
  family: Family,
  /** Pixel resolution and frame count the statistics were computed at. */
  height: z.int().min(1).max(16384),
  width: z.int().min(1).max(16384),
  frames: z.int().min(1).max(1024),
  /** Dims of `expectation_x0`, in the model's latent layout (e.g. [4, 16, 40, 64]). */
  latentShape: arrayOf(z.int().min(1), 1, 8),
  /** Number of videos averaged (for imported files, the count the authors published). */
  sampleCount: z.int().min(1),
  /** Which VAE encoded the latents (e.g. a model id or the HF repo of the VAE). */
  vaeId: z.string().min(1).max(256),
  createdAt: z.iso.datetime({ offset: true }),
  source: z.enum(['computed', 'imported']),
};

export const StatisticsMetadata = z.strictObject(statisticsShape);
export type StatisticsMetadata = z.infer<typeof StatisticsMetadata>;

/** Thrown for statistics metadata or tensors that do not fit the contract. */
export class StatisticsFormatError extends ContractError {
  override readonly name = 'StatisticsFormatError';
  constructor(where: string, issues: readonly SchemaIssue[]) {
    super(where, 'invalid statistics file', issues);
  }
}

const INT_FIELDS = ['height', 'width', 'frames', 'sampleCount'] as const;
const DECIMAL_INT = /^(?:0|[1-9]\d*)$/;

/** Validates `meta` and encodes it as the string map stored in safetensors `__metadata__`. */
export function encodeStatisticsMetadata(meta: StatisticsMetadata): Record<string, string> {
  const r = StatisticsMetadata.safeParse(meta, { reportInput: true });
  if (!r.success) throw new StatisticsFormatError('encodeStatisticsMetadata', toSchemaIssues(r.error.issues));
  const m = r.data;
  return {
    format: m.format,
    family: m.family,
    height: String(m.height),
    width: String(m.width),
    frames: String(m.frames),
    latentShape: JSON.stringify(m.latentShape),
    sampleCount: String(m.sampleCount),
    vaeId: m.vaeId,
    createdAt: m.createdAt,
    source: m.source,
  };
}

/**
 * Decodes a safetensors `__metadata__` map: integer fields must be plain decimal text,
 * `latentShape` a JSON array of integers. Keys other than the contract's are ignored (tools may
 * add their own). Throws StatisticsFormatError naming `where` and every bad key.
 */
export function decodeStatisticsMetadata(record: Readonly<Record<string, string>>, where: string): StatisticsMetadata {
  const coerced: Record<string, unknown> = {};
  for (const key of Object.keys(statisticsShape)) {
    if (Object.hasOwn(record, key)) coerced[key] = record[key];
  }
  // Coerce only well-formed text, so anything else reaches the schema as a string and is reported.
  for (const key of INT_FIELDS) {
    const v = coerced[key];
    if (typeof v === 'string' && DECIMAL_INT.test(v)) coerced[key] = Number(v);
  }
  if (typeof coerced.latentShape === 'string') {
    try {
      coerced.latentShape = JSON.parse(coerced.latentShape);
    } catch {
      // left as a string: reported as "expected array"
    }
  }
  const r = StatisticsMetadata.safeParse(coerced, { reportInput: true });
  if (!r.success) throw new StatisticsFormatError(where, toSchemaIssues(r.error.issues));
  return r.data;
}

/** What the tensor check needs of a file's entries (a structural subset of SafetensorsEntry). */
export interface StatisticsTensorInfo {
  readonly dtype: string;
  readonly dims: readonly number[];
}

/**
 * Checks that a statistics file holds `expectation_x0` (F32, dims = meta.latentShape) and
 * `tr_cov_d` (F32, dims [] or [1]). Other tensors are ignored. Throws StatisticsFormatError.
 */
export function checkStatisticsTensors(
  tensors: ReadonlyMap<string, StatisticsTensorInfo>,
  meta: StatisticsMetadata,
  where: string,
): void {
  const issues: SchemaIssue[] = [];
  const authorNames = AUTHOR_TENSOR_NAMES.filter((n) => tensors.has(n));
  const hint = authorNames.length > 0 ? ` (found ${authorNames.join(', ')}: an authors' file; import it first)` : '';
  const e = tensors.get(STATISTICS_TENSORS.expectationX0);
  const c = tensors.get(STATISTICS_TENSORS.trCovD);
  const x0 = STATISTICS_TENSORS.expectationX0;
  const tr = STATISTICS_TENSORS.trCovD;
  if (e === undefined) {
    issues.push({ path: x0, message: `missing${hint}` });
  } else {
    if (e.dtype !== 'F32') issues.push({ path: x0, message: `must be F32, got ${e.dtype}` });
    const want = meta.latentShape;
    if (e.dims.length !== want.length || e.dims.some((d, i) => d !== want[i])) {
      issues.push({ path: x0, message: `dims [${e.dims.join(', ')}] differ from metadata latentShape [${want.join(', ')}]` });
    }
  }
  if (c === undefined) {
    issues.push({ path: tr, message: `missing${hint}` });
  } else {
    if (c.dtype !== 'F32') issues.push({ path: tr, message: `must be F32, got ${c.dtype}` });
    if (!(c.dims.length === 0 || (c.dims.length === 1 && c.dims[0] === 1))) {
      issues.push({ path: tr, message: `must be a scalar (dims [] or [1]), got [${c.dims.join(', ')}]` });
    }
  }
  if (issues.length > 0) throw new StatisticsFormatError(where, issues);
}

/**
 * Value checks once the tensors are decoded: every element of E[X0] finite, tr(Cov)/d finite
 * and ≥ 0 (it is a variance). Throws StatisticsFormatError.
 */
export function checkStatisticsValues(expectationX0: Tensor, trCovD: Tensor, where: string): void {
  const issues: SchemaIssue[] = [];
  const d = expectationX0.data;
  for (let i = 0; i < d.length; i++) {
    if (!Number.isFinite(d[i])) {
      issues.push({ path: STATISTICS_TENSORS.expectationX0, message: `element ${i} is ${d[i]}; all must be finite` });
      break;
    }
  }
  const v = trCovD.data[0];
  if (trCovD.data.length !== 1 || !Number.isFinite(v) || v < 0) {
    const shown = Array.from(trCovD.data.subarray(0, 4)).join(', ') + (trCovD.data.length > 4 ? ', …' : '');
    issues.push({ path: STATISTICS_TENSORS.trCovD, message: `must be one finite value ≥ 0, got [${shown}]` });
  }
  if (issues.length > 0) throw new StatisticsFormatError(where, issues);
}
