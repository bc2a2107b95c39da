/**
 * The demo model bundle: determinism, the DynamiCrafter contract (manifest and ONNX sessions), the
 * tokenizer, the tiny VAE, and the UNet as the exact posterior-mean denoiser of its path mixture
 * (checked against motion paths and formulas written out here), plus a short DDIM run with the
 * shared sampler that must produce a moving video.
 */
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import * as ort from 'onnxruntime-node';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerDemoModel } from '../../cli/demoModel.ts';
import { BUNDLE_CONTRACT, TEXT_LENGTH } from '#shared/schemas';
import { parseManifest } from '#shared/schemas';
import type { Manifest } from '#shared/schemas';
import { FAMILY_TABLE, NormalGenerator, cfg, initialLatent, makePlan, sample, tensor, vpAlphasCumprod } from '#shared/sampler';
import type { BranchedModel, DatasetStatistics, Tensor } from '#shared/sampler';
import { checkManifestContract, checkSessionAgainstManifest, openBundle } from '../../gpu-worker/src/bundle.ts';
import { loadTokenizer } from '../../gpu-worker/src/tokenizer.ts';
import { readStatistics, statisticsForModel } from '../../gpu-worker/src/statistics.ts';
import { DEMO_DEFAULTS, buildDemoBundle } from '../src/bundle.ts';
import { DOWNSAMPLE, LEAK_CENTER, LEAK_WIDTH, TEXT_PRIOR } from '../src/graphs.ts';
import { DIRECTIONS, DemoModelError, PAN_TRAVEL, demoConditionalStatistics, pathMeans } from '../src/paths.ts';
import { VOCAB, embeddingTable } from '../src/tokenizer.ts';

const H = DEMO_DEFAULTS.height;
const W = DEMO_DEFAULTS.width;
const F = DEMO_DEFAULTS.frames;
const h = H / DOWNSAMPLE;
const w = W / DOWNSAMPLE;
const C = 4;
const HW = h * w;
const N = C * F * HW;
const SPEEDS = DEMO_DEFAULTS.speeds;
const GEOM = { h, w, frames: F, paths: DEMO_DEFAULTS.paths, speeds: SPEEDS };
const M = GEOM.paths * SPEEDS;
const CTX = TEXT_LENGTH + 4;
const ABAR = vpAlphasCumprod({ linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, rescaleZeroSnr: true });

let dirA: string;
let dirB: string;
const sessions = new Map<string, ort.InferenceSession>();

async function cliDemoModel(...args: string[]): Promise<void> {
  const program = new Command('cil').exitOverride();
  registerDemoModel(program);
  for (const c of program.commands) c.exitOverride().configureOutput({ writeErr: () => undefined });
  const quiet = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  try {
    await program.parseAsync(['demo-model', ...args], { from: 'user' });
  } finally {
    quiet.mockRestore();
  }
}

async function session(key: string, bytes: Uint8Array): Promise<ort.InferenceSession> {
  let s = sessions.get(key);
  if (!s) {
    s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2 });
    sessions.set(key, s);
  }
  return s;
}

async function bundleSession(dir: string, file: string): Promise<ort.InferenceSession> {
  return session(`${dir}/${file}`, await readFile(join(dir, file)));
}

beforeAll(async () => {
  dirA = await mkdtemp(join(tmpdir(), 'cil-demo-a-'));
  dirB = await mkdtemp(join(tmpdir(), 'cil-demo-b-'));
  await cliDemoModel('--out', dirA);
  await cliDemoModel('--out', dirB);
});

afterAll(async () => {
  for (const s of sessions.values()) await s.release();
  await rm(dirA, { recursive: true, force: true });
  await rm(dirB, { recursive: true, force: true });
});

/** A smooth test image in [−1, 1]: low-frequency sinusoids per channel (periods ≥ 48 px). */
function smoothImage(seed: number): Float32Array {
  const g = NormalGenerator.fromSeed(seed);
  const img = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    const waves = Array.from({ length: 4 }, () => ({ fy: 0.12 * g.uniform(), fx: 0.12 * g.uniform(), ph: 6.283 * g.uniform(), a: 0.4 * g.uniform() }));
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        let v = 0;
        for (const q of waves) v += q.a * Math.sin(q.fy * y + q.fx * x + q.ph);
        img[(c * H + y) * W + x] = Math.tanh(v);
      }
    }
  }
  return img;
}

function randomLatent(seed: number): Float32Array {
  const c = new Float32Array(C * HW);
  NormalGenerator.fromSeed(seed).fill(c);
  return c;
}

