import { describe, expect, it } from 'vitest';
import {
  AccumulatorError,
  clipFraction,
  clipStartIndex,
  datasetHash,
  decodePartial,
  encodeFinalStatistics,
  encodePartial,
  mergePartials,
  MomentAccumulator,
  PartialFormatError,
  PartialMismatchError,
  shardIds,
  sortIds,
  usageSummary,
} from '../src/stats/index.ts';
import type { MergeInput, PartialMetadata } from '../src/stats/index.ts';
import { readSafetensors, writeSafetensors } from '../src/formats/safetensors.ts';
import { decodeStatisticsMetadata } from '../src/schemas/statistics.ts';

/** A deterministic pseudo-random sequence (LCG), independent of the code under test. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function samples(n: number, d: number, seed: number, offset = 0): Float32Array[] {
  const r = lcg(seed);
  return Array.from({ length: n }, () => Float32Array.from({ length: d }, (_, i) => offset + (i % 3) + 4 * (r() - 0.5)));
}

/** Two-pass float64 mean and population variance per element. */
function twoPass(xs: readonly Float32Array[]): { mean: Float64Array; varPop: Float64Array } {
  const d = xs[0].length;
  const mean = new Float64Array(d);
  for (const x of xs) for (let i = 0; i < d; i++) mean[i] += x[i];
  for (let i = 0; i < d; i++) mean[i] /= xs.length;
  const v = new Float64Array(d);
  for (const x of xs) for (let i = 0; i < d; i++) v[i] += (x[i] - mean[i]) ** 2;
  for (let i = 0; i < d; i++) v[i] /= xs.length;
  return { mean, varPop: v };
}

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

describe('MomentAccumulator', () => {
  it('gives the two-pass mean and the population (1/N) variance', () => {
    const xs = samples(37, 24, 1);
    const acc = new MomentAccumulator([2, 3, 4]);
    for (const x of xs) acc.add(x);
    const ref = twoPass(xs);
    expect(acc.n).toBe(37);
    expect(relErr(acc.mean, ref.mean)).toBeLessThan(1e-14);
    const varAcc = Float64Array.from(acc.m2, (m) => m / 37);
    expect(relErr(varAcc, ref.varPop)).toBeLessThan(1e-13);
    const tr = ref.varPop.reduce((a, b) => a + b, 0) / 24;
    expect(Math.abs(acc.trCovD() - tr) / tr).toBeLessThan(1e-13);
  });

  it('by hand: samples 1, 3 and 8 have mean 4 and population variance 26/3', () => {
    const acc = new MomentAccumulator([1]);
    for (const v of [1, 3, 8]) acc.add(Float32Array.of(v));
    expect(acc.mean[0]).toBe(4);
    expect(acc.trCovD()).toBeCloseTo(26 / 3, 14);
  });

  it('stays accurate for a large mean and a small spread (no Σx² − (Σx)²/N cancellation)', () => {
    const xs = samples(200, 8, 7, 1e4);
    const acc = new MomentAccumulator([8]);
    for (const x of xs) acc.add(x);
    const ref = twoPass(xs);
    expect(relErr(Float64Array.from(acc.m2, (m) => m / 200), ref.varPop)).toBeLessThan(1e-10);
  });

  it('merging shards (Chan) equals one pass to ≤ 1e-12 relative, in any grouping', () => {
    const xs = samples(101, 30, 3);
    const one = new MomentAccumulator([30]);
    for (const x of xs) one.add(x);
    const cuts = [0, 17, 18, 60, 101];
    const parts = cuts.slice(1).map((end, k) => {
      const a = new MomentAccumulator([30]);
      for (const x of xs.slice(cuts[k], end)) a.add(x);
      return a;
    });
    const merged = new MomentAccumulator([30]);
    for (const p of parts) merged.merge(p);
    merged.merge(new MomentAccumulator([30])); // an empty shard changes nothing
    expect(merged.n).toBe(101);
    expect(relErr(merged.mean, one.mean)).toBeLessThan(1e-12);
    expect(relErr(merged.m2, one.m2)).toBeLessThan(1e-12);
    expect(Math.abs(merged.trCovD() - one.trCovD()) / one.trCovD()).toBeLessThan(1e-12);
  });

  it('refuses wrong sizes and non-finite samples without changing its state', () => {
    const acc = new MomentAccumulator([3]);
    acc.add(Float32Array.of(1, 2, 3));
    expect(() => acc.add(Float32Array.of(1, 2))).toThrow(AccumulatorError);
    expect(() => acc.add(Float32Array.of(1, NaN, 3))).toThrow(/element 1 is NaN/);
    expect(acc.n).toBe(1);
    expect(Array.from(acc.mean)).toEqual([1, 2, 3]);
    expect(() => acc.merge(new MomentAccumulator([4]))).toThrow(/cannot merge/);
    expect(() => new MomentAccumulator([2]).trCovD()).toThrow(/no samples/);
  });
});

