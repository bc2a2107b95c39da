/**
 * End to end, the demo path (what `npm run demo` does): the test card uploaded to the local
 * pipeline → the synthesized generation workflow → Validate, the worker process, PostProcess,
 * Notify → outputs/<job>/video.mp4 and video.gif. The video is checked by decoding it with ffmpeg:
 * its frames differ from each other (the demo model moves the picture), and its first frame is
 * the input as the demo VAE can reproduce it. The expected first frame is computed here from the
 * VAE's documented definition (docs/demo-model.md: 8×8 average pooling, exact colour map and its
 * pseudo-inverse, ×8 bilinear upsampling with half-pixel centres), not by running the model.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor, jobKeys } from '#shared/schemas';
import { DEMO_DEFAULTS } from '../demo/src/bundle.ts';
import { runImage } from '../local/src/run.ts';
import type { RunImageResult } from '../local/src/run.ts';
import { testCardPng } from '../local/src/testCard.ts';
import type { TestPipeline } from './helpers/local.ts';
import { decodeFrames, meanAbsDiff, psnr, startTestPipeline } from './helpers/local.ts';

const W = DEMO_DEFAULTS.width;
const H = DEMO_DEFAULTS.height;
const DOWN = 8;

/** The demo VAE's round trip (encode then decode) of an 8-bit RGB image, from its definition. */
function demoVaeRoundTrip(img: Uint8Array): Uint8Array {
  const w = W / DOWN;
  const h = H / DOWN;
  const lat = new Float64Array(w * h * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) lat[(Math.floor(y / DOWN) * w + Math.floor(x / DOWN)) * 3 + c] += img[(y * W + x) * 3 + c] / (DOWN * DOWN);
  const out = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(h - 1, Math.max(0, (y + 0.5) / DOWN - 0.5));
    const y0 = Math.floor(sy);
    const y1 = Math.min(h - 1, y0 + 1);
    const ty = sy - y0;
    for (let x = 0; x < W; x++) {
      const sx = Math.min(w - 1, Math.max(0, (x + 0.5) / DOWN - 0.5));
      const x0 = Math.floor(sx);
      const x1 = Math.min(w - 1, x0 + 1);
      const tx = sx - x0;
      for (let c = 0; c < 3; c++) {
        const v = (1 - ty) * ((1 - tx) * lat[(y0 * w + x0) * 3 + c] + tx * lat[(y0 * w + x1) * 3 + c]) + ty * ((1 - tx) * lat[(y1 * w + x0) * 3 + c] + tx * lat[(y1 * w + x1) * 3 + c]);
        out[(y * W + x) * 3 + c] = Math.round(Math.min(255, Math.max(0, v)));
      }
    }
  }
  return out;
}

let t: TestPipeline;
let card: Buffer;
let result: RunImageResult;

beforeAll(async () => {
  t = await startTestPipeline();
  card = await testCardPng();
  result = await runImage({
    dataDir: t.dataDir,
    pipeline: t.pipeline,
    image: card,
    fileName: 'test-card.png',
    request: { prompt: 'the card pans left', seed: 7 },
    outDir: join(t.dataDir, 'demo-output'),
    timeoutMs: 90_000,
  });
}, 120_000);
afterAll(async () => t?.close());

