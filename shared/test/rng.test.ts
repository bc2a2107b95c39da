import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ALGORITHM,
  GeneratorStateError,
  MAX_SEED,
  NormalGenerator,
  SeedError,
  randn,
} from '../src/sampler/rng.ts';
import type { GeneratorState } from '../src/sampler/rng.ts';
import { ShapeError } from '../src/sampler/tensor.ts';

// ---------------------------------------------------------------------------------------------
// Reference helpers, independent of the code under test.

/**
 * Standard normal CDF by Marsaglia's series (J. Stat. Softw. 11(4), 2004):
 * Φ(x) = ½ + φ(x)·(x + x³/3 + x⁵/(3·5) + …); all terms positive, so no cancellation, absolute
 * error ~1e-15 for |x| < 8 (checked below against tabulated values). Equivalent to
 * ½·(1 + erf(x/√2)).
 */
function normalCdf(x: number): number {
  if (x < -8) return 0;
  if (x > 8) return 1;
  let sum = x;
  let term = x;
  const x2 = x * x;
  for (let n = 3; ; n += 2) {
    term *= x2 / n;
    const next = sum + term;
    if (next === sum) break;
    sum = next;
  }
  return 0.5 + sum * Math.exp(-0.5 * x2 - 0.5 * Math.log(2 * Math.PI));
}

/** Upper-tail standard normal quantile z such that P(Z > z) = p, by bisection on normalCdf. */
function upperQuantile(p: number): number {
  let lo = 0;
  let hi = 8;
  for (let it = 0; it < 200; it++) {
    const mid = 0.5 * (lo + hi);
    if (1 - normalCdf(mid) > p) lo = mid;
    else hi = mid;
  }
  return 0.5 * (lo + hi);
}

