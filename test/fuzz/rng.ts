/**
 * The fuzzers' randomness: the project's seeded generator (shared/src/sampler/rng.ts), one stream per case
 * so that a case can be replayed alone and changing the count never changes earlier cases.
 */
import { createHash } from 'node:crypto';
import { NormalGenerator } from '#shared/sampler';

/** The base seed (CIL_FUZZ_SEED) and the number of cases per suite (CIL_FUZZ_COUNT). */
export interface FuzzConfig {
  readonly seed: number;
  readonly count: number;
}

function envInt(env: Readonly<Record<string, string | undefined>>, name: string, dflt: number, max: number): number {
  const v = env[name];
  if (v === undefined || v.trim() === '') return dflt;
  if (!/^\d+$/.test(v.trim()) || Number(v) < 1 || Number(v) > max) throw new RangeError(`${name} must be an integer 1 … ${max}, got '${v}'`);
  return Number(v);
}

/**
 * CIL_FUZZ_COUNT (cases per suite; default `dflt`, small enough for CI) and CIL_FUZZ_SEED (default
 * a fixed value, so CI runs the same cases every time).
 */
export function fuzzConfig(dflt: number, env: Readonly<Record<string, string | undefined>> = process.env): FuzzConfig {
  return { seed: envInt(env, 'CIL_FUZZ_SEED', 20250115, Number.MAX_SAFE_INTEGER), count: envInt(env, 'CIL_FUZZ_COUNT', dflt, 10_000_000) };
}

/** The seed of case `index` of suite `suite`: 48 bits of SHA-256(seed/suite/index). */
export function caseSeed(seed: number, suite: string, index: number): number {
  return createHash('sha256').update(`${seed}/${suite}/${index}`).digest().readUIntBE(0, 6);
}

/** Uniform draws over the project's generator. */
export class FuzzRng {
  private readonly g: NormalGenerator;

  constructor(seed: number) {
    this.g = NormalGenerator.fromSeed(seed);
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.g.uniform() * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.g.uniform() < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** A uint32. */
  u32(): number {
    return this.g.nextUint32();
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4) {
      const w = this.g.nextUint32();
      for (let k = 0; k < 4 && i + k < n; k++) b[i + k] = (w >>> (8 * k)) & 0xff;
    }
    return b;
  }

  /** A length skewed to small values (most cases small, a few large): up to `max`. */
  skewedLength(max: number): number {
    const u = this.g.uniform();
    return Math.floor(max * u * u * u);
  }
}