/**
 * Independent reference for a pan: frame f shows c moved by exactly speed·f/(F−1)·PAN_TRAVEL of the
 * width (dx) or height (dy), linearly interpolated, with the picture mirrored beyond its edges
 * (sampled from an explicitly mirrored copy of c rather than by reflecting coordinates).
 */
function panReference(c: Float32Array, dx: number, dy: number, speed: number): Float32Array {
  const out = new Float32Array(N);
  // Mirrored copy, 3× the size in each direction: index (y + h, x + w) is c at (y, x).
  const mirror = (i: number, n: number): number => (i < 0 ? -i - 1 : i >= n ? 2 * n - 1 - i : i);
  for (let f = 0; f < F; f++) {
    const ox = (dx * speed * f * PAN_TRAVEL * w) / (F - 1);
    const oy = (dy * speed * f * PAN_TRAVEL * h) / (F - 1);
    for (let ch = 0; ch < C; ch++) {
      const at = (y: number, x: number): number => c[ch * HW + mirror(y, h) * w + mirror(x, w)];
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const sx = x - ox;
          const sy = y - oy;
          const x0 = Math.floor(sx);
          const y0 = Math.floor(sy);
          const fx = sx - x0;
          const fy = sy - y0;
          out[(ch * F + f) * HW + y * w + x] =
            (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
        }
      }
    }
  }
  return out;
}

interface UnetCall {
  readonly xt: Float32Array; // [C, F, h, w]
  readonly cond: Float32Array; // [C, h, w]
  readonly t: number;
  readonly context?: Float32Array; // [CTX, 16]
}

/** Runs the UNet on a batch of calls; returns each v [C, F, h, w]. */
async function unet(s: ort.InferenceSession, calls: readonly UnetCall[]): Promise<Float32Array[]> {
  const B = calls.length;
  const x = new Float32Array(B * 2 * N);
  const ctx = new Float32Array(B * CTX * 16);
  calls.forEach((k, b) => {
    x.set(k.xt, b * 2 * N);
    for (let ch = 0; ch < C; ch++) for (let f = 0; f < F; f++) x.set(k.cond.subarray(ch * HW, (ch + 1) * HW), b * 2 * N + N + (ch * F + f) * HW);
    if (k.context) ctx.set(k.context, b * CTX * 16);
  });
  const r = await s.run({
    x: new ort.Tensor('float32', x, [B, 2 * C, F, h, w]),
    timestep: new ort.Tensor('int64', BigInt64Array.from(calls, (k) => BigInt(k.t)), [B]),
    context: new ort.Tensor('float32', ctx, [B, CTX, 16]),
    fs: new ort.Tensor('int64', BigInt64Array.from(calls, () => 24n), [B]),
  });
  const out = r.out.data as Float32Array;
  expect(r.out.dims).toEqual([B, C, F, h, w]);
  return calls.map((_, b) => out.slice(b * N, (b + 1) * N));
}

