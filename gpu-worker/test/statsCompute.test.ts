import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors } from '#shared/formats';
import { decodePartial, mergePartials, PartialMismatchError } from '#shared/stats';
import type { PartialStats } from '#shared/stats';
import { readStatistics } from '../src/statistics.ts';
import { computeStatistics } from '../src/stats/compute.ts';
import { StatsInputError } from '../src/stats/errors.ts';
import type { ComputeOptions, StatsEvent } from '../src/stats/compute.ts';
import { openClipEncoder } from '../src/stats/encoder.ts';
import { inspectStatistics } from '../src/stats/inspect.ts';
import { mergeStatistics } from '../src/stats/merge.ts';
import { blockFrame, closedForm, expectedX0, MATRIX_4x3, maxAbs, maxAbsDiff, writeTestBundle, writeVideo } from './statsFixtures.ts';
import type { TestModel } from './statsFixtures.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const RUNNER = join(HERE, 'statsCliRunner.ts');
const NODE = Number(process.versions.node.split('.')[0]) >= 24 ? process.execPath : join(HERE, '..', '..', 'node_modules', 'node', 'bin', 'node');

const DC: TestModel = { family: 'dynamicrafter', height: 16, width: 24, frames: 4, fps: 8, scaleFactor: 0.5, matrix: MATRIX_4x3 };
const SVD: TestModel = { family: 'svd', height: 16, width: 24, frames: 4, fps: 8, scaleFactor: 0.25, matrix: MATRIX_4x3.slice(0, 3), id: 'test-svd' };

/** Block colours of video v, frame f: every element of the latent differs across videos, frames and blocks. */
const colour =
  (v: number) =>
  (f: number, by: number, bx: number): readonly [number, number, number] => [
    (17 + 37 * v + 11 * f + 60 * by + 3 * bx) % 256,
    (200 + 53 * v - 29 * f + 7 * by + 41 * bx + 1024) % 256,
    (90 + 71 * ((v * v) % 7) + 5 * f + 13 * by + 19 * bx) % 256,
  ];

/** A video of exactly `frames` frames at the model fps, so the clip is the whole video. */
function writeKnownVideo(path: string, m: TestModel, v: number): Float64Array {
  const col = colour(v);
  writeVideo(path, Array.from({ length: m.frames }, (_, f) => blockFrame(m.width, m.height, (by, bx) => col(f, by, bx))), m.width, m.height, m.fps);
  return expectedX0(m, col);
}

let dir: string;
let dcBundle: string;
let svdBundle: string;
let videos: string;
const GOOD = 9;
const expected: Float64Array[] = [];
let reference: { final: Uint8Array; partial: PartialStats };

const opts = (over: Partial<ComputeOptions>): ComputeOptions => ({ videos, model: dcBundle, out: join(dir, 'unused.safetensors'), encoder: { provider: 'cpu', threads: 1 }, ...over });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cil-stats-compute-'));
  dcBundle = writeTestBundle(join(dir, 'dc-bundle'), DC);
  svdBundle = writeTestBundle(join(dir, 'svd-bundle'), SVD);
  videos = join(dir, 'videos');
  // nested folders: ids are relative paths, sorted by code point
  for (let v = 0; v < GOOD; v++) expected.push(writeKnownVideo(join(videos, v % 2 ? 'odd' : 'even', `v${v}.mkv`), DC, v));
  writeFileSync(join(videos, 'README.txt'), 'not a video: ignored by extension\n');
  const out = join(dir, 'ref', 'stats.safetensors');
  await computeStatistics(opts({ out, checkpointEvery: 2 }));
  reference = { final: readFileSync(out), partial: decodePartial(readFileSync(join(dir, 'ref', 'stats.partial.safetensors')), 'ref') };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function expectSameState(a: PartialStats, b: PartialStats): void {
  expect(a.meta.videos).toEqual(b.meta.videos);
  expect(a.acc.n).toBe(b.acc.n);
  // bit for bit: the same Welford updates in the same order
  expect(Buffer.from(a.acc.mean.buffer).equals(Buffer.from(b.acc.mean.buffer))).toBe(true);
  expect(Buffer.from(a.acc.m2.buffer).equals(Buffer.from(b.acc.m2.buffer))).toBe(true);
}

