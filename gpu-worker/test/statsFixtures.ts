/**
 * Test fixtures for the statistics job: a bundle whose only real component is a tiny *linear*
 * vae_encoder (8×8 average pooling, then a known C×3 channel matrix), and videos written by ffmpeg
 * from raw RGB frames of known content, losslessly (FFV1 in planar RGB, so decoding returns the
 * exact bytes). With both, E[X0] and tr(Cov)/d have closed forms computed here in float64.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Family } from '#shared/schemas';
import { BUNDLE_CONTRACT } from '#shared/schemas';
import { GraphBuilder, encodeModel } from '../../demo/src/onnx/graph.ts';

export const DOWN = 8;

export interface TestModel {
  readonly family: Family;
  readonly height: number;
  readonly width: number;
  readonly frames: number;
  readonly fps: number;
  readonly scaleFactor: number;
  /** C×3 row-major channel matrix of the encoder. */
  readonly matrix: readonly (readonly [number, number, number])[];
  readonly id?: string;
}

export const MATRIX_4x3: readonly (readonly [number, number, number])[] = [
  [0.5, 0.25, -0.125],
  [-0.75, 0.5, 0.25],
  [0.125, -0.5, 1],
  [0.3, 0.3, 0.3],
];

function vaeEncoderOnnx(m: TestModel): Uint8Array {
  const C = m.matrix.length;
  const b = new GraphBuilder('test_vae_encoder');
  const image = b.input('image', 'float32', ['batch', 3, m.height, m.width]);
  const pooled = b.op('AveragePool', [image], { kernel_shape: [DOWN, DOWN], strides: [DOWN, DOWN] });
  const w = b.constFloat32(m.matrix.flat(), [C, 3, 1, 1], 'encoder_map');
  b.output(b.op('Conv', [pooled, w]), 'float32', ['batch', C, m.height / DOWN, m.width / DOWN], 'latent');
  return encodeModel(b);
}

/** Writes a bundle folder: manifest.json, the real vae_encoder.onnx, and placeholders the statistics job never opens. */
export function writeTestBundle(dir: string, m: TestModel): string {
  mkdirSync(dir, { recursive: true });
  const C = m.matrix.length;
  const h = m.height / DOWN;
  const w = m.width / DOWN;
  const fixed: Record<string, number> = { C, C2: 2 * C, h, w, height: m.height, width: m.width, frames: m.frames, tokens: 4, ctx: 81, dim: 8 };
  const components: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(BUNDLE_CONTRACT[m.family])) {
    const t = (x: { name: string; dtypes: readonly string[]; dims: readonly (string | number)[] }): unknown => ({
      name: x.name,
      dtype: x.dtypes[0],
      dims: x.dims.map((d) => (typeof d === 'string' && d !== 'batch' && d in fixed ? fixed[d] : d)),
    });
    components[name] = { file: `${name}.onnx`, inputs: spec.inputs.map(t), outputs: spec.outputs.map(t) };
    writeFileSync(join(dir, `${name}.onnx`), name === 'vae_encoder' ? vaeEncoderOnnx(m) : 'placeholder: not used by the statistics job\n');
  }
  const svd = m.family === 'svd';
  const manifest = {
    format: 'cil-bundle/1',
    id: m.id ?? `test-${m.family}`,
    family: m.family,
    cil: false,
    resolution: { height: m.height, width: m.width },
    frames: m.frames,
    latent: { channels: C, downsample: DOWN, scaleFactor: m.scaleFactor },
    schedule: svd
      ? { kind: 'edm-euler', sigmaMin: 0.002, sigmaMax: 700, rho: 7, parameterization: 'v' }
      : { kind: 'vp-ddim', betaSchedule: 'linear', linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, rescaleZeroSnr: false, parameterization: 'eps', spacing: 'uniform' },
    ...(svd ? {} : { tokenizer: { file: 'tokenizer.json', maxLength: 77 } }),
    defaults: svd
      ? { steps: 25, start: 700, analyticInit: false, fps: m.fps, motionBucketId: 127, noiseAugStrength: 0.02, minGuidanceScale: 1, maxGuidanceScale: 3 }
      : { steps: 50, start: 940, analyticInit: false, guidanceScale: 7.5, eta: 1, fps: m.fps, ...(m.family === 'dynamicrafter' ? { frameStride: 3 } : {}) },
    components,
  };
  if (!svd) writeFileSync(join(dir, 'tokenizer.json'), '{}\n');
  writeFileSync(join(dir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return dir;
}

/** Writes frames (each H×W×3 RGB bytes) as a lossless FFV1/RGB Matroska video at `fps`. */
export function writeVideo(path: string, frames: readonly Uint8Array[], width: number, height: number, fps: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const raw = Buffer.concat(frames.map((f) => Buffer.from(f.buffer, f.byteOffset, f.byteLength)));
  const r = spawnSync(
    'ffmpeg',
    ['-nostdin', '-v', 'error', '-y', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-r', String(fps), '-i', 'pipe:0', '-c:v', 'ffv1', '-pix_fmt', 'gbrp', path],
    { input: raw },
  );
  if (r.status !== 0) throw new Error(`ffmpeg could not write ${path}: ${r.stderr.toString()}`);
}

/** A frame whose 8×8 block (by, bx) has colour `colour(by, bx)`. */
export function blockFrame(width: number, height: number, colour: (by: number, bx: number) => readonly [number, number, number]): Uint8Array {
  const f = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = colour(Math.floor(y / DOWN), Math.floor(x / DOWN));
      f.set(c, 3 * (y * width + x));
    }
  }
  return f;
}

/**
 * The closed form: X0 of a clip whose frame f has block colours col(f, by, bx) is, per element,
 * scale · Σ_j A[k][j]·(col_j/127.5 − 1), in the family's layout. Returns the per-video X0 (float64).
 */
export function expectedX0(m: TestModel, col: (f: number, by: number, bx: number) => readonly [number, number, number]): Float64Array {
  const C = m.matrix.length;
  const F = m.frames;
  const h = m.height / DOWN;
  const w = m.width / DOWN;
  const out = new Float64Array(C * F * h * w);
  for (let f = 0; f < F; f++) {
    for (let by = 0; by < h; by++) {
      for (let bx = 0; bx < w; bx++) {
        const c = col(f, by, bx);
        for (let k = 0; k < C; k++) {
          let v = 0;
          for (let j = 0; j < 3; j++) v += m.matrix[k][j] * (c[j] / 127.5 - 1);
          const idx = m.family === 'svd' ? ((f * C + k) * h + by) * w + bx : ((k * F + f) * h + by) * w + bx;
          out[idx] = m.scaleFactor * v;
        }
      }
    }
  }
  return out;
}

/** Population mean and tr(Cov)/d of per-video X0 vectors, two-pass in float64. */
export function closedForm(xs: readonly Float64Array[]): { mean: Float64Array; trCovD: number } {
  const d = xs[0].length;
  const mean = new Float64Array(d);
  for (const x of xs) for (let i = 0; i < d; i++) mean[i] += x[i] / xs.length;
  let s = 0;
  for (const x of xs) for (let i = 0; i < d; i++) s += (x[i] - mean[i]) ** 2;
  return { mean, trCovD: s / xs.length / d };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