/** The x̂0 the sampler reads from a v-prediction: √ᾱ·x − √(1−ᾱ)·v. */
function impliedX0(xt: Float32Array, v: Float32Array, t: number): Float32Array {
  const a = ABAR[t];
  return Float32Array.from(xt, (x, i) => Math.sqrt(a) * x - Math.sqrt(1 - a) * v[i]);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function motionScore(x: Float32Array): number {
  let s = 0;
  for (let ch = 0; ch < C; ch++) for (let f = 0; f < F - 1; f++) for (let p = 0; p < HW; p++) s += Math.abs(x[(ch * F + f + 1) * HW + p] - x[(ch * F + f) * HW + p]);
  return s / (C * (F - 1) * HW);
}

describe('demo bundle files', () => {
  it('are byte-identical across two runs of `cil demo-model`', async () => {
    const names = (await readdir(dirA)).sort();
    expect(await readdir(join(dirA, 'statistics'))).toEqual(['demo.safetensors']);
    expect(names).toEqual(['image_encoder.onnx', 'manifest.json', 'statistics', 'text_encoder.onnx', 'tokenizer.json', 'unet.onnx', 'vae_decoder.onnx', 'vae_encoder.onnx']);
    expect((await readdir(dirB)).sort()).toEqual(names);
    for (const n of [...names.filter((x) => x !== 'statistics'), 'statistics/demo.safetensors']) {
      const a = await readFile(join(dirA, n));
      const b = await readFile(join(dirB, n));
      expect(a.equals(b), n).toBe(true);
    }
    // The in-memory build gives the same bytes as the CLI.
    const mem = buildDemoBundle();
    for (const [n, bytes] of mem.files) expect(Buffer.from(bytes).equals(await readFile(join(dirA, n))), n).toBe(true);
  });

  it('manifest.json passes parseManifest with the requested values and opens as a bundle', async () => {
    const m = parseManifest(JSON.parse(await readFile(join(dirA, 'manifest.json'), 'utf8')), 'demo manifest.json');
    expect(m.id).toBe('demo');
    expect(m.family).toBe('dynamicrafter');
    expect(m.cil).toBe(false);
    expect(m.resolution).toEqual({ height: 160, width: 256 });
    expect(m.frames).toBe(16);
    expect(m.latent).toEqual({ channels: 4, downsample: 8, scaleFactor: 1 });
    // DynamiCrafter's reference schedule (the defaults table's row), LDM linear betas.
    expect(m.schedule).toEqual({ betaSchedule: 'linear', ...FAMILY_TABLE.dynamicrafter.schedule });
    expect(m.defaults).toMatchObject({ steps: 25, start: 940, guidanceScale: 7.5, guidanceRescale: 0.7, eta: 1, analyticInit: true, statistics: 'demo', fps: 8 });
    expect(m.tokenizer).toEqual({ file: 'tokenizer.json', maxLength: 77 });
    checkManifestContract(m, 'demo');
    // The worker's loader: contract, files present, per-component SHA-256.
    const b = await openBundle(dirA);
    expect(b.manifest.id).toBe('demo');
  });

  it('every ONNX graph has the contract names, dtypes and dims, and matches the manifest exactly', async () => {
    const m: Manifest = parseManifest(JSON.parse(await readFile(join(dirA, 'manifest.json'), 'utf8')), 'demo');
    const contract = BUNDLE_CONTRACT.dynamicrafter;
    expect(Object.keys(m.components).sort()).toEqual(Object.keys(contract).sort());
    // Symbolic contract dims resolve to the manifest's sizes; the graph may keep the symbol instead.
    const sizes: Record<string, number> = { C: 4, C2: 8, frames: 16, h: 20, w: 32, height: 160, width: 256 };
    const seen: Record<string, number> = {};
    for (const [name, want] of Object.entries(contract)) {
      const s = await bundleSession(dirA, m.components[name].file);
      expect(s.inputNames, name).toEqual(want.inputs.map((t) => t.name));
      expect(s.outputNames, name).toEqual(want.outputs.map((t) => t.name));
      const meta = [...s.inputMetadata, ...s.outputMetadata];
      const wants = [...want.inputs, ...want.outputs];
      wants.forEach((wt, i) => {
        const got = meta[i];
        expect(got.isTensor).toBe(true);
        if (!got.isTensor) return;
        expect(wt.dtypes as readonly string[], `${name}.${wt.name} dtype`).toContain(got.type);
        expect(got.shape.length, `${name}.${wt.name} rank`).toBe(wt.dims.length);
        wt.dims.forEach((d, k) => {
          const g = got.shape[k];
          const where = `${name}.${wt.name} axis ${k}`;
          if (typeof d === 'number') expect(g, where).toBe(d);
          else if (d === 'batch') expect(g, `${where} must be dynamic`).toBe('batch');
          else if (d in sizes) expect(g === d || g === sizes[d], `${where}: ${g} vs ${d}=${sizes[d]}`).toBe(true);
          else {
            expect(typeof g, where).toBe('number');
            if (seen[d] !== undefined) expect(g, `${where}: '${d}' must agree across components`).toBe(seen[d]);
            seen[d] = g as number;
          }
        });
      });
      const io = (md: readonly ort.InferenceSession.ValueMetadata[]) => md.map((x) => ({ name: x.name, type: x.isTensor ? x.type : '?', shape: x.isTensor ? x.shape : [] }));
      checkSessionAgainstManifest(m, name, m.components[name].file, io(s.inputMetadata), io(s.outputMetadata));
      expect(io(s.inputMetadata).map((x) => x.shape)).toEqual(m.components[name].inputs.map((t) => t.dims));
      expect(io(s.outputMetadata).map((x) => x.shape)).toEqual(m.components[name].outputs.map((t) => t.dims));
    }
    expect(seen.ctx).toBe(TEXT_LENGTH + seen.tokens);
    expect(seen.dim).toBe(16);
  });

  it('rejects sizes that are not multiples of 8 and out-of-range options', async () => {
    await expect(cliDemoModel('--out', dirA, '--height', '100')).rejects.toThrow(/multiple of 8/);
    await expect(cliDemoModel('--out', dirA, '--leak', '2')).rejects.toThrow(/--leak/);
    expect(() => buildDemoBundle({ paths: DIRECTIONS.length + 1 })).toThrow(DemoModelError);
    expect(() => buildDemoBundle({ frames: 1 })).toThrow(/frames must be an integer in \[2, 64\]/);
  });

  it('other sizes give a consistent bundle (the UNet runs at the new latent size)', async () => {
    const b = buildDemoBundle({ height: 64, width: 96, frames: 8, paths: 4, speeds: 2, leak: 0 });
    const m = b.manifest;
    expect(m.resolution).toEqual({ height: 64, width: 96 });
    const s = await session('small-unet', b.files.get('unet.onnx')!);
    const x = new Float32Array(2 * 8 * 8 * 8 * 12).fill(0.1);
    const r = await s.run({
      x: new ort.Tensor('float32', x, [2, 8, 8, 8, 12]),
      timestep: new ort.Tensor('int64', BigInt64Array.of(10n, 990n), [2]),
      context: new ort.Tensor('float32', new Float32Array(2 * CTX * 16), [2, CTX, 16]),
      fs: new ort.Tensor('int64', BigInt64Array.of(1n, 1n), [2]),
    });
    expect(r.out.dims).toEqual([2, 4, 8, 8, 12]);
    // A constant image stays constant along every path: x̂0 = c, so v = (√ᾱ·x − c)/√(1−ᾱ) = (√ᾱ − 1)·0.1/√(1−ᾱ).
    const out = r.out.data as Float32Array;
    const want0 = ((Math.sqrt(ABAR[10]) - 1) * 0.1) / Math.sqrt(1 - ABAR[10]);
    const want1 = ((Math.sqrt(ABAR[990]) - 1) * 0.1) / Math.sqrt(1 - ABAR[990]);
    expect(Math.abs(out[0] - want0)).toBeLessThan(1e-5);
    expect(Math.abs(out[out.length - 1] - want1)).toBeLessThan(1e-5);
  });
});

describe('tokenizer and text encoder', () => {
  it('tokenizer.json loads with @huggingface/tokenizers and the worker pads to 77 ids', async () => {
    const json = JSON.parse(await readFile(join(dirA, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    // @huggingface/tokenizers' bundled .d.ts files use extensionless imports that do not resolve
    // under moduleResolution nodenext, so the class is typed here by what the test uses.
    const HfTokenizer = Tokenizer as unknown as new (tokenizer: object, config: object) => { tokenize(text: string): string[] };
    const tok = new HfTokenizer(json, {});
    expect(tok.tokenize('Pan LEFT, slowly!')).toEqual(['pan', 'left', '[UNK]', 'slowly', '[UNK]']);
    const worker = await loadTokenizer(join(dirA, 'tokenizer.json'), 77);
    const id = (word: string): number => VOCAB.indexOf(word);
    const ids = worker.encode('Pan LEFT, slowly!');
    expect(ids).toHaveLength(77);
    expect(ids.slice(0, 6)).toEqual([id('pan'), id('left'), id('[UNK]'), id('slowly'), id('[UNK]'), 0]);
    expect(ids.slice(5).every((i) => i === 0)).toBe(true);
    expect(worker.encode('')).toEqual(new Array<number>(77).fill(0));
    expect(worker.encode('zebra')).toEqual([id('[UNK]'), ...new Array<number>(76).fill(0)]);
    expect(worker.encode(Array.from({ length: 100 }, () => 'cat').join(' '))).toHaveLength(77);
    expect(new Set(VOCAB).size).toBe(VOCAB.length);
    for (const word of ['left', 'right', 'up', 'down', 'zoom', 'in', 'out', 'pan', 'tilt', 'orbit', 'rotate', 'spin', '[PAD]', '[UNK]']) expect(VOCAB, word).toContain(word);
  });

  it('text_encoder looks ids up in the embedding table; motion words light their motion dim', async () => {
    const s = await bundleSession(dirA, 'text_encoder.onnx');
    const ids = [VOCAB.indexOf('left'), VOCAB.indexOf('zoom'), VOCAB.indexOf('out'), 0, ...new Array<number>(73).fill(0)];
    const r = await s.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, 77]) });
    const e = r.text_embeds.data as Float32Array;
    expect(r.text_embeds.dims).toEqual([1, 77, 16]);
    const table = embeddingTable();
    for (let k = 0; k < 77; k++) for (let d = 0; d < 16; d++) expect(e[k * 16 + d]).toBe(table[ids[k] * 16 + d]);
    // Motion dims: left, right, up, down, in, out, orbit (dim 7 unused).
    expect(Array.from(e.subarray(0, 8))).toEqual([1, 0, 0, 0, 0, 0, 0, 0]); // 'left'
    expect(Array.from(e.subarray(16, 24))).toEqual([0, 0, 0, 0, 0.5, 0.5, 0, 0]); // 'zoom': half a word for in and for out
    expect(Array.from(e.subarray(32, 40))).toEqual([0, 0, 0, 0, 0, 1, 0, 0]); // 'out'
    expect(e.subarray(48, 77 * 16).every((v) => v === 0)).toBe(true); // [PAD] embeds to zeros
  });

  it('image_encoder gives 4 patch tokens (2×2 quadrants, row-major) with zero motion dims', async () => {
    const s = await bundleSession(dirA, 'image_encoder.onnx');
    const img = new Float32Array(3 * 224 * 224);
    const quadrant = [0.8, -0.4, 0.2, -1]; // top-left, top-right, bottom-left, bottom-right (red channel only)
    for (let y = 0; y < 224; y++) for (let x = 0; x < 224; x++) img[y * 224 + x] = quadrant[(y < 112 ? 0 : 2) + (x < 112 ? 0 : 1)];
    const r = await s.run({ image: new ort.Tensor('float32', img, [1, 3, 224, 224]) });
    expect(r.image_embeds.dims).toEqual([1, 4, 16]);
    const e = r.image_embeds.data as Float32Array;
    for (let k = 0; k < 4; k++) expect(Array.from(e.subarray(k * 16, k * 16 + 8)).every((v) => v === 0)).toBe(true);
    // Linear in the patch colour: token k = quadrant[k] · (token of a unit red patch); the
    // tolerance covers float32 summation over a 112×112 pool.
    const ref = e.subarray(0, 16).map((v) => v / quadrant[0]);
    for (let k = 1; k < 4; k++) for (let d = 8; d < 16; d++) expect(Math.abs(e[k * 16 + d] - quadrant[k] * ref[d])).toBeLessThan(2e-3);
    expect(ref.subarray(8).some((v) => Math.abs(v) > 0.01)).toBe(true);
  });
});