function tensorsOf(bytes: Uint8Array): { e: Float32Array; tr: number } {
  const f = readSafetensors(bytes, 'x');
  return { e: f.tensors.get('expectation_x0')!.tensor().data, tr: f.tensors.get('tr_cov_d')!.tensor().data[0] };
}

describe('computed statistics equal the closed form (tiny linear VAE, lossless videos of known content)', () => {
  it('dynamicrafter layout [1, C, F, h, w], × scale factor, population variance', () => {
    const s = readStatistics(reference.final, 'ref');
    const cf = closedForm(expected);
    expect(s.expectation.dims).toEqual([1, 4, 4, 2, 3]);
    // float32 arithmetic in onnxruntime vs float64 here: values are O(1)
    expect(maxAbsDiff(s.expectation.data, cf.mean)).toBeLessThan(2e-6);
    expect(Math.abs(s.trCovD - cf.trCovD) / cf.trCovD).toBeLessThan(1e-5);
    // and not the 1/(N−1) estimator: that would be 9/8 larger
    expect(Math.abs(s.trCovD - (cf.trCovD * GOOD) / (GOOD - 1)) / cf.trCovD).toBeGreaterThan(0.1);
    expect(s.meta).toMatchObject({ family: 'dynamicrafter', height: 16, width: 24, frames: 4, sampleCount: GOOD, source: 'computed', latentShape: [1, 4, 4, 2, 3] });
    expect(reference.partial.meta.videos).toEqual(['even/v0.mkv', 'even/v2.mkv', 'even/v4.mkv', 'even/v6.mkv', 'even/v8.mkv', 'odd/v1.mkv', 'odd/v3.mkv', 'odd/v5.mkv', 'odd/v7.mkv']);
    expect(reference.partial.meta.complete).toBe(true);
    // inspect: the per-channel mean of E[X0]
    const r = inspectStatistics(reference.final, 'ref');
    const perChannel = [0, 1, 2, 3].map((c) => cf.mean.subarray(c * 24, (c + 1) * 24).reduce((a, b) => a + b, 0) / 24);
    expect(maxAbsDiff(r.channelMeans!, perChannel)).toBeLessThan(2e-6);
    expect(r.count).toBe(GOOD);
  });

  it('svd layout [1, F, C, h, w]', async () => {
    const vids = join(dir, 'svd-videos');
    const xs = [0, 1, 2, 3, 4].map((v) => writeKnownVideo(join(vids, `s${v}.mkv`), SVD, v));
    const out = join(dir, 'svd', 'stats.safetensors');
    await computeStatistics(opts({ videos: vids, model: svdBundle, out }));
    const s = readStatistics(readFileSync(out), out);
    const cf = closedForm(xs);
    expect(s.expectation.dims).toEqual([1, 4, 3, 2, 3]);
    expect(maxAbsDiff(s.expectation.data, cf.mean)).toBeLessThan(2e-6);
    expect(Math.abs(s.trCovD - cf.trCovD) / cf.trCovD).toBeLessThan(1e-5);
    expect(s.meta.family).toBe('svd');
  });
});

