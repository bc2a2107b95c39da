import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clipStartIndex } from '#shared/stats';
import { decodeClip, probeVideo, VideoSkip } from '../src/stats/video.ts';
import { writeVideo } from './statsFixtures.ts';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cil-stats-video-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A frame of one grey level. */
const grey = (w: number, h: number, v: number): Uint8Array => new Uint8Array(w * h * 3).fill(v);

/** The distinct byte values of each frame of a decoded clip. */
function frameValues(rgb: Uint8Array, frames: number): number[][] {
  const n = rgb.length / frames;
  return Array.from({ length: frames }, (_, f) => [...new Set(rgb.subarray(f * n, (f + 1) * n))]);
}

async function skipOf(p: Promise<unknown>): Promise<VideoSkip> {
  try {
    await p;
  } catch (e) {
    if (e instanceof VideoSkip) return e;
    throw e;
  }
  throw new Error('expected a VideoSkip');
}

describe('decodeClip: frame sampling', () => {
  it('takes every third frame of a 24 fps video at 8 fps, from the seeded start', async () => {
    // frame k of the source is grey level 5k: the decoded values tell which source frames were taken
    const path = join(dir, 'ramp.mkv');
    writeVideo(path, Array.from({ length: 48 }, (_, k) => grey(24, 16, 5 * k)), 24, 16, 24);
    const starts = new Set<number>();
    for (const seed of [0, 1, 2, 3, 4, 5]) {
      const clip = await decodeClip(path, 'ramp.mkv', { frames: 4, fps: 8, height: 16, width: 24, seed });
      // 2 s at 8 fps: 16 frames on the model grid, so 13 valid starts
      expect(clip.available).toBe(16);
      expect(clip.start).toBe(clipStartIndex(seed, 'ramp.mkv', 16, 4));
      expect(clip.start).toBeGreaterThanOrEqual(0);
      expect(clip.start).toBeLessThanOrEqual(12);
      // model frame n is source frame 3n (the frame shown at n/8 s)
      expect(frameValues(clip.rgb, 4)).toEqual([0, 1, 2, 3].map((j) => [5 * 3 * (clip.start + j)]));
      starts.add(clip.start);
    }
    expect(starts.size).toBeGreaterThan(1); // the seed moves the clip
  });

  it('takes consecutive frames when the model fps equals the source fps, and the last valid start works', async () => {
    const path = join(dir, 'ten.mkv');
    writeVideo(path, Array.from({ length: 10 }, (_, k) => grey(24, 16, 20 * k)), 24, 16, 8);
    const clip = await decodeClip(path, 'ten.mkv', { frames: 10, fps: 8, height: 16, width: 24, seed: 9 });
    expect(clip.start).toBe(0);
    expect(frameValues(clip.rgb, 10)).toEqual(Array.from({ length: 10 }, (_, k) => [20 * k]));
    // 1.25 s at 8 fps: starts 0 … 6; the first and the last (the clip ends on the last frame)
    for (const want of [0, 6]) {
      let seed = 0;
      while (clipStartIndex(seed, 'ten.mkv', 10, 4) !== want) seed++;
      const c = await decodeClip(path, 'ten.mkv', { frames: 4, fps: 8, height: 16, width: 24, seed });
      expect(c.start).toBe(want);
      expect(frameValues(c.rgb, 4)).toEqual([0, 1, 2, 3].map((j) => [20 * (want + j)]));
    }
  });

  it('centre-crops a wider video without scaling, and resizes a larger one to cover the size', async () => {
    // 48×16 source, target 24×16: scale 1, crop columns 12 … 35 → 4 columns of A, 16 of B, 4 of C
    const A = [200, 10, 10];
    const B = [10, 200, 10];
    const C = [10, 10, 200];
    const wide = new Uint8Array(48 * 16 * 3);
    for (let y = 0; y < 16; y++) for (let x = 0; x < 48; x++) wide.set(x < 16 ? A : x < 32 ? B : C, 3 * (y * 48 + x));
    writeVideo(join(dir, 'wide.mkv'), [wide, wide], 48, 16, 8);
    const clip = await decodeClip(join(dir, 'wide.mkv'), 'wide.mkv', { frames: 2, fps: 8, height: 16, width: 24, seed: 0 });
    for (let y = 0; y < 16; y++) {
      for (let x = 0; x < 24; x++) {
        const want = x < 4 ? A : x < 20 ? B : C;
        expect([...clip.rgb.subarray(3 * (y * 24 + x), 3 * (y * 24 + x) + 3)]).toEqual(want);
      }
    }
    // a constant colour stays that colour through any resize (down, up, other aspect)
    for (const [w, h] of [[50, 30], [12, 8], [24, 40]] as const) {
      const f = new Uint8Array(w * h * 3);
      for (let i = 0; i < w * h; i++) f.set([37, 141, 222], 3 * i);
      writeVideo(join(dir, `c${w}x${h}.mkv`), [f, f], w, h, 8);
      const c = await decodeClip(join(dir, `c${w}x${h}.mkv`), 'c', { frames: 2, fps: 8, height: 16, width: 24, seed: 0 });
      const px = new Set<string>();
      for (let i = 0; i < 16 * 24 * 2; i++) px.add(c.rgb.subarray(3 * i, 3 * i + 3).join(','));
      expect([...px]).toEqual(['37,141,222']);
    }
  });
});

