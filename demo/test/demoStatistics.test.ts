import { describe, expect, it } from 'vitest';
import { demoDatasetStatistics, encodeDemoLatent, syntheticImage, DEMO_DATASET_IMAGES } from '../src/statistics.ts';
import { componentCount, pathMeans } from '../src/paths.ts';
import type { DemoGeometry } from '../src/paths.ts';

describe('demo dataset statistics', () => {
  it('equal the brute-force mean and per-element variance over every image × motion path', () => {
    const g: DemoGeometry = { h: 4, w: 6, frames: 4, paths: 3, speeds: 2 };
    const H = 32;
    const W = 48;
    const s = demoDatasetStatistics(g, H, W);
    // Brute force: the dataset is uniform over (image, path) pairs.
    const all: Float32Array[] = [];
    const M = componentCount(g);
    for (let i = 0; i < DEMO_DATASET_IMAGES; i++) {
      const mu = pathMeans(g, encodeDemoLatent(syntheticImage(1000 + i, H, W), H, W));
      const d = mu.length / M;
      for (let m = 0; m < M; m++) all.push(Float32Array.from(mu.subarray(m * d, (m + 1) * d)));
    }
    const d = all[0].length;
    expect(s.expectation.data.length).toBe(d);
    let tr = 0;
    for (let k = 0; k < d; k++) {
      let mean = 0;
      for (const v of all) mean += v[k] / all.length;
      expect(s.expectation.data[k]).toBeCloseTo(mean, 5);
      for (const v of all) tr += (v[k] - mean) ** 2 / (all.length * d);
    }
    expect(s.trCovD).toBeCloseTo(tr, 6);
    expect(s.trCovD).toBeGreaterThan(0);
  });
});