function samples(seed: number, n: number): Float32Array {
  const out = new Float32Array(n);
  NormalGenerator.fromSeed(seed).fill(out);
  return out;
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// ---------------------------------------------------------------------------------------------

describe('normalCdf (test helper)', () => {
  it('matches tabulated values of Φ to 1e-12 (values from 0.5·erfc(−x/√2))', () => {
    const table: [number, number][] = [
      [0, 0.5],
      [0.5, 0.6914624612740131],
      [1, 0.8413447460685429],
      [1.96, 0.9750021048517795],
      [-1.5, 0.06680720126885809],
      [-3, 0.0013498980316300957],
      [3, 0.9986501019683699],
      [4, 0.9999683287581669],
      [-4.5, 3.3976731247300615e-6],
      [6, 0.9999999990134123],
    ];
    for (const [x, p] of table) expect(Math.abs(normalCdf(x) - p)).toBeLessThan(1e-12);
  });
});

describe('seeding and the uniform source', () => {
  it('matches an independent xoshiro128++/splitmix64 reference (Python, big integers)', () => {
    // Words from a separate Python implementation of splitmix64 → xoshiro128++ as documented.
    const expected: Record<number, number[]> = {
      0: [1179900579, 1938959192, 3089844957, 3657088315, 1015453891, 479942911],
      42: [2643743425, 1762251840, 1632151183, 1417845339, 3326664244, 3989346982],
      [MAX_SEED]: [752525743, 3616907186, 1770992596, 143591115, 809626489, 1047936483],
    };
    for (const [seed, words] of Object.entries(expected)) {
      const g = NormalGenerator.fromSeed(Number(seed));
      expect(Array.from({ length: words.length }, () => g.nextUint32())).toEqual(words);
    }
  });

  it('seeds the state words from splitmix64 (seed 0: first output 0xE220A8397B1DCDAF)', () => {
    // splitmix64(0) first output is Vigna's published 0xe220a8397b1dcdaf; s0 = low, s1 = high word.
    const s = NormalGenerator.fromSeed(0).state().s;
    expect(s[0]).toBe(0x7b1dcdaf);
    expect(s[1]).toBe(0xe220a839);
  });

  it('uniform() uses 53 bits from two words and stays in [0, 1)', () => {
    // Seed 0 words 1179900579, 1938959192: ((a>>>5)·2^26 + (b>>>6)) / 2^53, computed in Python.
    expect(NormalGenerator.fromSeed(0).uniform()).toBe(0.2747170139212095);
    const g = NormalGenerator.fromSeed(3);
    let sum = 0;
    const n = 100_000;
    for (let k = 0; k < n; k++) {
      const u = g.uniform();
      expect(u >= 0 && u < 1).toBe(true);
      sum += u;
    }
    // Mean of U(0,1): sd 1/√(12n); 5 sigma.
    expect(Math.abs(sum / n - 0.5)).toBeLessThan(5 / Math.sqrt(12 * n));
    expect(g.drawn).toBe(0); // uniform() draws are not normals
  });
});

describe('seed validation', () => {
  it.each([-1, 1.5, Number.NaN, Infinity, -Infinity, MAX_SEED + 1, 2 ** 64, -0.5])('rejects %s', (seed) => {
    expect(() => NormalGenerator.fromSeed(seed)).toThrow(SeedError);
    try {
      NormalGenerator.fromSeed(seed);
    } catch (e) {
      expect(e).toBeInstanceOf(RangeError);
      expect((e as Error).name).toBe('SeedError');
      expect((e as Error).message).toMatch(/integer 0 … 9007199254740991/);
    }
  });

  it('rejects non-numbers', () => {
    expect(() => NormalGenerator.fromSeed('1' as unknown as number)).toThrow(/seed string 1/);
    expect(() => NormalGenerator.fromSeed(1n as unknown as number)).toThrow(SeedError);
  });

  it('accepts the extremes 0 and 2^53−1', () => {
    expect(() => NormalGenerator.fromSeed(0)).not.toThrow();
    expect(() => NormalGenerator.fromSeed(MAX_SEED)).not.toThrow();
    expect(MAX_SEED).toBe(2 ** 53 - 1);
  });
});

describe('determinism and stream equivalence', () => {
  it('same seed gives the same bytes; different seeds differ', () => {
    const a = samples(123, 50_000);
    const b = samples(123, 50_000);
    expect(bytesOf(a)).toEqual(bytesOf(b));
    const c = samples(124, 50_000);
    let equal = 0;
    for (let k = 0; k < a.length; k++) if (a[k] === c[k]) equal++;
    expect(equal).toBeLessThan(5);
  });

  it('fill writes the same sequence as repeated next() rounded to float32', () => {
    const n = 200_000; // includes many wedge and tail draws
    const filled = samples(9, n);
    const g = NormalGenerator.fromSeed(9);
    for (let k = 0; k < n; k++) {
      const v = g.next();
      if (Math.fround(v) !== filled[k]) expect.fail(`element ${k}: next() ${v} vs fill ${filled[k]}`);
    }
    expect(g.drawn).toBe(n);
  });

  it('filling in uneven chunks and sub-ranges continues the one stream', () => {
    const n = 100_000;
    const whole = samples(17, n);
    const g = NormalGenerator.fromSeed(17);
    const pieces = new Float32Array(n);
    const sizes = [0, 1, 2, 3, 5, 127, 128, 1000, 4093];
    let k = 0;
    for (let j = 0; k < n; j++) {
      const end = Math.min(n, k + sizes[j % sizes.length]);
      g.fill(pieces, k, end);
      k = end;
    }
    expect(bytesOf(pieces)).toEqual(bytesOf(whole));
    expect(g.drawn).toBe(n);
  });

  it('fill touches only [start, end)', () => {
    const out = new Float32Array(10).fill(7);
    NormalGenerator.fromSeed(1).fill(out, 3, 6);
    expect(Array.from(out.subarray(0, 3))).toEqual([7, 7, 7]);
    expect(Array.from(out.subarray(6))).toEqual([7, 7, 7, 7]);
    expect(out.subarray(3, 6).every((v) => v !== 7)).toBe(true);
  });

  it('fill rejects a bad range', () => {
    const g = NormalGenerator.fromSeed(1);
    const out = new Float32Array(4);
    expect(() => g.fill(out, -1, 2)).toThrow(RangeError);
    expect(() => g.fill(out, 0, 5)).toThrow(/0 ≤ start ≤ end ≤ 4/);
    expect(() => g.fill(out, 3, 2)).toThrow(RangeError);
    expect(() => g.fill(out, 0.5, 2)).toThrow(RangeError);
  });

  it('golden values: first 8 normals for seeds 0 and 42', () => {
    // Pinned from this implementation after the statistical tests below passed. Guards against
    // accidental changes to the stream: any edit that changes these must bump ALGORITHM. (An
    // independent Python implementation of docs/rng.md gives the same float32 values; two doubles
    // differ there in the last bit because glibc's exp/log differ from V8's fdlibm.)
    const golden: Record<number, number[]> = {
      0: [
        1.0824417859803896, 1.0905130242480772, -0.6377740491489274, -0.47576729218288855, 0.7057216742396316,
        0.06086120914138704, 0.6964292439683477, -0.21690014961711726,
      ],
      42: [
        -1.1683676857959142, 1.2580710152689263, 1.8441516188709741, 0.7693961582345571, -0.7669093405383504,
        -0.2729978173730495, -0.01224021112746992, -1.2246024205083137,
      ],
    };
    for (const [seed, values] of Object.entries(golden)) {
      const g = NormalGenerator.fromSeed(Number(seed));
      expect(Array.from({ length: 8 }, () => g.next())).toEqual(values);
      expect(Array.from(samples(Number(seed), 8))).toEqual(values.map(Math.fround));
    }
    expect(ALGORITHM).toBe('xoshiro128++/splitmix64/ziggurat128-v1');
  });

  it('the first million float32 values for seed 5 match an independent implementation', () => {
    // SHA-256 of the little-endian float32 bytes from a separate Python implementation of
    // docs/rng.md (big-integer splitmix64/xoshiro128++, glibc exp/log). Covers the wedge and tail
    // paths, which the golden values above do not reach.
    const out = samples(5, 1_000_000);
    const hash = createHash('sha256').update(bytesOf(out)).digest('hex');
    expect(hash).toBe('da97a7c52e0a4f9e2fda7b12c6bfaa6ac651cfcecad0c712bd66087e6c218546');
  });
});

describe('state checkpoints', () => {
  it('a state taken between fills and restored through JSON continues identically', () => {
    const g = NormalGenerator.fromSeed(2024);
    const first = new Float32Array(163_841);
    g.fill(first);
    g.next();
    const json = JSON.stringify(g.state());
    const saved = JSON.parse(json) as GeneratorState;
    expect(saved.drawn).toBe(163_842);
    expect(saved.seed).toBe(2024);
    expect(saved.algorithm).toBe(ALGORITHM);

    const cont = new Float32Array(300_000);
    g.fill(cont);
    const resumed = NormalGenerator.fromState(saved);
    const again = new Float32Array(300_000);
    resumed.fill(again);
    expect(bytesOf(again)).toEqual(bytesOf(cont));
    expect(resumed.state()).toEqual(g.state());
  });

  it('state() is a plain JSON value', () => {
    const st = NormalGenerator.fromSeed(5).state();
    expect(JSON.parse(JSON.stringify(st))).toEqual(st);
    expect(st.s.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff)).toBe(true);
  });

  it('rejects malformed states with GeneratorStateError', () => {
    const good = NormalGenerator.fromSeed(5).state();
    const bad: [unknown, RegExp][] = [
      [null, /plain object/],
      [[1, 2], /plain object/],
      [{ ...good, algorithm: 'mt19937' }, /"algorithm"/],
      [{ ...good, seed: -3 }, /"seed"/],
      [{ ...good, s: [1, 2, 3] }, /"s" must be an array of 4/],
      [{ ...good, s: [1, 2, 3, 2 ** 32] }, /"s" must be/],
      [{ ...good, s: [1, 2, 3, -1] }, /"s" must be/],
      [{ ...good, s: [1, 2, 3, 0.5] }, /"s" must be/],
      [{ ...good, s: ['1', 2, 3, 4] }, /"s" must be/],
      [{ ...good, s: [0, 0, 0, 0] }, /all zero/],
      [{ ...good, drawn: -1 }, /"drawn"/],
      [{ ...good, drawn: 1.5 }, /"drawn"/],
      [{ algorithm: good.algorithm, seed: 5, s: good.s }, /"drawn"/],
    ];
    for (const [state, message] of bad) {
      let err: unknown;
      try {
        NormalGenerator.fromState(state as GeneratorState);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GeneratorStateError);
      expect((err as Error).name).toBe('GeneratorStateError');
      expect((err as Error).message).toMatch(message);
    }
  });
});

