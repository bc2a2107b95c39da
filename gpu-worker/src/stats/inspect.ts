/**
 * `cil stats inspect`: what a statistics file holds — tensors (shape, dtype), the sample count,
 * tr(Cov)/d, the mean of E[X0] per latent channel, a summary of E[X0], and the metadata. Reads our
 * final files, partial files (shard progress) and the authors' `.pt` files (before import).
 */
import { readSafetensors } from '#shared/formats';
import { checkStatisticsTensors, decodeStatisticsMetadata, STATISTICS_FORMAT, STATISTICS_TENSORS } from '#shared/schemas';
import type { Family } from '#shared/schemas';
import { decodePartial, PARTIAL_FORMAT, usageSummary } from '#shared/stats';
import { readTorchStatistics } from '#shared/formats';
import { FAMILY_NAMES } from '#shared/sampler';
import { FAMILY_ADAPTERS } from '../families/index.ts';
import { AUTHOR_KEYS, familiesSharingKeys, latentAxes, plainBytes } from './importPt.ts';

export interface ValueSummary {
  readonly min: number;
  readonly max: number;
  readonly mean: number;
  readonly std: number;
}

export interface InspectReport {
  readonly file: string;
  readonly kind: 'statistics' | 'partial' | 'torch';
  readonly tensors: readonly { readonly name: string; readonly dtype: string; readonly shape: readonly number[] }[];
  readonly family: Family | null;
  /** Axis names of E[X0], e.g. [1, C, F, h, w]. */
  readonly layout: string | null;
  readonly count: number | null;
  readonly trCovD: number | null;
  /** Mean of E[X0] over each latent channel (frames and pixels). */
  readonly channelMeans: readonly number[] | null;
  /** Partials: each channel's share of tr(Cov)/d, i.e. the mean per-element variance over that channel. */
  readonly channelVariances: readonly number[] | null;
  readonly expectation: ValueSummary | null;
  readonly partial: {
    readonly shard: string;
    readonly done: number;
    readonly shardSize: number;
    readonly complete: boolean;
    readonly summary: string;
  } | null;
  /** The file's metadata (for partials, the id lists are replaced by their lengths). */
  readonly metadata: Readonly<Record<string, string>>;
}

/** Per-channel means of `data` (row-major, dims `dims`) for the family's channel axis. */
export function channelMeans(data: Float32Array | Float64Array, dims: readonly number[], family: Family): number[] | null {
  const axes = latentAxes(family, dims);
  if (!axes) return null;
  const { channels: C, frames: F, h, w } = axes;
  const hw = h * w;
  const layout = FAMILY_ADAPTERS[family].layout;
  const sums = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    for (let f = 0; f < F; f++) {
      const base = layout.plane(c, f, axes) * hw;
      let s = 0;
      for (let i = 0; i < hw; i++) s += data[base + i];
      sums[c] += s;
    }
  }
  return Array.from(sums, (s) => s / (F * hw));
}

function summarize(data: Float32Array | Float64Array): ValueSummary {
  let min = Infinity;
  let max = -Infinity;
  let s = 0;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < min) min = v;
    if (v > max) max = v;
    s += v;
  }
  const mean = s / data.length;
  let q = 0;
  for (let i = 0; i < data.length; i++) q += (data[i] - mean) ** 2;
  return { min, max, mean, std: Math.sqrt(q / data.length) };
}

function layoutOf(family: Family, dims: readonly number[]): string {
  const names = FAMILY_ADAPTERS[family].layout.axisNames;
  return `[${(dims.length === 5 ? ['1', ...names] : names).join(', ')}]`;
}

const isZip = (b: Uint8Array): boolean => b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04;

