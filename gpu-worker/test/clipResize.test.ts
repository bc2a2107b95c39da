/**
 * The worker's CLIP resize (gpu-worker/src/clipResize.ts) against the references it ports:
 * kornia.geometry.resize(bicubic, align_corners=True, antialias=True) as lvdm's
 * FrozenOpenCLIPImageEmbedderV2.preprocess calls it (DynamiCrafter, VideoCrafter1), and diffusers'
 * _resize_with_antialiasing (SVD), both run in the repository's virtualenv on the same float32
 * inputs (the model resolutions 320×512 and 576×1024 down to 224, the tiny models' 64×64 up, and
 * odd mixed sizes). Skips loudly without the virtualenv, kornia or diffusers.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tensor } from '#shared/sampler';
import { antialiasBlur, clipResize } from '../src/clipResize.ts';
import { pythonOrWarn, runPython } from '../../test/helpers/python.ts';

const SIZE = 224;
const TOLERANCE = 1e-5;
/** [H, W]: real model resolutions (down), tiny test models (up), mixed and odd sizes. */
const CASES: readonly (readonly [number, number])[] = [
  [64, 64],
  [64, 128],
  [320, 512],
  [576, 1024],
  [100, 37],
  [37, 300],
  [225, 224],
  [1000, 999],
];

/** A deterministic image in [−1, 1]: a smooth pattern plus per-pixel noise (mulberry32). */
function image(h: number, w: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const rand = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(3 * h * w);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const smooth = Math.sin((x / w) * 6.3 * (c + 1)) * Math.cos((y / h) * 4.1);
        out[(c * h + y) * w + x] = Math.max(-1, Math.min(1, 0.6 * smooth + 0.8 * (rand() - 0.5)));
      }
    }
  }
  return out;
}

const PROGRAM = `
import json, sys
import numpy as np, torch, kornia
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
torch.set_num_threads(2)
d = sys.argv[1]
for h, w in json.loads(sys.argv[2]):
    x = torch.from_numpy(np.fromfile(f"{d}/{h}x{w}.in", dtype=np.float32).reshape(1, 3, h, w))
    with torch.no_grad():
        # lvdm FrozenOpenCLIPImageEmbedderV2.preprocess (antialias=True, the class default)
        k = kornia.geometry.resize(x, (${SIZE}, ${SIZE}), interpolation="bicubic", align_corners=True, antialias=True)
        s = _resize_with_antialiasing(x, (${SIZE}, ${SIZE}))
    k.numpy().astype(np.float32).tofile(f"{d}/{h}x{w}.kornia")
    s.numpy().astype(np.float32).tofile(f"{d}/{h}x{w}.diffusers")
print("ok", kornia.__version__)
`;

const maxAbs = (a: Float32Array, b: Float32Array): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

describe('clipResize: kernel rules (no Python)', () => {
  it('blurs as kornia for the real resolutions: 320×512 → 3×3 taps, 576×1024 → 3 rows × 7 columns', () => {
    const a = antialiasBlur(320, 512, SIZE, SIZE);
    expect(a?.y?.kernel.length).toBe(3);
    expect(a?.x?.kernel.length).toBe(3);
    const b = antialiasBlur(576, 1024, SIZE, SIZE);
    expect(b?.y?.kernel.length).toBe(3);
    expect(b?.x?.kernel.length).toBe(7);
    expect(b?.x?.sigma).toBeCloseTo((1024 / 224 - 1) / 2, 12);
    for (const k of [a?.x?.kernel, b?.x?.kernel]) expect(k!.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 6);
    expect(antialiasBlur(64, 64, SIZE, SIZE)).toBeNull();
  });

  it('keeps a constant image constant and maps the first corner exactly (align_corners=True)', () => {
    const out = clipResize(tensor(new Float32Array(3 * 320 * 512).fill(0.25), [1, 3, 320, 512]), SIZE);
    expect(out.dims).toEqual([1, 3, SIZE, SIZE]);
    expect(maxAbs(out.data, new Float32Array(out.data.length).fill(0.25))).toBeLessThan(1e-6);
    const img = image(64, 128, 3);
    const up = clipResize(tensor(img, [1, 3, 64, 128]), SIZE);
    expect(up.data[0]).toBe(img[0]);
    // The last corner is not exact: float32 (63/223)·223 ≠ 63, in torch too.
    expect(Math.abs(up.data[SIZE * SIZE - 1] - img[64 * 128 - 1])).toBeLessThan(1e-5);
  });
});

const missing = pythonOrWarn('gpu-worker/test/clipResize.test.ts (CLIP resize vs kornia / diffusers)', ['torch', 'kornia', 'diffusers']);

describe.skipIf(missing !== null)('clipResize equals kornia.geometry.resize (lvdm) and diffusers _resize_with_antialiasing (SVD)', () => {
  let dir: string;
  const inputs = new Map<string, Float32Array>();

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cil-clip-resize-'));
    for (const [i, [h, w]] of CASES.entries()) {
      const x = image(h, w, 1000 + i);
      inputs.set(`${h}x${w}`, x);
      await writeFile(join(dir, `${h}x${w}.in`), x);
    }
    const r = runPython(['-c', PROGRAM, dir, JSON.stringify(CASES)]);
    expect(r.status, r.output).toBe(0);
  }, 180_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const read = async (file: string): Promise<Float32Array> => {
    const b = await readFile(join(dir, file));
    return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  };

  for (const [h, w] of CASES) {
    it(`${h}×${w} → ${SIZE}×${SIZE}: max |ours − reference| ≤ ${TOLERANCE}`, async () => {
      const ours = clipResize(tensor(inputs.get(`${h}x${w}`)!, [1, 3, h, w]), SIZE).data;
      const kornia = await read(`${h}x${w}.kornia`);
      const diffusers = await read(`${h}x${w}.diffusers`);
      expect(kornia.length).toBe(ours.length);
      const ek = maxAbs(ours, kornia);
      const ed = maxAbs(ours, diffusers);
      console.info(`clipResize ${h}×${w}: max abs error vs kornia ${ek.toExponential(2)}, vs diffusers ${ed.toExponential(2)}, kornia vs diffusers ${maxAbs(kornia, diffusers).toExponential(2)}`);
      expect(ek).toBeLessThanOrEqual(TOLERANCE);
      expect(ed).toBeLessThanOrEqual(TOLERANCE);
    });
  }
});