describe('sharding', () => {
  it('3 shards merged equal one pass (≤ 1e-12 relative in float64)', async () => {
    const parts = join(dir, 'parts');
    const results = [];
    for (const index of [2, 0, 1]) results.push(await computeStatistics(opts({ out: parts, shard: { index, count: 3 } })));
    expect(results.map((r) => r.out)).toEqual([null, null, null]);
    expect(results.map((r) => r.used).sort()).toEqual([3, 3, 3]);
    const inputs = [0, 1, 2].map((i) => {
      const where = join(parts, `shard-0000${i}-of-00003.safetensors`);
      return { where, ...decodePartial(readFileSync(where), where) };
    });
    const merged = mergePartials(inputs);
    const one = reference.partial.acc;
    expect(merged.acc.n).toBe(one.n);
    expect(maxAbsDiff(merged.acc.mean, one.mean) / maxAbs(one.mean)).toBeLessThanOrEqual(1e-12);
    expect(maxAbsDiff(merged.acc.m2, one.m2) / maxAbs(one.m2)).toBeLessThanOrEqual(1e-12);
    expect(Math.abs(merged.acc.trCovD() - one.trCovD()) / one.trCovD()).toBeLessThanOrEqual(1e-12);
    // the merge command: a folder of partials → the final file
    const out = join(dir, 'merged.safetensors');
    const r = await mergeStatistics([parts], out);
    expect(r.summary).toBe(`${GOOD} used, 0 skipped`);
    const a = tensorsOf(readFileSync(out));
    const b = tensorsOf(reference.final);
    expect(maxAbsDiff(a.e, b.e)).toBeLessThan(1e-6);
    expect(Math.abs(a.tr - b.tr) / b.tr).toBeLessThan(1e-6);
    expect(readStatistics(readFileSync(out), out).meta.sampleCount).toBe(GOOD);
  });

  it('merge refuses partials of another run, naming both files', async () => {
    const p2 = join(dir, 'parts-2frames');
    await computeStatistics(opts({ out: p2, shard: { index: 1, count: 3 }, frames: 2 }));
    const a = join(dir, 'parts', 'shard-00000-of-00003.safetensors');
    const b = join(p2, 'shard-00001-of-00003.safetensors');
    const err = await mergeStatistics([a, b], join(dir, 'never.safetensors')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PartialMismatchError);
    expect((err as Error).message).toContain(b);
    expect((err as Error).message).toContain(a);
    expect((err as Error).message).toMatch(/frames 4 vs 2/);
    expect((err as Error).message).toMatch(/latentShape \[1,4,4,2,3\] vs \[1,4,2,2,3\]/);
    // another model (same geometry, other id and bundle)
    const other = writeTestBundle(join(dir, 'other-bundle'), { ...DC, id: 'other-model' });
    const p3 = join(dir, 'parts-other');
    await computeStatistics(opts({ out: p3, model: other, shard: { index: 2, count: 3 } }));
    const err2 = await mergeStatistics([a, join(p3, 'shard-00002-of-00003.safetensors')], join(dir, 'never.safetensors')).catch((e: unknown) => e);
    expect((err2 as Error).message).toMatch(/modelId 'test-dynamicrafter' vs 'other-model'/);
    // missing shards
    await expect(mergeStatistics([a], join(dir, 'never.safetensors'))).rejects.toThrow(/shards 1, 2 of 3 missing/);
  });
});