describe('tiny linear VAE', () => {
  it('encodes a flat colour to 2·(luma, Cb, Cr, mean/2)', async () => {
    const s = await bundleSession(dirA, 'vae_encoder.onnx');
    const rgb = [0.5, -0.25, 0.75];
    const img = new Float32Array(3 * 16 * 24);
    for (let c = 0; c < 3; c++) img.fill(rgb[c], c * 16 * 24, (c + 1) * 16 * 24);
    const r = await s.run({ image: new ort.Tensor('float32', img, [1, 3, 16, 24]) });
    expect(r.latent.dims).toEqual([1, 4, 2, 3]);
    const [R, G, B] = rgb;
    const want = [0.299 * R + 0.587 * G + 0.114 * B, -0.168736 * R - 0.331264 * G + 0.5 * B, 0.5 * R - 0.418688 * G - 0.081312 * B, (R + G + B) / 6].map((v) => 2 * v);
    const lat = r.latent.data as Float32Array;
    for (let c = 0; c < 4; c++) for (let p = 0; p < 6; p++) expect(Math.abs(lat[c * 6 + p] - want[c])).toBeLessThan(1e-6);
  });

  it('decode(encode(image)) of a smooth image is close (PSNR > 25 dB) and stays in [−1, 1]', async () => {
    const enc = await bundleSession(dirA, 'vae_encoder.onnx');
    const dec = await bundleSession(dirA, 'vae_decoder.onnx');
    const img = smoothImage(7);
    const lat = (await enc.run({ image: new ort.Tensor('float32', img, [1, 3, H, W]) })).latent;
    expect(lat.dims).toEqual([1, 4, h, w]);
    const out = (await dec.run({ latent: lat })).image;
    expect(out.dims).toEqual([1, 3, H, W]);
    const rec = out.data as Float32Array;
    let se = 0;
    for (let i = 0; i < img.length; i++) se += (rec[i] - img[i]) ** 2;
    const psnr = 10 * Math.log10(4 / (se / img.length)); // peak-to-peak 2 in [−1, 1]
    expect(psnr).toBeGreaterThan(25);
    // An out-of-range latent decodes into [−1, 1].
    const big = (await dec.run({ latent: new ort.Tensor('float32', new Float32Array(4 * 4).fill(10), [1, 4, 2, 2]) })).image.data as Float32Array;
    expect(Math.max(...big)).toBeLessThanOrEqual(1);
    expect(Math.min(...big)).toBeGreaterThanOrEqual(-1);
  });
});

