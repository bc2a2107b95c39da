/**
 * Demo-model measurements (issue: generation worker): wall time of one 16-frame generation, UNet
 * calls per step, and on the leaky demo model the effect of the start time M and Analytic-Init on
 * motion (mean absolute frame-to-frame difference, 0–255) and first-frame fidelity (PSNR of frame 0
 * against the input, dB), averaged over seeds.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { writeDemoBundle, DEMO_DEFAULTS } from '../demo/src/bundle.ts';
import { syntheticImage } from '../demo/src/statistics.ts';
import { runJob } from '../gpu-worker/src/job.ts';
import type { GenerateParams } from '../gpu-worker/src/generate.ts';
import { median } from './util.ts';

export interface DemoRow {
  readonly setting: string;
  readonly start: number;
  readonly analyticInit: boolean;
  readonly motion: number;
  readonly firstFramePsnrDb: number;
}

export interface DemoBench {
  readonly demoGenerateS: number;
  readonly unetCallsPerStep: number;
  readonly demoTable: DemoRow[];
}

async function rgb(file: string | Buffer): Promise<Float64Array> {
  return Float64Array.from(await sharp(file).removeAlpha().raw().toBuffer());
}

export async function benchDemo(seeds = 8): Promise<DemoBench> {
  const dir = await mkdtemp(join(tmpdir(), 'cil-bench-demo-'));
  try {
    const bundle = join(dir, 'bundle');
    await writeDemoBundle(bundle);
    const { height: H, width: W, frames: F } = DEMO_DEFAULTS;
    // A bench input the demo VAE reproduces well: a smooth synthetic image (outside its dataset).
    const img = syntheticImage(7, H, W);
    const raw = Buffer.alloc(H * W * 3);
    for (let c = 0; c < 3; c++) for (let i = 0; i < H * W; i++) raw[3 * i + c] = Math.round((img[c * H * W + i] + 1) * 127.5);
    const imagePath = join(dir, 'in.png');
    await sharp(raw, { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
    const input = await rgb(imagePath);
    const base: GenerateParams = {
      model: 'demo', family: 'dynamicrafter', prompt: '', steps: 25, start: 1000, analyticInit: false, statistics: 'statistics/demo.safetensors', guidanceScale: 7.5, imageGuidanceScale: null,
      guidanceRescale: 0.7, eta: 1, seed: 0, frames: F, fps: 8, frameStride: 24, motionBucketId: null, noiseAugStrength: null, minGuidanceScale: null,
      maxGuidanceScale: null, outputs: ['png-frames'], compat: 'paper', saveLatent: false,
    };
    const gen = async (p: GenerateParams, out: string) => runJob({ image: imagePath, model: bundle, out, statistics: null, initNoise: null }, { params: () => p });
    // Wall time of one full generation (open bundle, sessions, encode, 25 steps, decode, PNGs).
    const times: number[] = [];
    let calls = 0;
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      const meta = await gen({ ...base, start: 940, analyticInit: true, seed: 100 + k }, join(dir, `time-${k}`));
      times.push((performance.now() - t0) / 1000);
      calls = meta.unetCallsPerStep;
    }
    const settings = [
      { setting: 'baseline (M = T = 1000, noise)', start: 1000, analyticInit: false },
      { setting: 'start at M = 940 only', start: 940, analyticInit: false },
      { setting: 'M = 940 + Analytic-Init', start: 940, analyticInit: true },
      { setting: 'start at M = 800 only', start: 800, analyticInit: false },
      { setting: 'M = 800 + Analytic-Init', start: 800, analyticInit: true },
    ];
    const demoTable: DemoRow[] = [];
    for (const s of settings) {
      let motion = 0;
      let psnr = 0;
      for (let seed = 0; seed < seeds; seed++) {
        const out = join(dir, `t-${s.start}-${String(s.analyticInit)}-${seed}`);
        await gen({ ...base, start: s.start, analyticInit: s.analyticInit, seed }, out);
        const frames = await Promise.all(Array.from({ length: F }, (_, f) => readFile(join(out, 'frames', `${String(f).padStart(4, '0')}.png`)).then(rgb)));
        let m = 0;
        for (let f = 1; f < F; f++) for (let i = 0; i < frames[f].length; i++) m += Math.abs(frames[f][i] - frames[f - 1][i]);
        motion += m / ((F - 1) * frames[0].length) / seeds;
        let mse = 0;
        for (let i = 0; i < input.length; i++) mse += (input[i] - frames[0][i]) ** 2 / input.length;
        psnr += (10 * Math.log10((255 * 255) / mse)) / seeds;
      }
      demoTable.push({ ...s, motion: Number(motion.toFixed(3)), firstFramePsnrDb: Number(psnr.toFixed(2)) });
    }
    return { demoGenerateS: median(times), unetCallsPerStep: calls, demoTable };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