describe('resume', () => {
  it('after a crash in the middle, a rerun equals an uninterrupted run bit for bit', async () => {
    const out = join(dir, 'crash', 'stats.safetensors');
    let encoded = 0;
    const failing = opts({
      out,
      checkpointEvery: 2,
      openEncoder: async (b, g) => {
        const enc = await openClipEncoder(b, g, { provider: 'cpu', threads: 1 });
        return {
          ...enc,
          encode: (rgb) => {
            if (++encoded === 6) throw new Error('simulated crash');
            return enc.encode(rgb);
          },
        };
      },
    });
    await expect(computeStatistics(failing)).rejects.toThrow('simulated crash');
    const saved = decodePartial(readFileSync(join(dir, 'crash', 'stats.partial.safetensors')), 'crash');
    expect(saved.meta.complete).toBe(false);
    expect(saved.acc.n).toBe(5);
    const events: StatsEvent[] = [];
    const r = await computeStatistics(opts({ out, checkpointEvery: 2, onEvent: (e) => events.push(e) }));
    expect(r.processed).toBe(GOOD - 5);
    expect(events.find((e) => e.type === 'start')).toMatchObject({ resumed: true, done: 5, total: GOOD });
    expectSameState(decodePartial(readFileSync(join(dir, 'crash', 'stats.partial.safetensors')), 'crash'), reference.partial);
    expect(tensorsOf(readFileSync(out))).toEqual(tensorsOf(reference.final));
    // a rerun of a finished run does nothing and rewrites the same statistics
    const again = await computeStatistics(opts({ out }));
    expect(again.processed).toBe(0);
    expect(tensorsOf(readFileSync(out))).toEqual(tensorsOf(reference.final));
  });

  /** Runs `cil stats compute` in a child process; `onLine` sees each stdout JSON line. */
  function cli(args: string[], onLine?: (j: Record<string, unknown>, child: ChildProcess) => void): Promise<{ code: number | null; signal: string | null; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(NODE, [RUNNER, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let buf = '';
      let stderr = '';
      child.stdout.on('data', (b: Buffer) => {
        buf += b.toString();
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          onLine?.(JSON.parse(line) as Record<string, unknown>, child);
        }
      });
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      child.on('close', (code, signal) => resolve({ code, signal, stderr }));
    });
  }

  const computeArgs = (out: string): string[] => ['stats', 'compute', '--videos', videos, '--model', dcBundle, '--out', out, '--checkpoint-every', '1', '--decoders', '1', '--provider', 'cpu', '--threads', '1', '--progress', 'json'];

  it('SIGKILL mid-run (a real crash) and a rerun of the same command equal an uninterrupted run', async () => {
    const out = join(dir, 'killed', 'stats.safetensors');
    const first = await cli(computeArgs(out), (j, child) => {
      if (j.event === 'checkpoint' && (j.done as number) >= 3) child.kill('SIGKILL');
    });
    expect(first.signal).toBe('SIGKILL');
    const saved = decodePartial(readFileSync(join(dir, 'killed', 'stats.partial.safetensors')), 'killed');
    expect(saved.meta.complete).toBe(false);
    expect(saved.acc.n).toBeGreaterThanOrEqual(3);
    expect(saved.acc.n).toBeLessThan(GOOD);
    const second = await cli(computeArgs(out));
    expect(second.code).toBe(0);
    expectSameState(decodePartial(readFileSync(join(dir, 'killed', 'stats.partial.safetensors')), 'killed'), reference.partial);
    expect(tensorsOf(readFileSync(out))).toEqual(tensorsOf(reference.final));
  });

  it('SIGTERM saves progress and exits 143; the rerun finishes', async () => {
    const out = join(dir, 'termed', 'stats.safetensors');
    let sent = false;
    const first = await cli(computeArgs(out), (j, child) => {
      if (!sent && j.event === 'checkpoint' && (j.done as number) >= 2) {
        sent = true;
        child.kill('SIGTERM');
      }
    });
    expect(first.code).toBe(143);
    expect(first.stderr).toMatch(/progress saved in .*stats\.partial\.safetensors, rerun to resume/);
    expect(decodePartial(readFileSync(join(dir, 'termed', 'stats.partial.safetensors')), 't').meta.complete).toBe(false);
    expect((await cli(computeArgs(out))).code).toBe(0);
    expect(tensorsOf(readFileSync(out))).toEqual(tensorsOf(reference.final));
  });

  it('refuses to resume a partial of another run, and --restart discards it', async () => {
    const out = join(dir, 'ref', 'stats.safetensors');
    const err = await computeStatistics(opts({ out, seed: 7 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PartialMismatchError);
    expect((err as Error).message).toMatch(/holds another run .*seed 0 vs 7.*pass --restart/);
    const out2 = join(dir, 'restart', 'stats.safetensors');
    mkdirSync(join(dir, 'restart'), { recursive: true });
    copyFileSync(join(dir, 'ref', 'stats.partial.safetensors'), join(dir, 'restart', 'stats.partial.safetensors'));
    const r = await computeStatistics(opts({ out: out2, seed: 7, restart: true }));
    expect(r.processed).toBe(GOOD);
  });
});

describe('bad input', () => {
  it('skips corrupt, empty, short and audio-only videos with warnings and a summary; the mean is over the good ones', async () => {
    const vids = join(dir, 'mixed');
    const xs = [0, 1, 2].map((v) => writeKnownVideo(join(vids, `good${v}.mkv`), DC, v));
    writeFileSync(join(vids, 'junk.mp4'), Buffer.from('not a video '.repeat(100)));
    writeFileSync(join(vids, 'empty.mp4'), new Uint8Array(0));
    writeVideo(join(vids, 'short.mkv'), [blockFrame(24, 16, () => [1, 2, 3]), blockFrame(24, 16, () => [1, 2, 3])], 24, 16, 8);
    const { spawnSync } = await import('node:child_process');
    expect(spawnSync('ffmpeg', ['-v', 'error', '-y', '-f', 'lavfi', '-i', 'sine=duration=2', '-c:a', 'flac', join(vids, 'audio.mkv')]).status).toBe(0);
    const events: StatsEvent[] = [];
    const out = join(dir, 'mixed.safetensors');
    const r = await computeStatistics(opts({ videos: vids, out, onEvent: (e) => events.push(e) }));
    expect(r.summary).toBe('3 used, 4 skipped: 2 do not decode, 1 has no video stream, 1 is shorter than the clip');
    const skips = events.filter((e) => e.type === 'skip');
    expect(skips.map((e) => e.id).sort()).toEqual(['audio.mkv', 'empty.mp4', 'junk.mp4', 'short.mkv']);
    expect(skips.find((e) => e.id === 'short.mkv')).toMatchObject({ kind: 'too-short' });
    const s = readStatistics(readFileSync(out), out);
    const cf = closedForm(xs);
    expect(s.meta.sampleCount).toBe(3);
    expect(maxAbsDiff(s.expectation.data, cf.mean)).toBeLessThan(2e-6);
    expect(Math.abs(s.trCovD - cf.trCovD) / cf.trCovD).toBeLessThan(1e-5);
    expect(readSafetensors(readFileSync(out), out).metadata.skippedCount).toBe('4');
  });

  it('an empty dataset, or one with no usable video, is an error', async () => {
    const empty = join(dir, 'empty');
    mkdirSync(empty);
    writeFileSync(join(empty, 'notes.txt'), 'x');
    await expect(computeStatistics(opts({ videos: empty, out: join(dir, 'e.safetensors') }))).rejects.toThrow(StatsInputError);
    await expect(computeStatistics(opts({ videos: empty, out: join(dir, 'e.safetensors') }))).rejects.toThrow(/no videos under .*empty dataset/);
    const bad = join(dir, 'allbad');
    mkdirSync(bad);
    writeFileSync(join(bad, 'a.mp4'), 'x');
    writeFileSync(join(bad, 'b.mp4'), 'y');
    await expect(computeStatistics(opts({ videos: bad, out: join(dir, 'b.safetensors') }))).rejects.toThrow(/no usable videos .*0 used, 2 skipped: 2 do not decode/);
    await expect(computeStatistics(opts({ out: join(dir, 'x.safetensors'), height: 32, width: 24 }))).rejects.toThrow(/size 32×24 differs from model 'test-dynamicrafter' \(16×24\)/);
  });
});

describe('S3: videos listed under a prefix, model and outputs in a bucket', () => {
  interface S3rverInstance {
    run(): Promise<{ port: number }>;
    close(): Promise<void>;
  }
  const S3rver = createRequire(import.meta.url)('s3rver') as new (o: Record<string, unknown>) => S3rverInstance;

  it('gives the same statistics as the local run', async () => {
    const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(dir, 's3rver'), configureBuckets: [{ name: 'data', configs: [] }] });
    const { port } = await server.run();
    const s3 = new S3Client({
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      const put = (key: string, file: string): Promise<unknown> => s3.send(new PutObjectCommand({ Bucket: 'data', Key: key, Body: readFileSync(file) }));
      for (const id of reference.partial.meta.videos) await put(`datasets/web/${id}`, join(videos, id));
      for (const f of ['manifest.json', 'vae_encoder.onnx', 'unet.onnx', 'vae_decoder.onnx', 'text_encoder.onnx', 'image_encoder.onnx', 'tokenizer.json']) {
        await put(`models/test-dynamicrafter/${f}`, join(dcBundle, f));
      }
      const r = await computeStatistics({
        videos: 's3://data/datasets/web',
        model: 's3://data/models/test-dynamicrafter/',
        out: 's3://data/statistics/test.safetensors',
        s3,
        cacheDir: join(dir, 'model-cache'),
        encoder: { provider: 'cpu', threads: 1 },
        shard: undefined,
      });
      expect(r.partial).toBe('s3://data/statistics/test.partial.safetensors');
      const { GetObjectCommand } = await import('@aws-sdk/client-s3');
      const got = await s3.send(new GetObjectCommand({ Bucket: 'data', Key: 'statistics/test.safetensors' }));
      const bytes = await got.Body!.transformToByteArray();
      expect(tensorsOf(bytes)).toEqual(tensorsOf(reference.final));
      // sharded output under a prefix, merged from the prefix
      await computeStatistics({ videos: 's3://data/datasets/web/', model: dcBundle, out: 's3://data/statistics/partials/run1/', shard: { index: 0, count: 1 }, s3, encoder: { provider: 'cpu', threads: 1 } });
      const m = await mergeStatistics(['s3://data/statistics/partials/run1/'], 's3://data/statistics/merged.safetensors', { s3 });
      expect(m.inputs).toEqual(['s3://data/statistics/partials/run1/shard-00000-of-00001.safetensors']);
      expect(m.acc.n).toBe(GOOD);
    } finally {
      s3.destroy();
      await server.close();
    }
  });
});
