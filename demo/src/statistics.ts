/**
 * Dataset statistics for the demo model, in closed form. The demo "dataset" is the demo's data
 * distribution (docs/demo-model.md) over a fixed set of synthetic conditional images: smooth
 * seeded colour fields. For each image the mixture's mean and tr(Cov)/d are exact
 * (demoConditionalStatistics); the dataset's follow by the law of total variance:
 *   E = mean_i E_i,   tr(Cov)/d = mean_i tr(Cov_i)/d + mean_i ‖E_i − E‖²/d.
 * The file is written into the bundle as statistics/demo.safetensors, so Analytic-Init works on
 * the demo out of the box; the statistics job (`cil stats compute`) gives comparable numbers
 * from real videos.
 */
import { writeSafetensors } from '#shared/formats';
import { encodeStatisticsMetadata, STATISTICS_FORMAT } from '#shared/schemas';
import { NormalGenerator } from '#shared/sampler';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import { DOWNSAMPLE, vaeEncoderMatrix } from './graphs.ts';
import { demoConditionalStatistics, LATENT_CHANNELS, pathTaps } from './paths.ts';
import type { DemoGeometry } from './paths.ts';

/** Synthetic images in the dataset. */
export const DEMO_DATASET_IMAGES = 8;
/** A fixed date keeps the bundle byte-identical across runs. */
const CREATED_AT = '2026-01-01T00:00:00.000Z';

/**
 * A smooth RGB field in [−1, 1], [3, H, W]: a few low-frequency cosines with seeded amplitudes
 * and phases per channel (images the demo VAE reproduces well).
 */
export function syntheticImage(seed: number, height: number, width: number): Float32Array {
  const g = NormalGenerator.fromSeed(seed);
  const out = new Float32Array(3 * height * width);
  for (let c = 0; c < 3; c++) {
    const terms = Array.from({ length: 4 }, () => ({ a: 0.35 * g.next(), fy: 1 + Math.floor(3 * g.uniform()), fx: 1 + Math.floor(3 * g.uniform()), p: 2 * Math.PI * g.uniform() }));
    const base = 0.4 * g.next();
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let v = base;
        for (const t of terms) v += t.a * Math.cos((2 * Math.PI * (t.fy * y)) / height + (2 * Math.PI * (t.fx * x)) / width + t.p);
        out[c * height * width + y * width + x] = Math.max(-1, Math.min(1, v));
      }
    }
  }
  return out;
}

/** The demo VAE encoder in TypeScript (DOWNSAMPLE×DOWNSAMPLE average pool, then the 3→4 map): [1, 4, h, w]. */
export function encodeDemoLatent(image: Float32Array, height: number, width: number): Tensor {
  const h = height / DOWNSAMPLE;
  const w = width / DOWNSAMPLE;
  const A = vaeEncoderMatrix();
  const pooled = new Float64Array(3 * h * w);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) pooled[c * h * w + Math.floor(y / DOWNSAMPLE) * w + Math.floor(x / DOWNSAMPLE)] += image[c * height * width + y * width + x];
    }
  }
  const n = DOWNSAMPLE * DOWNSAMPLE;
  const out = new Float32Array(LATENT_CHANNELS * h * w);
  for (let k = 0; k < LATENT_CHANNELS; k++) {
    for (let i = 0; i < h * w; i++) out[k * h * w + i] = (A[k * 3] * pooled[i] + A[k * 3 + 1] * pooled[h * w + i] + A[k * 3 + 2] * pooled[2 * h * w + i]) / n;
  }
  return tensor(out, [1, LATENT_CHANNELS, h, w], 'demo latent');
}

export function demoDatasetStatistics(g: DemoGeometry, height: number, width: number): { expectation: Tensor; trCovD: number } {
  const taps = pathTaps(g);
  const per = Array.from({ length: DEMO_DATASET_IMAGES }, (_, i) => demoConditionalStatistics(g, encodeDemoLatent(syntheticImage(1000 + i, height, width), height, width), taps));
  const d = per[0].expectation.data.length;
  const mean = new Float64Array(d);
  for (const s of per) for (let i = 0; i < d; i++) mean[i] += s.expectation.data[i] / per.length;
  let within = 0;
  let between = 0;
  for (const s of per) {
    within += s.trCovD / per.length;
    for (let i = 0; i < d; i++) between += (s.expectation.data[i] - mean[i]) ** 2 / (per.length * d);
  }
  return { expectation: tensor(Float32Array.from(mean), per[0].expectation.dims, 'expectation_x0'), trCovD: within + between };
}

/** The statistics file bytes (our safetensors format). */
export function demoStatisticsFile(g: DemoGeometry, height: number, width: number): Uint8Array {
  const s = demoDatasetStatistics(g, height, width);
  const meta = encodeStatisticsMetadata({
    format: STATISTICS_FORMAT,
    family: 'dynamicrafter',
    height,
    width,
    frames: g.frames,
    latentShape: [...s.expectation.dims],
    sampleCount: DEMO_DATASET_IMAGES,
    vaeId: 'demo',
    createdAt: CREATED_AT,
    source: 'computed',
  });
  return writeSafetensors({ expectation_x0: s.expectation, tr_cov_d: tensor(Float32Array.of(s.trCovD), [], 'tr_cov_d') }, meta);
}