describe('randn', () => {
  it('returns a tensor of the dims, filled in row-major order from the stream', () => {
    const t = randn([2, 3, 4], NormalGenerator.fromSeed(8), 'noise');
    expect(t.dims).toEqual([2, 3, 4]);
    expect(bytesOf(t.data)).toEqual(bytesOf(samples(8, 24)));
    expect(randn([], NormalGenerator.fromSeed(8)).data.length).toBe(1);
  });

  it('rejects bad dims naming the tensor', () => {
    expect(() => randn([2, -1], NormalGenerator.fromSeed(8), 'x_T')).toThrow(ShapeError);
    expect(() => randn([2, 1.5], NormalGenerator.fromSeed(8), 'x_T')).toThrow(/x_T/);
  });
});

// ---------------------------------------------------------------------------------------------
// Statistics. Fixed seeds, so each test is deterministic; bounds are 5 standard errors of the
// statistic under a true N(0,1) (false-alarm rate ~6e-7 per check), derived from the formulas
// in the comments, so a real defect of a fraction of a percent still fails.

describe('distribution of fill()', () => {
  const N = 1 << 20;
  const x = samples(20240601, N);

  it('mean, variance, skewness and excess kurtosis match N(0,1)', () => {
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    let s4 = 0;
    for (let k = 0; k < N; k++) {
      const v = x[k];
      const v2 = v * v;
      s1 += v;
      s2 += v2;
      s3 += v2 * v;
      s4 += v2 * v2;
    }
    const mean = s1 / N;
    const m2 = s2 / N;
    const skew = s3 / N; // with known mean 0 and variance 1
    const exKurt = s4 / N - 3;
    // Standard errors under N(0,1): mean 1/√n, E[x²] √(2/n), E[x³] √(15/n), E[x⁴]−3 √(96/n).
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(N));
    expect(Math.abs(m2 - 1)).toBeLessThan(5 * Math.sqrt(2 / N));
    expect(Math.abs(skew)).toBeLessThan(5 * Math.sqrt(15 / N));
    expect(Math.abs(exKurt)).toBeLessThan(5 * Math.sqrt(96 / N));
  });

  it('passes a Kolmogorov–Smirnov test against Φ at α = 0.001', () => {
    const sorted = Float64Array.from(x).sort();
    let d = 0;
    for (let k = 0; k < N; k++) {
      const f = normalCdf(sorted[k]);
      d = Math.max(d, (k + 1) / N - f, f - k / N);
    }
    // Asymptotic critical value: D_α = √(−ln(α/2)/2) / √n.
    const alpha = 0.001;
    const critical = Math.sqrt(-Math.log(alpha / 2) / 2) / Math.sqrt(N);
    expect(d).toBeLessThan(critical);
  });

  it('lag-1 autocorrelation is near 0', () => {
    let num = 0;
    let den = 0;
    for (let k = 0; k < N; k++) {
      den += x[k] * x[k];
      if (k + 1 < N) num += x[k] * x[k + 1];
    }
    // Standard error of the lag-1 autocorrelation of iid data ≈ 1/√n.
    expect(Math.abs(num / den)).toBeLessThan(5 / Math.sqrt(N));
  });

  it('signs of consecutive draws are independent', () => {
    // P(same sign for x[k], x[k+1]) = ½, sd ½/√(n−1).
    let same = 0;
    for (let k = 0; k + 1 < N; k++) if (x[k] < 0 === x[k + 1] < 0) same++;
    expect(Math.abs(same / (N - 1) - 0.5)).toBeLessThan(5 * 0.5 / Math.sqrt(N - 1));
  });
});