describe('UNet: the posterior mean of the path mixture', () => {
  it('at t = 0, a slightly noisy point on a path denoises to that path (pans checked against an independent shift)', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const c = randomLatent(1);
    const t = 0;
    const a = ABAR[t];
    const z = randomLatent(2); // reused as small noise, tiled
    // Direction order: left, right, up, down (content motion); component = direction·speeds + level − 1.
    const pans: [number, number, number, number][] = [
      [0, -1, 0, 1],
      [1, 1, 0, 1 / 3],
      [2, 0, -1, 2 / 3],
      [3, 0, 1, 1],
    ];
    for (const [, dx, dy, speed] of pans) {
      const mu = panReference(c, dx, dy, speed);
      const xt = Float32Array.from(mu, (m, i) => Math.sqrt(a) * m + 0.1 * Math.sqrt(1 - a) * z[i % z.length]);
      const [v] = await unet(s, [{ xt, cond: c, t }]);
      expect(maxAbsDiff(impliedX0(xt, v, t), mu)).toBeLessThan(1e-3);
    }
  });

  it('with leak 0, a point exactly on path m at moderate t picks path m (all components, zooms included)', async () => {
    const b = buildDemoBundle({ leak: 0 });
    const s = await session('unet-leak0', b.files.get('unet.onnx')!);
    const c = randomLatent(3);
    const mus = pathMeans(GEOM, tensor(c, [C, h, w]));
    // pathMeans is the TS twin of the in-graph warp; check it on pans against the independent shift.
    expect(maxAbsDiff(mus.subarray(SPEEDS * N, SPEEDS * N + N), panReference(c, 1, 0, 1 / SPEEDS))).toBeLessThan(1e-5);
    expect(maxAbsDiff(mus.subarray((3 * SPEEDS - 1) * N, 3 * SPEEDS * N), panReference(c, 0, -1, 1))).toBeLessThan(1e-5);
    for (const t of [300, 600]) {
      const a = ABAR[t];
      for (let m = 0; m < M; m++) {
        const mu = mus.subarray(m * N, (m + 1) * N);
        const xt = Float32Array.from(mu, (v) => Math.sqrt(a) * v);
        const [v] = await unet(s, [{ xt, cond: c, t }]);
        expect(maxAbsDiff(impliedX0(xt, v, t), mu), `component ${m} at t=${t}`).toBeLessThan(1e-4);
      }
    }
  });

  it('at ᾱ = 0 (t = 999) the weights are uniform and the leak mixes in the static image', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const c = randomLatent(4);
    const mus = pathMeans(GEOM, tensor(c, [C, h, w]));
    const xt = randomLatent(5);
    const xtFull = new Float32Array(N);
    for (let i = 0; i < N; i++) xtFull[i] = xt[i % xt.length];
    const [v] = await unet(s, [{ xt: xtFull, cond: c, t: 999 }]);
    expect(ABAR[999]).toBe(0);
    const lambda = DEMO_DEFAULTS.leak / (1 + Math.exp(-(999 - LEAK_CENTER) / LEAK_WIDTH));
    const want = new Float32Array(N);
    for (let i = 0; i < N; i++) {
      let mean = 0;
      for (let m = 0; m < M; m++) mean += mus[m * N + i] / M;
      const ch = Math.floor(i / (F * HW));
      const p = i % HW;
      want[i] = (1 - lambda) * mean + lambda * c[ch * HW + p];
    }
    // x̂0 = √ᾱ·x − √(1−ᾱ)·v = −v at ᾱ = 0.
    expect(maxAbsDiff(Float32Array.from(v, (q) => -q), want)).toBeLessThan(1e-5);
  });

  it('motion words in the context set the prior: "left" weighs left pans by e^48 and left orbits by e^24 at ᾱ = 0', async () => {
    const b = buildDemoBundle({ leak: 0 });
    const s = await session('unet-leak0', b.files.get('unet.onnx')!);
    const te = await bundleSession(dirA, 'text_encoder.onnx');
    const ids = [VOCAB.indexOf('left'), ...new Array<number>(76).fill(0)];
    const emb = (await te.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, 77]) })).text_embeds.data as Float32Array;
    const context = new Float32Array(CTX * 16);
    context.set(emb);
    const c = randomLatent(6);
    const mus = pathMeans(GEOM, tensor(c, [C, h, w]));
    const [v] = await unet(s, [{ xt: new Float32Array(N).fill(0.3), cond: c, t: 999, context }]);
    // Direction order: left, right, up, down, zoom-in, zoom-out, orbit-left, orbit-right; component
    // m = direction·speeds + level − 1. log π_m = TEXT_PRIOR · (1 for the left pan, ½ for the left orbit).
    const logPrior = (m: number): number => TEXT_PRIOR * ([1, 0, 0, 0, 0, 0, 0.5, 0][Math.floor(m / SPEEDS)] ?? 0);
    expect(TEXT_PRIOR).toBe(48);
    const wts = Array.from({ length: M }, (_, m) => Math.exp(logPrior(m) - TEXT_PRIOR));
    const z = wts.reduce((p, q) => p + q, 0);
    const want = new Float32Array(N);
    for (let i = 0; i < N; i++) for (let m = 0; m < M; m++) want[i] += (wts[m] / z) * mus[m * N + i];
    expect(maxAbsDiff(Float32Array.from(v, (q) => -q), want)).toBeLessThan(1e-5);
  });

  it('a batch-2 call equals two batch-1 calls', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const calls: UnetCall[] = [
      { xt: Float32Array.from({ length: N }, (_, i) => Math.sin(i)), cond: randomLatent(7), t: 959 },
      { xt: Float32Array.from({ length: N }, (_, i) => Math.cos(0.3 * i)), cond: randomLatent(8), t: 120 },
    ];
    const both = await unet(s, calls);
    const one = await unet(s, [calls[0]]);
    const two = await unet(s, [calls[1]]);
    expect(maxAbsDiff(both[0], one[0])).toBeLessThan(1e-6);
    expect(maxAbsDiff(both[1], two[0])).toBeLessThan(1e-6);
    expect(maxAbsDiff(both[0], both[1])).toBeGreaterThan(0.1);
  });
});

