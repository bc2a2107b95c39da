/**
 * The generation job end to end on the demo bundle, on CPU (issue: generation worker).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoBundle } from '../../demo/src/bundle.ts';
import { openBundle } from '../src/bundle.ts';
import { runJob } from '../src/job.ts';
import type { RunJobOptions } from '../src/job.ts';
import type { GenerateParams } from '../src/generate.ts';
import { familyAdapter, latentAxesOf } from '../src/families/index.ts';
import { imageToTensor } from '../src/image.ts';
import { OnnxSessions } from '../src/runtime/sessions.ts';
import { readStatistics } from '../src/statistics.ts';
import { writeNpy } from '#shared/formats';
import { NormalGenerator, randn } from '#shared/sampler';
import { vpAlphasCumprod } from '#shared/sampler';
import { writeSafetensors } from '#shared/formats';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'cil.js');
let dir: string;
let bundleDir: string;
let imagePath: string;

const H = 64;
const W = 96;
const F = 8;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cil-generate-'));
  bundleDir = join(dir, 'bundle');
  await writeDemoBundle(bundleDir, { height: H, width: W, frames: F });
  const raw = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const i = (y * W + x) * 3;
    raw[i] = (x * 255) / W;
    raw[i + 1] = (y * 255) / H;
    raw[i + 2] = ((x >> 3) + (y >> 3)) % 2 ? 220 : 30;
  }
  imagePath = join(dir, 'in.png');
  await sharp(raw, { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function params(over: Partial<GenerateParams> = {}): GenerateParams {
  return {
    model: 'demo', family: 'dynamicrafter', prompt: 'pan left', steps: 8, start: 940, analyticInit: true, statistics: 'statistics/demo.safetensors', guidanceScale: 7.5, imageGuidanceScale: null,
    guidanceRescale: 0.7, eta: 1, seed: 1, frames: F, fps: 8, frameStride: 24, motionBucketId: null, noiseAugStrength: null, minGuidanceScale: null,
    maxGuidanceScale: null, outputs: ['png-frames', 'latent-npy'], compat: 'paper', saveLatent: true, ...over,
  };
}

async function run(out: string, p: GenerateParams, extra: Partial<RunJobOptions> & { statistics?: string | null; initNoise?: string | null; model?: string } = {}) {
  return runJob(
    { image: imagePath, model: extra.model ?? bundleDir, out, statistics: extra.statistics ?? null, initNoise: extra.initNoise ?? null },
    { provider: 'cpu', threads: 1, params: () => p, ...extra },
  );
}

async function frameBytes(out: string): Promise<Buffer[]> {
  const names = (await readdir(join(out, 'frames'))).sort();
  return Promise.all(names.map((n) => readFile(join(out, 'frames', n))));
}

const sameBytes = (a: Buffer[], b: Buffer[]): boolean => a.length === b.length && a.every((x, i) => x.equals(b[i]));

async function pixels(file: string): Promise<Float64Array> {
  const raw = await sharp(file).raw().toBuffer();
  return Float64Array.from(raw);
}

describe('generate on the demo bundle', () => {
  it('writes every frame, the latent and metadata; the frames move and frame 0 resembles the input', async () => {
    const out = join(dir, 'e2e');
    const meta = await run(out, params());
    expect(meta.frames.count).toBe(F);
    expect((await readdir(join(out, 'frames'))).length).toBe(F);
    expect(existsSync(join(out, 'latent.npy'))).toBe(true);
    expect(existsSync(join(out, 'checkpoint'))).toBe(false);
    const m = JSON.parse(await readFile(join(out, 'metadata.json'), 'utf8')) as typeof meta;
    expect(m.model.id).toBe('demo');
    expect(m.executionProvider).toBe('cpu');
    expect(m.unetCallsPerStep).toBe(1);
    expect(m.params.seed).toBe(1);
    expect(m.analyticInit?.statistics).toMatch(/statistics\/demo\.safetensors$/);
    expect(m.timings.denoiseS).toBeGreaterThan(0);
    // motion: mean absolute frame-to-frame difference (0–255 scale)
    const frames = await Promise.all(Array.from({ length: F }, (_, f) => pixels(join(out, 'frames', `${String(f).padStart(4, '0')}.png`))));
    let motion = 0;
    for (let f = 1; f < F; f++) for (let i = 0; i < frames[f].length; i++) motion += Math.abs(frames[f][i] - frames[f - 1][i]) / (frames[f].length * (F - 1));
    expect(motion).toBeGreaterThan(1);
    // fidelity: frame 0 against the input (the demo VAE is an 8× pooling, so compare blurred)
    const input = Float64Array.from(await sharp(imagePath).resize(W / 8, H / 8, { kernel: 'cubic' }).resize(W, H).raw().toBuffer());
    let mse = 0;
    for (let i = 0; i < input.length; i++) mse += (input[i] - frames[0][i]) ** 2 / input.length;
    expect(10 * Math.log10((255 * 255) / mse)).toBeGreaterThan(15);
  });

  it('is deterministic: same seed, same bytes; another seed, another video', async () => {
    const a = join(dir, 'det-a');
    const b = join(dir, 'det-b');
    const c = join(dir, 'det-c');
    await run(a, params({ seed: 7 }));
    await run(b, params({ seed: 7 }));
    await run(c, params({ seed: 8 }));
    expect(sameBytes(await frameBytes(a), await frameBytes(b))).toBe(true);
    expect(sameBytes(await frameBytes(a), await frameBytes(c))).toBe(false);
  });

  it('Analytic-Init: x_M = √ᾱ[M−1]·E[X0] + √(1 − ᾱ + ᾱ·trCov_d)·z for an explicit noise file', async () => {
    const dims = [1, 4, F, H / 8, W / 8];
    const z = randn(dims, NormalGenerator.fromSeed(3));
    const zPath = join(dir, 'z.npy');
    await writeFile(zPath, writeNpy(z));
    const stats = readStatistics(await readFile(join(bundleDir, 'statistics', 'demo.safetensors')), 'demo');
    let seen: Tensor | null = null;
    await run(join(dir, 'ai'), params({ start: 900 }), { initNoise: zPath, onInitialLatent: (x) => (seen = x) });
    const a = vpAlphasCumprod({ linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, rescaleZeroSnr: true })[899];
    const mean = Math.sqrt(a);
    const std = Math.sqrt(1 - a + a * stats.trCovD);
    const x = seen!;
    expect(x.dims).toEqual(dims);
    for (const i of [0, 17, 500, x.data.length - 1]) expect(x.data[i]).toBeCloseTo(mean * stats.expectation.data[i] + std * z.data[i], 5);
    // and without statistics, x_M = z exactly
    let plain: Tensor | null = null;
    await run(join(dir, 'noai'), params({ start: 900, analyticInit: false }), { initNoise: zPath, onInitialLatent: (x2) => (plain = x2) });
    expect(Array.from(plain!.data)).toEqual(Array.from(z.data));
  });

  it('one batch-2 UNet call gives the same outputs as two separate calls', async () => {
    const bundle = await openBundle(bundleDir);
    const sessions = new OnnxSessions({ provider: 'cpu', threads: 1 });
    try {
      for (const [name, c] of Object.entries(bundle.manifest.components)) await sessions.open(name, join(bundle.root, c.file));
      const image = await imageToTensor(await readFile(imagePath), H, W, imagePath);
      const family = familyAdapter(bundle.manifest.family);
      const cond = await family.condition({ bundle, sessions, image, params: params({ prompt: 'zoom in', fps: 8, frameStride: 24 }), gen: NormalGenerator.fromSeed(1) });
      const x = randn(family.layout.dims(latentAxesOf(bundle.manifest, F)), NormalGenerator.fromSeed(5));
      const input = { x, modelTime: 951, inputScale: 1, step: 0 };
      const before = sessions.runCalls.get('unet') ?? 0;
      const both = await cond.model(input, ['cond', 'uncond']);
      expect((sessions.runCalls.get('unet') ?? 0) - before).toBe(1);
      const c1 = await cond.model(input, ['cond']);
      const u1 = await cond.model(input, ['uncond']);
      expect(cond.unetCalls(2)).toBe(1);
      let worst = 0;
      for (let i = 0; i < x.data.length; i++) {
        worst = Math.max(worst, Math.abs(both.cond!.data[i] - c1.cond!.data[i]), Math.abs(both.uncond!.data[i] - u1.uncond!.data[i]));
      }
      expect(worst).toBeLessThan(1e-5);
      // the branches really differ (the prompt biases the conditional branch)
      let diff = 0;
      for (let i = 0; i < x.data.length; i++) diff += Math.abs(both.cond!.data[i] - both.uncond!.data[i]);
      expect(diff).toBeGreaterThan(0);
    } finally {
      await sessions.close();
    }
  });
});

describe('refusals: one clear error, nothing written but error.json', () => {
  async function expectRefusal(out: string, p: Promise<unknown>, re: RegExp): Promise<void> {
    await expect(p).rejects.toThrow(re);
    expect((await readdir(out)).sort()).toEqual(['error.json']);
    const rec = JSON.parse(await readFile(join(out, 'error.json'), 'utf8')) as { error: string; reason: string };
    expect(rec.reason).toMatch(re);
  }

  it('a missing component file is named', async () => {
    const b = join(dir, 'broken-missing');
    await writeDemoBundle(b, { height: H, width: W, frames: F });
    await unlink(join(b, 'vae_decoder.onnx'));
    const out = join(dir, 'out-missing');
    await expectRefusal(out, run(out, params(), { model: b }), /vae_decoder\.onnx is listed in manifest\.json but missing/);
  });

  it('a wrong tensor name in the manifest is named, with the component', async () => {
    const b = join(dir, 'broken-name');
    await writeDemoBundle(b, { height: H, width: W, frames: F });
    const m = JSON.parse(await readFile(join(b, 'manifest.json'), 'utf8')) as { components: Record<string, { inputs: { name: string }[] }> };
    m.components.unet.inputs[2].name = 'ctx';
    await writeFile(join(b, 'manifest.json'), JSON.stringify(m));
    const out = join(dir, 'out-name');
    await expectRefusal(out, run(out, params(), { model: b }), /unet: input 'context' is missing/);
  });

  it('a graph that does not match its manifest entry is named (file and tensor)', async () => {
    const b = join(dir, 'broken-graph');
    await writeDemoBundle(b, { height: H, width: W, frames: F });
    const m = JSON.parse(await readFile(join(b, 'manifest.json'), 'utf8')) as { components: Record<string, { file: string; sha256?: string }> };
    // swap two graphs: the encoder file now holds the decoder graph
    m.components.vae_encoder.file = m.components.vae_decoder.file;
    delete m.components.vae_encoder.sha256;
    await writeFile(join(b, 'manifest.json'), JSON.stringify(m));
    const out = join(dir, 'out-graph');
    await expectRefusal(out, run(out, params(), { model: b }), /vae_decoder\.onnx \(component 'vae_encoder'\) does not match manifest\.json[\s\S]*input 'image' is not in the graph/);
  });

  it('an image that does not decode is named', async () => {
    const bad = join(dir, 'bad.png');
    await writeFile(bad, Buffer.from('not a png at all'));
    const out = join(dir, 'out-image');
    await expect(runJob({ image: bad, model: bundleDir, out, statistics: null, initNoise: null }, { provider: 'cpu', threads: 1, params: () => params() })).rejects.toThrow(/bad\.png: cannot decode the image/);
    expect(await readdir(out)).toEqual(['error.json']);
  });

  it('a statistics file of the wrong shape is refused, naming the file and the tensor', async () => {
    const s = readStatistics(await readFile(join(bundleDir, 'statistics', 'demo.safetensors')), 'demo');
    const wrong = join(dir, 'wrong-stats.safetensors');
    const dims = [1, 4, F + 1, H / 8, W / 8];
    const e = tensor(new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
    const { encodeStatisticsMetadata } = await import('#shared/schemas');
    await writeFile(wrong, writeSafetensors({ expectation_x0: e, tr_cov_d: tensor(Float32Array.of(0.3), []) }, encodeStatisticsMetadata({ ...s.meta, latentShape: dims })));
    const out = join(dir, 'out-stats');
    await expectRefusal(out, run(out, params(), { statistics: wrong }), /wrong-stats\.safetensors does not fit model 'demo': expectation_x0 dims \[1, 4, 9, 8, 12\]/);
  });
});

describe('Spot-safe resume', () => {
  function cil(args: string[], killAtStep: number | null): Promise<{ code: number | null; stdout: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let sent = false;
      child.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (killAtStep !== null && !sent) {
          const steps = [...stdout.matchAll(/"step":(\d+)/g)].map((m) => Number(m[1]));
          if (steps.some((s) => s >= killAtStep)) {
            sent = true;
            child.kill('SIGTERM');
          }
        }
      });
      child.on('exit', (code) => resolve({ code, stdout }));
    });
  }

  it('SIGTERM checkpoints and exits 143; the rerun resumes and equals an uninterrupted run byte for byte', async () => {
    const args = (out: string) => ['generate', '--image', imagePath, '--model', bundleDir, '--out', out, '--steps', '200', '--start', '1000', '--seed', '11', '--provider', 'cpu', '--threads', '1', '--progress', 'json', '--save-latent'];
    const full = join(dir, 'resume-full');
    const cut = join(dir, 'resume-cut');
    const r0 = await cil(args(full), null);
    expect(r0.code).toBe(0);
    const r1 = await cil(args(cut), 20);
    expect(r1.code).toBe(143);
    expect(existsSync(join(cut, 'checkpoint', 'state.json'))).toBe(true);
    expect(existsSync(join(cut, 'frames'))).toBe(false);
    const state = JSON.parse(await readFile(join(cut, 'checkpoint', 'state.json'), 'utf8')) as { completed: number };
    expect(state.completed).toBeGreaterThanOrEqual(20);
    expect(state.completed).toBeLessThan(200);
    const r2 = await cil(args(cut), null);
    expect(r2.code).toBe(0);
    const meta = JSON.parse(await readFile(join(cut, 'metadata.json'), 'utf8')) as { resumedFromStep: number };
    expect(meta.resumedFromStep).toBe(state.completed);
    expect(sameBytes(await frameBytes(full), await frameBytes(cut))).toBe(true);
    expect((await readFile(join(full, 'latent.npy'))).equals(await readFile(join(cut, 'latent.npy')))).toBe(true);
    expect(existsSync(join(cut, 'checkpoint', 'state.json'))).toBe(false);
  });
});