describe('shape and tails (4 million draws)', () => {
  const N = 4_000_000;
  const x = samples(77, N);

  it('tail frequencies beyond |3| and |4| are within binomial bounds (tail path beyond R ≈ 3.44)', () => {
    let beyond3 = 0;
    let beyond4 = 0;
    let beyond5 = 0;
    let max = 0;
    for (let k = 0; k < N; k++) {
      const a = Math.abs(x[k]);
      if (a > 3) beyond3++;
      if (a > 4) beyond4++;
      if (a > 5) beyond5++;
      if (a > max) max = a;
    }
    for (const [count, z] of [
      [beyond3, 3],
      [beyond4, 4],
      [beyond5, 5],
    ] as const) {
      const p = 2 * (1 - normalCdf(z));
      const mean = N * p;
      const sd = Math.sqrt(N * p * (1 - p));
      expect(Math.abs(count - mean)).toBeLessThan(5 * sd + 1);
    }
    expect(max).toBeGreaterThan(4.5); // the tail path produces values well past R
  });

  it('a χ² test on 0.1-wide bins over [−4, 4] (wedges show up here) passes at α = 1e-4', () => {
    const lo = -4;
    const width = 0.1;
    const bins = 80;
    const counts = new Float64Array(bins + 2); // + two open-ended tail bins
    for (let k = 0; k < N; k++) {
      const b = Math.floor((x[k] - lo) / width);
      counts[b < 0 ? bins : b >= bins ? bins + 1 : b]++;
    }
    let chi2 = 0;
    for (let b = 0; b < bins + 2; b++) {
      let p: number;
      if (b === bins) p = normalCdf(lo);
      else if (b === bins + 1) p = 1 - normalCdf(lo + bins * width);
      else p = normalCdf(lo + (b + 1) * width) - normalCdf(lo + b * width);
      const e = N * p;
      chi2 += ((counts[b] - e) * (counts[b] - e)) / e;
    }
    // Upper α point of χ²(df) by Wilson–Hilferty: df·(1 − 2/(9df) + z_α·√(2/(9df)))³.
    const df = bins + 1;
    const z = upperQuantile(1e-4);
    const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
    expect(chi2).toBeLessThan(critical);
  });
});