describe('the demo path, end to end on the local pipeline', () => {
  it('runs the synthesized workflow to success, named by the job id the starter derives from the upload', () => {
    const rec = result.record!;
    expect(rec.status, `${rec.error}: ${rec.cause}`).toBe('SUCCEEDED');
    // Starter naming: jobIdFor(bucket, key, version or ETag); s3rver's ETag is the MD5 of the bytes.
    expect(result.jobId).toBe(jobIdFor(t.pipeline.bucket, result.key, createHash('md5').update(card).digest('hex')));
    expect(rec.name).toBe(result.jobId);
    const top = rec.states.map((s) => s.name);
    expect(top).toEqual(['Validate', 'SizeForModel', 'SizeFor-dynamicrafter-160x256', 'ChooseTier', 'TierInteractive', 'Generate', 'PostProcess', 'NotifySuccess', 'Succeeded']);
    expect(rec.batchJobs).toHaveLength(1);
    expect(rec.batchJobs[0]).toMatchObject({ status: 'SUCCEEDED', attempts: 1, exitCode: 0 });
    // The worker's progress reached the record: the last denoising step of 25.
    expect(t.events.some((e) => e.type === 'progress' && e.jobId === result.jobId && e.progress.phase === 'denoise' && e.progress.step === 25 && e.progress.total === 25)).toBe(true);
  });

  it('writes outputs/<job>/video.mp4 and video.gif, and result.json lists them with their SHA-256', async () => {
    const k = jobKeys(result.jobId).output;
    const mp4 = await t.get(`${k}video.mp4`);
    const gif = await t.get(`${k}video.gif`);
    expect(mp4).not.toBeNull();
    expect(gif).not.toBeNull();
    const res = JSON.parse((await t.get(`${k}result.json`))!.toString('utf8')) as { outputs: { key: string; sha256: string }[] };
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    expect(res.outputs.find((o) => o.key === `${k}video.mp4`)?.sha256).toBe(sha(mp4!));
    expect(res.outputs.find((o) => o.key === `${k}video.gif`)?.sha256).toBe(sha(gif!));
    // The copies the demo prints are those bytes.
    expect(readFileSync(join(result.outDir!, 'video.mp4')).equals(mp4!)).toBe(true);
    expect(readFileSync(join(result.outDir!, 'video.gif')).equals(gif!)).toBe(true);
  });

  it('the MP4 has 16 frames that differ from each other, the first resembling the input as the demo VAE can', async () => {
    const frames = decodeFrames(join(result.outDir!, 'video.mp4'), W, H);
    expect(frames).toHaveLength(DEMO_DEFAULTS.frames);
    // Motion: the picture moves from frame to frame, and far by the end.
    const steps = frames.slice(1).map((f, i) => meanAbsDiff(f, frames[i]));
    expect(steps.filter((d) => d > 0.5).length).toBeGreaterThanOrEqual(12);
    expect(meanAbsDiff(frames[0], frames.at(-1)!)).toBeGreaterThan(10);
    // The first frame is the conditional image: what Validate handed the worker, through the VAE.
    const input = new Uint8Array(await sharp((await t.get(jobKeys(result.jobId).normalisedImage))!).removeAlpha().raw().toBuffer());
    const ceiling = demoVaeRoundTrip(input);
    const vaeLimit = psnr(ceiling, input);
    expect(vaeLimit).toBeGreaterThan(20); // a sanity check of the oracle on this smooth card
    expect(psnr(frames[0], ceiling)).toBeGreaterThan(30);
    expect(psnr(frames[0], input)).toBeGreaterThan(vaeLimit - 1.5);
    // …and the last frame is not (the check can fail).
    expect(psnr(frames.at(-1)!, ceiling)).toBeLessThan(20);
  });

  it('the GIF has the same 16 frames (the worker\'s PNG frames within the palette\'s quantisation error, in order), and a success notification names the outputs', async () => {
    const gifFrames = decodeFrames(join(result.outDir!, 'video.gif'), W, H);
    expect(gifFrames).toHaveLength(DEMO_DEFAULTS.frames);
    // The worker's frames, as PostProcess read them (jobs/<job>/frames/0000.png …).
    const frameDir = jobKeys(result.jobId).frames;
    const pngFrames = await Promise.all(
      Array.from({ length: DEMO_DEFAULTS.frames }, async (_, i) => new Uint8Array(await sharp((await t.get(`${frameDir}${String(i).padStart(4, '0')}.png`))!).removeAlpha().raw().toBuffer())),
    );
    // The GIF is one ≤ 256-colour palette (palettegen, stats over all frames at a quarter size per side) with Sierra-2-4A
    // error diffusion. The palette is the set of colours the decoded GIF uses; the quantisation
    // error of a frame is the mean distance (per channel, in levels of 255) from each PNG pixel to
    // its nearest palette colour. Dithering trades per-pixel error for local averages: so each
    // GIF frame must be within 1.5× that error per pixel (measured ≈ 1.26×, 4–5 levels), and its
    // 4×4-block means within 2.5 levels of the PNG's (measured ≈ 1.4; the dither averages out).
    const palette = new Map<number, readonly [number, number, number]>();
    for (const g of gifFrames) for (let p = 0; p < g.length; p += 3) palette.set((g[p] << 16) | (g[p + 1] << 8) | g[p + 2], [g[p], g[p + 1], g[p + 2]]);
    const colours = [...palette.values()];
    expect(colours.length).toBeLessThanOrEqual(256);
    const quantisationError = (img: Uint8Array): number => {
      let q = 0;
      for (let p = 0; p < img.length; p += 3) {
        let best = Infinity;
        for (const c of colours) best = Math.min(best, Math.abs(img[p] - c[0]) + Math.abs(img[p + 1] - c[1]) + Math.abs(img[p + 2] - c[2]));
        q += best / 3;
      }
      return q / (img.length / 3);
    };
    const B = 4;
    const blockMeans = (img: Uint8Array): Float64Array => {
      const out = new Float64Array((W / B) * (H / B) * 3);
      for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) out[(Math.floor(y / B) * (W / B) + Math.floor(x / B)) * 3 + c] += img[(y * W + x) * 3 + c] / (B * B);
      return out;
    };
    const blockDiff = (a: Float64Array, b: Float64Array): number => a.reduce((s, v, k) => s + Math.abs(v - b[k]), 0) / a.length;
    const gifBlocks = gifFrames.map(blockMeans);
    const pngBlocks = pngFrames.map(blockMeans);
    for (let i = 0; i < gifFrames.length; i++) {
      const q = quantisationError(pngFrames[i]);
      expect(meanAbsDiff(gifFrames[i], pngFrames[i]), `frame ${i}: mean |GIF − PNG| vs quantisation error ${q.toFixed(2)}`).toBeLessThanOrEqual(1.5 * q);
      expect(blockDiff(gifBlocks[i], pngBlocks[i]), `frame ${i}: 4×4-block means`).toBeLessThan(2.5);
      // In order: each GIF frame's blocks are nearest to its own PNG frame's.
      const d = pngBlocks.map((pb) => blockDiff(gifBlocks[i], pb));
      expect(d.indexOf(Math.min(...d)), `GIF frame ${i} is nearest to PNG frame ${d.indexOf(Math.min(...d))}`).toBe(i);
    }
    const sns = result.notifications.filter((n) => n.channel === 'sns');
    expect(sns).toHaveLength(1);
    expect(sns[0].subject).toBe(`CIL job ${result.jobId} succeeded`);
    const msg = sns[0].message as { status: string; outputs: { key: string }[] };
    expect(msg.status).toBe('succeeded');
    expect(msg.outputs.map((o) => o.key)).toEqual(expect.arrayContaining([`outputs/${result.jobId}/video.mp4`, `outputs/${result.jobId}/video.gif`]));
    expect(result.notifications.filter((n) => n.channel === 'eventbridge').map((n) => n.detailType)).toEqual(['Job Succeeded']);
  });
});