describe('sharding and clip placement', () => {
  const ids = sortIds(['b/2.mp4', 'a.mp4', 'b/10.mp4', 'Z.mp4', 'é.mp4', 'c.mkv', 'd.webm']);

  it('sorts by code point and shards round-robin: disjoint, covering, balanced', () => {
    expect(ids).toEqual(['Z.mp4', 'a.mp4', 'b/10.mp4', 'b/2.mp4', 'c.mkv', 'd.webm', 'é.mp4']);
    const shards = [0, 1, 2].map((i) => shardIds(ids, i, 3));
    expect(shards[0]).toEqual(['Z.mp4', 'b/2.mp4', 'é.mp4']);
    expect(shards[1]).toEqual(['a.mp4', 'c.mkv']);
    expect(shards.flat().sort()).toEqual([...ids].sort());
    expect(() => shardIds(ids, 3, 3)).toThrow(RangeError);
  });

  it('hashes the listing: any change of ids changes it', () => {
    expect(datasetHash(ids)).toMatch(/^[0-9a-f]{64}$/);
    expect(datasetHash(ids)).toBe(datasetHash([...ids]));
    expect(datasetHash(ids)).not.toBe(datasetHash(ids.slice(1)));
    expect(datasetHash(['ab', 'c'])).not.toBe(datasetHash(['a', 'bc']));
  });

  it('places clips per (seed, id): deterministic, in range, spread over the valid starts', () => {
    expect(clipStartIndex(0, 'a.mp4', 40, 16)).toBe(clipStartIndex(0, 'a.mp4', 40, 16));
    const starts = Array.from({ length: 2000 }, (_, i) => clipStartIndex(5, `v${i}.mp4`, 20, 16));
    expect(Math.min(...starts)).toBe(0);
    expect(Math.max(...starts)).toBe(4);
    // 5 valid starts: each should take about 1/5 of 2000 (binomial sd ≈ 18; 6 sd margin)
    for (let s = 0; s <= 4; s++) expect(Math.abs(starts.filter((x) => x === s).length - 400)).toBeLessThan(108);
    const other = Array.from({ length: 200 }, (_, i) => clipFraction(6, `v${i}.mp4`));
    const same = Array.from({ length: 200 }, (_, i) => clipFraction(5, `v${i}.mp4`));
    expect(other).not.toEqual(same);
    expect(clipStartIndex(1, 'x', 16, 16)).toBe(0);
    expect(() => clipStartIndex(1, 'x', 15, 16)).toThrow(RangeError);
  });

  it('summarises skips as "N used, K skipped: reasons"', () => {
    expect(usageSummary(10, [])).toBe('10 used, 0 skipped');
    expect(
      usageSummary(7, [
        { id: 'a', kind: 'too-short', reason: '' },
        { id: 'b', kind: 'no-decode', reason: '' },
        { id: 'c', kind: 'too-short', reason: '' },
      ]),
    ).toBe('7 used, 3 skipped: 2 are shorter than the clip, 1 does not decode');
  });
});

function meta(over: Partial<PartialMetadata> = {}): PartialMetadata {
  const base: PartialMetadata = {
    format: 'cil-stats-partial/1',
    family: 'dynamicrafter',
    modelId: 'm',
    bundleHash: 'b'.repeat(64),
    vaeId: 'm/vae',
    scaleFactor: 0.18215,
    height: 16,
    width: 24,
    frames: 2,
    fps: 8,
    seed: 0,
    latentShape: [1, 1, 2, 1, 1],
    shardCount: 2,
    datasetHash: 'd'.repeat(64),
    datasetSize: 4,
    shardIndex: 0,
    shardSize: 2,
    videos: [],
    skipped: [],
    complete: false,
    source: '/videos',
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
  };
  return { ...base, ...over };
}

function accOf(values: number[][]): MomentAccumulator {
  const a = new MomentAccumulator([1, 1, 2, 1, 1]);
  for (const v of values) a.add(Float32Array.from(v));
  return a;
}

describe('partial files', () => {
  it('round-trip the accumulator state bit for bit and every metadata field', () => {
    const acc = accOf([[0.1, 2], [0.7, -3]]);
    const m = meta({ videos: ['a', 'c'], skipped: [], complete: true, shardSize: 2 });
    const p = decodePartial(encodePartial(m, acc), 'p.safetensors');
    expect(p.meta).toEqual(m);
    expect(p.acc.n).toBe(2);
    expect(Buffer.from(p.acc.mean.buffer).equals(Buffer.from(acc.mean.buffer))).toBe(true);
    expect(Buffer.from(p.acc.m2.buffer).equals(Buffer.from(acc.m2.buffer))).toBe(true);
    const raw = readSafetensors(encodePartial(m, acc), 'p');
    expect(raw.tensors.get('mean')!.dtype).toBe('F64');
    expect(raw.metadata.scaleFactor).toBe('0.18215');
  });

  it('refuses inconsistent or foreign files, naming the file', () => {
    const acc = accOf([[1, 2]]);
    expect(() => encodePartial(meta({ videos: ['a', 'b'] }), acc)).toThrow(/sample count 1 differs from the 2 videos listed/);
    expect(() => encodePartial(meta({ videos: ['a'], complete: true }), acc)).toThrow(/complete is true but 1 of 2/);
    expect(() => encodePartial(meta({ videos: ['a'], skipped: [{ id: 'a', kind: 'no-decode', reason: 'x' }] }), acc)).toThrow(/listed twice/);
    expect(() => encodePartial(meta({ videos: ['a'], latentShape: [2] }), acc)).toThrow(/differ from latentShape/);
    const good = encodePartial(meta({ videos: ['a'] }), acc);
    const f = readSafetensors(good, 'x');
    const tampered = writeSafetensors({ mean: { data: f.tensors.get('mean')!.float64(), dims: [1, 1, 2, 1, 1] }, m2: { data: Float64Array.of(0, -1), dims: [1, 1, 2, 1, 1] } }, f.metadata);
    expect(() => decodePartial(tampered, 'bad.safetensors')).toThrow(/^bad\.safetensors: element 1: .*m2 ≥ 0/);
    const asF32 = writeSafetensors({ mean: f.tensors.get('mean')!.tensor(), m2: f.tensors.get('m2')!.tensor() }, f.metadata);
    expect(() => decodePartial(asF32, 'f32.safetensors')).toThrow(PartialFormatError);
    expect(() => decodePartial(writeSafetensors({}, { format: 'cil-stats/1' }), 'final.safetensors')).toThrow(/final statistics file, not a partial/);
  });
});