export function inspectStatistics(bytes: Uint8Array, where: string): InspectReport {
  if (isZip(bytes)) {
    const t = readTorchStatistics(plainBytes(bytes), where);
    // The first family whose key names the file holds (DynamiCrafter's and VideoCrafter1's are the same).
    const family: Family = FAMILY_NAMES.find((f) => t.tensors.has(AUTHOR_KEYS[f].expectation)) ?? FAMILY_NAMES[0];
    const keys = AUTHOR_KEYS[family];
    const e = t.tensors.get(keys.expectation);
    const c = t.tensors.get(keys.trCovD);
    return {
      file: where,
      kind: 'torch',
      tensors: t.keys.map((k) => ({ name: k, dtype: t.tensors.get(k)!.dtype, shape: [...t.tensors.get(k)!.tensor.dims] })),
      family: e ? family : null,
      layout: e && latentAxes(family, e.tensor.dims) ? layoutOf(family, e.tensor.dims) : null,
      count: null,
      trCovD: c && c.tensor.data.length === 1 ? c.tensor.data[0] : null,
      channelMeans: e ? channelMeans(e.tensor.data, e.tensor.dims, family) : null,
      channelVariances: null,
      expectation: e ? summarize(e.tensor.data) : null,
      partial: null,
      metadata: { note: `PyTorch file; family guessed from its key names (${familiesSharingKeys(family)}); import it with cil stats import`, ignoredKeys: t.ignored.join(',') },
    };
  }
  const f = readSafetensors(bytes, where);
  const tensors = [...f.tensors.entries()].map(([name, e]) => ({ name, dtype: e.dtype, shape: [...e.dims] }));
  if (f.metadata.format === PARTIAL_FORMAT) {
    const p = decodePartial(bytes, where);
    const m = p.meta;
    const metadata: Record<string, string> = { ...f.metadata, videos: `${m.videos.length} ids`, skipped: `${m.skipped.length} records` };
    let perChannelVar: number[] | null = null;
    if (p.acc.n > 0) {
      const v = new Float64Array(p.acc.m2.length);
      for (let i = 0; i < v.length; i++) v[i] = p.acc.m2[i] / p.acc.n;
      perChannelVar = channelMeans(v, p.acc.dims, m.family);
    }
    return {
      file: where,
      kind: 'partial',
      tensors,
      family: m.family,
      layout: layoutOf(m.family, p.acc.dims),
      count: p.acc.n,
      trCovD: p.acc.n > 0 ? p.acc.trCovD() : null,
      channelMeans: p.acc.n > 0 ? channelMeans(p.acc.mean, p.acc.dims, m.family) : null,
      channelVariances: perChannelVar,
      expectation: p.acc.n > 0 ? summarize(p.acc.mean) : null,
      partial: {
        shard: `${m.shardIndex}/${m.shardCount}`,
        done: m.videos.length + m.skipped.length,
        shardSize: m.shardSize,
        complete: m.complete,
        summary: usageSummary(m.videos.length, m.skipped),
      },
      metadata,
    };
  }
  const meta = decodeStatisticsMetadata(f.metadata, where);
  checkStatisticsTensors(f.tensors, meta, where);
  const e = f.tensors.get(STATISTICS_TENSORS.expectationX0)!.tensor();
  const c = f.tensors.get(STATISTICS_TENSORS.trCovD)!.tensor();
  return {
    file: where,
    kind: 'statistics',
    tensors,
    family: meta.family,
    layout: latentAxes(meta.family, e.dims) ? layoutOf(meta.family, e.dims) : null,
    count: meta.sampleCount,
    trCovD: c.data[0],
    channelMeans: channelMeans(e.data, e.dims, meta.family),
    channelVariances: null,
    expectation: summarize(e.data),
    partial: null,
    metadata: { ...f.metadata },
  };
}

const num = (v: number): string => (v === 0 ? '0' : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(6) : v.toPrecision(7));

/** A readable multi-line rendering of a report. */
export function formatInspect(r: InspectReport): string {
  const lines: string[] = [];
  const row = (k: string, v: string): void => {
    lines.push(`${k.padEnd(16)} ${v}`);
  };
  row('file', r.file);
  row('kind', r.kind === 'statistics' ? `statistics (${STATISTICS_FORMAT})` : r.kind === 'partial' ? `partial (${PARTIAL_FORMAT})` : 'PyTorch .pt (not imported)');
  if (r.family) row('family', r.family);
  for (const t of r.tensors) row(`tensor`, `${t.name}  ${t.dtype}  [${t.shape.join(', ')}]`);
  if (r.layout) row('layout', r.layout);
  if (r.count !== null) row('count', String(r.count));
  if (r.trCovD !== null) row('tr(Cov)/d', num(r.trCovD));
  if (r.expectation) {
    const e = r.expectation;
    row('E[X0]', `mean ${num(e.mean)}  std ${num(e.std)}  min ${num(e.min)}  max ${num(e.max)}`);
  }
  if (r.channelMeans) {
    lines.push('');
    lines.push(`${'channel'.padEnd(8)} ${'mean E[X0]'.padStart(14)}${r.channelVariances ? `${'variance'.padStart(14)}` : ''}`);
    r.channelMeans.forEach((v, c) => {
      lines.push(`${String(c).padEnd(8)} ${num(v).padStart(14)}${r.channelVariances ? num(r.channelVariances[c]).padStart(14) : ''}`);
    });
  }
  if (r.partial) {
    lines.push('');
    row('shard', `${r.partial.shard}: ${r.partial.done} of ${r.partial.shardSize} videos done${r.partial.complete ? ' (complete)' : ''}`);
    row('videos', r.partial.summary);
  }
  const keys = Object.keys(r.metadata).sort();
  if (keys.length > 0) {
    lines.push('');
    lines.push('metadata');
    for (const k of keys) lines.push(`  ${k.padEnd(16)} ${r.metadata[k]}`);
  }
  return lines.join('\n');
}