describe('decodeClip: bad videos are skipped with a reason', () => {
  const spec = { frames: 4, fps: 8, height: 16, width: 24, seed: 0 };

  it('shorter than the clip', async () => {
    const path = join(dir, 'short.mkv');
    writeVideo(path, Array.from({ length: 10 }, () => grey(24, 16, 9)), 24, 16, 24); // 0.42 s → 3 frames at 8 fps
    const s = await skipOf(decodeClip(path, 'short.mkv', spec));
    expect(s.kind).toBe('too-short');
    expect(s.message).toMatch(/gives 3 frames at 8 fps, the clip needs 4/);
  });

  it('not a video, empty, truncated, audio only', async () => {
    writeFileSync(join(dir, 'junk.mp4'), Buffer.from('this is not a video at all, just some text'.repeat(40)));
    expect((await skipOf(decodeClip(join(dir, 'junk.mp4'), 'junk.mp4', spec))).kind).toBe('no-decode');
    writeFileSync(join(dir, 'empty.mp4'), new Uint8Array(0));
    expect((await skipOf(decodeClip(join(dir, 'empty.mp4'), 'empty.mp4', spec))).kind).toBe('no-decode');
    const r = spawnSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'testsrc2=size=64x48:rate=8:duration=2', '-c:v', 'libx264', '-pix_fmt', 'yuv420p', join(dir, 'full.mp4')]);
    expect(r.status).toBe(0);
    const full = await decodeClip(join(dir, 'full.mp4'), 'full.mp4', spec);
    expect(full.rgb.length).toBe(4 * 16 * 24 * 3);
    writeFileSync(join(dir, 'trunc.mp4'), readFileSync(join(dir, 'full.mp4')).subarray(0, 2000));
    expect((await skipOf(decodeClip(join(dir, 'trunc.mp4'), 'trunc.mp4', spec))).kind).toBe('no-decode');
    const a = spawnSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440:duration=2', '-c:a', 'flac', join(dir, 'audio.mkv')]);
    expect(a.status).toBe(0);
    expect((await skipOf(decodeClip(join(dir, 'audio.mkv'), 'audio.mkv', spec))).kind).toBe('no-video');
  });

  it('probeVideo reports size and duration', async () => {
    const info = await probeVideo(join(dir, 'ramp.mkv'));
    expect(info).toEqual({ width: 24, height: 16, durationS: 2 });
  });
});