describe('mergePartials', () => {
  const a = (): MergeInput => ({ where: 'a.safetensors', meta: meta({ videos: ['v1', 'v3'], complete: true }), acc: accOf([[1, 2], [3, 5]]) });
  const b = (): MergeInput => ({
    where: 'b.safetensors',
    meta: meta({ shardIndex: 1, videos: ['v2'], skipped: [{ id: 'v4', kind: 'too-short', reason: '1 s' }], complete: true }),
    acc: accOf([[5, 11]]),
  });

  it('combines shards into the moments of all their samples, in shard order', () => {
    const r = mergePartials([b(), a()]);
    // samples (1,2), (3,5), (5,11): means 3 and 6; population variances 8/3 and 42/3 → tr/d = 25/3
    expect(r.acc.n).toBe(3);
    expect(Array.from(r.acc.mean)).toEqual([3, 6]);
    expect(r.acc.trCovD()).toBeCloseTo(25 / 3, 13);
    expect(r.shards).toEqual([0, 1]);
    expect(r.skipped.map((s) => s.id)).toEqual(['v4']);
  });

  it('refuses partials of another run, naming both files and the differing fields', () => {
    const other = { ...b(), meta: { ...b().meta, frames: 3, modelId: 'n' } };
    let err: unknown;
    try {
      mergePartials([a(), other]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PartialMismatchError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^b\.safetensors \(model 'n'.*\) does not match a\.safetensors \(model 'm'/);
    expect(msg).toContain("modelId 'm' vs 'n'");
    expect(msg).toContain('frames 2 vs 3');
  });

  it('refuses duplicate shards, videos counted twice, and missing or unfinished shards unless allowed', () => {
    expect(() => mergePartials([a(), { ...a(), where: 'a2.safetensors' }])).toThrow(/a2\.safetensors and a\.safetensors are both shard 0\/2/);
    const dup = { ...b(), meta: { ...b().meta, videos: ['v1'] } };
    expect(() => mergePartials([a(), dup])).toThrow(/video 'v1' appears in both a\.safetensors and b\.safetensors/);
    expect(() => mergePartials([a()])).toThrow(/shard 1 of 2 missing/);
    const r = mergePartials([a()], { allowIncomplete: true });
    expect(r.missingShards).toEqual([1]);
    const unfinished = { ...b(), meta: { ...b().meta, skipped: [], complete: false } };
    expect(() => mergePartials([a(), unfinished])).toThrow(/unfinished: b\.safetensors \(shard 1\/2: 1 of 2 videos done\)/);
  });
});

describe('the final statistics file', () => {
  it('meets the statistics contract and records how it was made', () => {
    const acc = accOf([[1, 2], [3, 5]]);
    const m = meta();
    const bytes = encodeFinalStatistics(acc, { run: m, createdAt: '2025-02-03T04:05:06.000Z', skipped: 1 });
    const f = readSafetensors(bytes, 'final');
    const md = decodeStatisticsMetadata(f.metadata, 'final');
    expect(md).toMatchObject({ family: 'dynamicrafter', sampleCount: 2, latentShape: [1, 1, 2, 1, 1], source: 'computed', frames: 2 });
    expect(Array.from(f.tensors.get('expectation_x0')!.tensor().data)).toEqual([2, 3.5]);
    // population variances 1 and 2.25 → 1.625
    expect(f.tensors.get('tr_cov_d')!.tensor().data[0]).toBe(1.625);
    expect(f.tensors.get('tr_cov_d')!.dims).toEqual([]);
    expect(f.metadata.skippedCount).toBe('1');
    expect(() => encodeFinalStatistics(new MomentAccumulator([1, 1, 2, 1, 1]), { run: m, createdAt: '2025-02-03T04:05:06.000Z', skipped: 0 })).toThrow(/empty dataset/);
  });
});