describe('sampling the demo model with the shared sampler', () => {
  /**
   * One run with the shared sampler (CFG 1). `init`: 'none' (x_M = z), 'image' (Analytic-Init with
   * the exact statistics of this image's path mixture) or given statistics (the bundle's dataset file).
   */
  async function generate(s: ort.InferenceSession, cond: Float32Array, start: number, steps: number, seed: number, init: 'none' | 'image' | DatasetStatistics): Promise<Float32Array> {
    const stats = init === 'image' ? demoConditionalStatistics(GEOM, tensor(cond, [C, h, w])) : init === 'none' ? null : init;
    const plan = makePlan({ family: 'dynamicrafter', steps, start, trCovD: stats ? stats.trCovD : null });
    const model: BranchedModel = async (input, branches) => {
      const outs = await unet(
        s,
        branches.map(() => ({ xt: input.x.data, cond, t: input.modelTime })),
      );
      const r: Record<string, Tensor> = {};
      branches.forEach((br, i) => (r[br] = tensor(outs[i], [1, C, F, h, w])));
      return r;
    };
    const gen = NormalGenerator.fromSeed(seed);
    const x = initialLatent({ dims: [1, C, F, h, w], coefs: plan.init, expectation: stats?.expectation, noise: gen });
    return (await sample({ steps: plan.steps, x, denoiser: cfg(model, { scale: 1 }), noise: gen })).data;
  }

  async function encodeImage(seed: number): Promise<Float32Array> {
    const enc = await bundleSession(dirA, 'vae_encoder.onnx');
    return (await enc.run({ image: new ort.Tensor('float32', smoothImage(seed), [1, 3, H, W]) })).latent.data as Float32Array;
  }

  it('a 10-step DDIM run from M = 1000 on a random conditional image moves along a path', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const c = randomLatent(11);
    const x = await generate(s, c, 1000, 10, 42, 'none');
    expect(x.every(Number.isFinite)).toBe(true);
    const motion = motionScore(x);
    // A static video scores 0; it must move at least half as much as the slowest path does.
    const mus = pathMeans(GEOM, tensor(c, [C, h, w]));
    const slowest = Math.min(...Array.from({ length: M }, (_, m) => motionScore(mus.subarray(m * N, (m + 1) * N))));
    expect(slowest).toBeGreaterThan(0.02);
    expect(motion).toBeGreaterThan(slowest / 2);
    // It ends near one mixture component (a moved copy of the image), not a blur of several.
    let best = Infinity;
    for (let m = 0; m < M; m++) {
      let se = 0;
      for (let i = 0; i < N; i++) se += (x[i] - mus[m * N + i]) ** 2;
      best = Math.min(best, Math.sqrt(se / N));
    }
    expect(best).toBeLessThan(0.1);
  });

  // The start time alone (no Analytic-Init in either arm). With the leak on (0.6, the default), the
  // UNet pulls towards the static image at large t; starting at M < 1000 skips the leakiest steps,
  // so samples pick faster paths. M = 900, not the reference's 940: at 940 the paired effect is
  // 0.2–0.3 standard deviations (10 steps), which would take several hundred seeds to clear 3 SE
  // reliably; at 900 it is 0.7–0.8, and 64 seeds clear 3 SE in every block measured (t = 5.5 on
  // these seeds, 5.6 … 6.7 on three other blocks of 64). 10 steps instead of the default 25 keep
  // it short. docs/demo-model.md has the measurements.
  it('starting at M = 900 instead of 1000 (both without Analytic-Init, 10 DDIM steps) moves more: paired over 64 seeds, mean gain > 3 SE', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const SEEDS = 64;
    const d: number[] = [];
    for (let k = 0; k < SEEDS; k++) {
      const cond = await encodeImage(100 + k);
      // The same image and noise seed in both arms: only the start differs.
      const late = motionScore(await generate(s, cond, 1000, 10, 1000 + k, 'none'));
      const early = motionScore(await generate(s, cond, 900, 10, 1000 + k, 'none'));
      d.push(early - late);
    }
    const mean = d.reduce((a, b) => a + b, 0) / SEEDS;
    const sd = Math.sqrt(d.reduce((a, b) => a + (b - mean) ** 2, 0) / (SEEDS - 1));
    const se = sd / Math.sqrt(SEEDS);
    const more = d.filter((x) => x > 0).length;
    expect(mean, `mean paired gain ${mean.toFixed(4)}, SE ${se.toFixed(4)} (t = ${(mean / se).toFixed(2)}); ${more}/${SEEDS} seeds move more from M = 900`).toBeGreaterThan(3 * se);
    // 1,280 UNet calls: about 8 s of one core, but minutes on a shared 2-core machine.
  }, 240_000);

  // Analytic-Init itself is tested where its effect is known in closed form:
  // shared/test/analyticInitEffect.test.ts (Gaussian data). Here its start shift either leaves a
  // sample on its path, and then changes next to nothing, or tips it onto another path (some
  // seeds do, docs/demo-model.md); these two seeds stay.
  it('with the bundle\'s dataset statistics, Analytic-Init changes the final latent by < 1e-4 (M = 940, 800) where the sample stays on its path', async () => {
    const s = await bundleSession(dirA, 'unet.onnx');
    const m = parseManifest(JSON.parse(await readFile(join(dirA, 'manifest.json'), 'utf8')), 'demo manifest.json');
    const where = join(dirA, 'statistics', 'demo.safetensors');
    const file = readStatistics(await readFile(where), where);
    const stats: DatasetStatistics = { expectation: statisticsForModel(file, m, [1, C, F, h, w], where), trCovD: file.trCovD };
    for (const start of [940, 800]) {
      // The start does change: by √ᾱ_M·E[X0] and the std (0.03·E[X0] at M = 940, 0.13·E[X0] at 800).
      const coefs = makePlan({ family: 'dynamicrafter', steps: 25, start, trCovD: stats.trCovD }).init;
      const dims = [1, C, F, h, w];
      const x0On = initialLatent({ dims, coefs, expectation: stats.expectation, noise: NormalGenerator.fromSeed(1) });
      const x0Off = initialLatent({ dims, coefs: { meanCoef: 0, std: 1 }, noise: NormalGenerator.fromSeed(1) });
      expect(maxAbsDiff(x0On.data, x0Off.data), `start shift at M = ${start}`).toBeGreaterThan(0.01);
      for (let k = 0; k < 2; k++) {
        const cond = await encodeImage(300 + k);
        const off = await generate(s, cond, start, 25, 2000 + k, 'none');
        const on = await generate(s, cond, start, 25, 2000 + k, stats);
        // The end does not, to float precision.
        expect(maxAbsDiff(off, on), `M = ${start}, seed ${k}`).toBeLessThan(1e-4);
      }
    }
  });
});
