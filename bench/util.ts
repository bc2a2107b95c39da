/** Benchmark helpers: medians of repeated runs, never assertions (the machine is shared and noisy). */
import { performance } from 'node:perf_hooks';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median wall time in ms of `fn` over `runs` runs after `warmup` runs. */
export async function timeMs(fn: () => void | Promise<void>, runs: number, warmup = 5): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

export const round = (v: number, digits = 3): number => Number(v.toFixed(digits));
