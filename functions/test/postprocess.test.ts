/** Post-process: the core (frames, encoders, result) and the handler against s3rver. */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeleteObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { parseManifest } from '#shared/schemas';
import type { JobSpec } from '#shared/schemas';
import type { PipelineError } from '../src/errors.ts';
import { logger } from '../src/logger.ts';
import { checkFrames, JobResult, orderFrameKeys, parsePostprocessInput, parseWorkerMetadata, postprocess } from '../src/postprocess/core.ts';
import { encodeVideos, webpWithSharp } from '../src/postprocess/encode.ts';
import { createPostprocessHandler } from '../src/postprocess/handler.ts';
import { buildJobSpec, parseRequest, parseUploadEvent, resolveRequest } from '../src/validate/core.ts';
import { tinyManifest, uploadEvent } from './helpers/fixtures.ts';
import type { LocalS3 } from './helpers/s3server.ts';
import { startLocalS3 } from './helpers/s3server.ts';

const FFMPEG = process.env.FFMPEG_PATH ?? '/usr/bin/ffmpeg';
const FFPROBE = FFMPEG.replace(/ffmpeg$/, 'ffprobe');
const COLOURS = [[250, 20, 20], [20, 250, 20], [20, 20, 250], [240, 240, 30], [30, 230, 230]] as const;

/** Solid-colour PNG frames, one colour each. */
function frames(n: number, width: number, height: number): Promise<Buffer[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => {
      const [r, g, b] = COLOURS[i % COLOURS.length];
      return sharp({ create: { width, height, channels: 3, background: { r, g, b } } }).png().toBuffer();
    }),
  );
}

function spec(over: Record<string, unknown> = {}, key = 'inputs/cat.png'): JobSpec {
  const m = parseManifest(tinyManifest(), 'tiny');
  const r = resolveRequest(parseRequest({ model: 'tiny', ...over }, 'x'), m, () => 99, 'x');
  return buildJobSpec(parseUploadEvent(uploadEvent('cil-data', key, { etag: 'e' })), 1000, r, '2025-01-15T12:00:00.000Z');
}

let dir: string;
function probe(bytes: Buffer, ext: string): Record<string, string> {
  const f = join(dir, `probe-${createHash('md5').update(bytes).digest('hex')}.${ext}`);
  writeFileSync(f, bytes);
  const r = spawnSync(FFPROBE, ['-v', 'error', '-count_frames', '-select_streams', 'v:0', '-show_entries', 'stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames,color_space,color_primaries,color_transfer', '-of', 'json', f], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  return (JSON.parse(r.stdout) as { streams: Record<string, string>[] }).streams[0];
}

/** Top-level MP4 box types in file order (size/type headers walked by hand). */
function mp4Boxes(b: Buffer): string[] {
  const types: string[] = [];
  let p = 0;
  while (p + 8 <= b.length) {
    let size = b.readUInt32BE(p);
    const type = b.toString('latin1', p + 4, p + 8);
    if (size === 1) size = Number(b.readBigUInt64BE(p + 8));
    if (size === 0) size = b.length - p;
    types.push(type);
    p += size;
  }
  return types;
}

beforeAll(() => {
  logger.setLogLevel('SILENT');
  dir = mkdtempSync(join(tmpdir(), 'cil-pp-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('encodeVideos (ffmpeg)', () => {
  it('MP4: h264, yuv420p, BT.709, even size, every frame at the requested fps, moov before mdat; GIF: every frame', async () => {
    const f = await frames(5, 65, 49);
    const out = await encodeVideos(f, 8, ['mp4', 'gif'], { ffmpegPath: FFMPEG });
    const mp4 = out.get('mp4')!;
    expect(probe(mp4, 'mp4')).toMatchObject({
      codec_name: 'h264', pix_fmt: 'yuv420p', width: 64, height: 48, r_frame_rate: '8/1', nb_read_frames: '5',
      color_space: 'bt709', color_primaries: 'bt709', color_transfer: 'bt709',
    });
    const boxes = mp4Boxes(mp4);
    expect(boxes.indexOf('moov')).toBeGreaterThan(-1);
    expect(boxes.indexOf('moov')).toBeLessThan(boxes.indexOf('mdat'));
    const gif = out.get('gif')!;
    expect(gif.toString('latin1', 0, 6)).toBe('GIF89a');
    expect(probe(gif, 'gif')).toMatchObject({ codec_name: 'gif', width: 65, height: 49, nb_read_frames: '5' });

    // Colours survive the RGB → YUV → RGB round trip (the matrix matches the tags).
    const first = join(dir, 'first.png');
    const mp4File = join(dir, 'colour.mp4');
    writeFileSync(mp4File, mp4);
    for (const [i, want] of COLOURS.entries()) {
      expect(spawnSync(FFMPEG, ['-v', 'error', '-y', '-i', mp4File, '-vf', `select=eq(n\\,${i})`, '-frames:v', '1', first]).status).toBe(0);
      const { data } = await sharp(first).raw().toBuffer({ resolveWithObject: true });
      const got = [data[3 * (24 * 64 + 32)], data[3 * (24 * 64 + 32) + 1], data[3 * (24 * 64 + 32) + 2]];
      expect(got.every((v, c) => Math.abs(v - want[c]) <= 12), `frame ${i}: ${got.join(',')} vs ${want.join(',')}`).toBe(true);
    }
  });

  it('animated WebP with ffmpeg libwebp_anim and with the sharp fallback: every frame', async () => {
    const f = await frames(5, 64, 48);
    const viaFfmpeg = (await encodeVideos(f, 8, ['webp'], { ffmpegPath: FFMPEG })).get('webp')!;
    const m1 = await sharp(viaFfmpeg).metadata();
    expect([m1.format, m1.pages, m1.width, m1.pageHeight ?? m1.height]).toEqual(['webp', 5, 64, 48]);
    const viaSharp = await webpWithSharp(f, 8);
    const m2 = await sharp(viaSharp).metadata();
    expect([m2.format, m2.pages, m2.delay]).toEqual(['webp', 5, [125, 125, 125, 125, 125]]);
  });

  it('is reproducible: the same frames give the same bytes', async () => {
    const f = await frames(4, 64, 48);
    const a = await encodeVideos(f, 10, ['mp4', 'gif', 'webp'], { ffmpegPath: FFMPEG });
    const b = await encodeVideos(f, 10, ['mp4', 'gif', 'webp'], { ffmpegPath: FFMPEG });
    for (const k of ['mp4', 'gif', 'webp'] as const) expect(a.get(k)!.equals(b.get(k)!), k).toBe(true);
  });

  it('EncodeFailed when ffmpeg is missing', async () => {
    const e = await encodeVideos(await frames(2, 64, 48), 8, ['mp4'], { ffmpegPath: '/nonexistent/ffmpeg' }).catch((x: unknown) => x);
    expect((e as PipelineError).name).toBe('EncodeFailed');
    expect((e as PipelineError).reason).toMatch(/cannot run \/nonexistent\/ffmpeg/);
  });
});

describe('post-process core', () => {
  const P = 'jobs/j-000000000000000000000000/frames/';
  it('orders frame keys and refuses gaps, wrong counts and no frames', () => {
    expect(orderFrameKeys([`${P}0001.png`, `${P}0000.png`, `${P}notes.txt`], P, 2)).toEqual([`${P}0000.png`, `${P}0001.png`]);
    expect(() => orderFrameKeys([`${P}0000.png`, `${P}0002.png`], P, 2)).toThrow(/0001.png is missing/);
    expect(() => orderFrameKeys([`${P}0000.png`], P, 2)).toThrow(/1 frames, but the job asked for 2/);
    expect(() => orderFrameKeys([], P, 2)).toThrow(expect.objectContaining({ name: 'WorkerOutputNotFound' }));
  });

  it('refuses frames that are not PNG or differ in size', async () => {
    const [a] = await frames(1, 64, 48);
    const [b] = await frames(1, 64, 40);
    await expect(checkFrames([a, b], ['f0', 'f1'])).rejects.toThrow(/f1: 64×40, but frame 0 is 64×48/);
    await expect(checkFrames([a, Buffer.from('GIF89a....')], ['f0', 'f1'])).rejects.toThrow(/f1: not a PNG/);
    expect(await checkFrames([a, a], ['f0', 'f1'])).toEqual({ width: 64, height: 48 });
  });

  it('picks numeric timings out of the worker metadata', () => {
    const m = Buffer.from(JSON.stringify({ format: 'x', timings: { denoiseS: 1.5, totalS: 2, note: 'n' } }));
    expect(parseWorkerMetadata(m, 'm')).toEqual({ timings: { denoiseS: 1.5, totalS: 2 } });
    expect(parseWorkerMetadata(Buffer.from('{}'), 'm')).toEqual({ timings: null });
    expect(() => parseWorkerMetadata(Buffer.from('[1]'), 'm')).toThrow(/must be a JSON object/);
    expect(() => parseWorkerMetadata(Buffer.from('{'), 'm')).toThrow(/not valid JSON/);
  });

  it('carries the worker\'s placement (queue, capacity, Spot cancellations, queue wait) and refuses a malformed one by field', () => {
    const placement = { tier: 'interactive', queue: 'arn:aws:batch:us-east-1:1:job-queue/od', capacity: 'on-demand', spotCancellations: 1, executionStartedAt: '2026-01-01T00:00:00.000Z', resubmittedFrom: 'spot-1', resubmitReason: 'Canceled', queueWaitSeconds: 1260.4 };
    expect(parseWorkerMetadata(Buffer.from(JSON.stringify({ timings: { totalS: 2 }, placement })), 'm')).toEqual({ timings: { totalS: 2 }, placement });
    expect(parseWorkerMetadata(Buffer.from(JSON.stringify({ placement })), 'm')).toEqual({ timings: null, placement });
    expect(() => parseWorkerMetadata(Buffer.from(JSON.stringify({ placement: { ...placement, capacity: 'reserved' } })), 'm')).toThrow(/m placement: invalid placement:\n\s+- capacity:/);
    expect(() => parseWorkerMetadata(Buffer.from(JSON.stringify({ placement: { ...placement, queueWaitSeconds: -1 } })), 'm')).toThrow(/queueWaitSeconds/);
  });

  it('refuses a spec that is not the job’s own or is malformed', () => {
    const s = spec();
    expect(parsePostprocessInput({ spec: s }, 'cil-data')).toEqual(s);
    expect(() => parsePostprocessInput({ ...s, outputPrefix: 'models/' }, null)).toThrow(/outputPrefix must be/);
    expect(() => parsePostprocessInput(s, 'other')).toThrow(/bucket/);
    expect(() => parsePostprocessInput({}, null)).toThrow(expect.objectContaining({ name: 'InvalidEvent' }));
  });

  it('plans outputs and result.json: keys, sizes and SHA-256 computed over the bytes', async () => {
    const s = spec({ outputs: ['mp4', 'png-frames', 'latent-npy'] });
    const f = await frames(4, 96, 64);
    const meta = Buffer.from('{"timings":{"totalS":3}}');
    const { files, result } = await postprocess({ spec: s, frames: f, metadata: meta, latent: Buffer.from('npy') }, { ffmpegPath: FFMPEG });
    const o = `outputs/${s.jobId}/`;
    expect(files.map((x) => x.key)).toEqual([`${o}video.mp4`, `${o}poster.png`, ...[0, 1, 2, 3].map((i) => `${o}frames/000${i}.png`), `${o}latent.npy`, `${o}metadata.json`]);
    expect(JobResult.parse(result)).toEqual(result);
    for (const [i, x] of files.entries()) {
      expect(result.outputs[i]).toEqual({ kind: x.kind, key: x.key, contentType: x.contentType, bytes: x.body.length, sha256: createHash('sha256').update(x.body).digest('hex') });
    }
    expect(files[1].body.equals(f[0])).toBe(true);
    expect(result).toMatchObject({ video: { frames: 4, fps: 10, width: 96, height: 64 }, timings: { totalS: 3 }, resultKey: `${o}result.json`, createdAt: s.createdAt });
    await expect(postprocess({ spec: s, frames: f, metadata: meta, latent: null }, { ffmpegPath: FFMPEG })).rejects.toThrow(/latent-npy/);
    await expect(postprocess({ spec: s, frames: f.slice(1), metadata: meta, latent: null }, { ffmpegPath: FFMPEG })).rejects.toThrow(/3 frames, but the job asked for 4/);
  });
});

describe('post-process handler (s3rver)', () => {
  let s3: LocalS3;
  beforeAll(async () => {
    s3 = await startLocalS3();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  async function workerOutput(s: JobSpec, n: number): Promise<Buffer[]> {
    const f = await frames(n, 96, 64);
    for (const [i, b] of f.entries()) await s3.put(`${s.workPrefix}frames/${String(i).padStart(4, '0')}.png`, b);
    await s3.put(`${s.workPrefix}metadata.json`, '{"format":"cil-metadata/1","timings":{"denoiseS":1.25,"totalS":2.5}}\n');
    return f;
  }

  it('writes every output and result.json; a second run gives identical objects and no new keys; inputs stay', async () => {
    const s = spec({ outputs: ['mp4', 'gif', 'webp'] }, 'inputs/pp1.png');
    await s3.put(s.input.key, 'original upload');
    const f = await workerOutput(s, 4);
    const run = createPostprocessHandler({ s3: s3.s3, dataBucket: s3.bucket, ffmpegPath: FFMPEG });
    const result = await run(s);
    const o = s.outputPrefix;
    const expected = ['metadata.json', 'poster.png', 'result.json', 'video.gif', 'video.mp4', 'video.webp'].map((k) => o + k);
    expect(await s3.list(o)).toEqual(expected);
    for (const entry of result.outputs) {
      const body = (await s3.get(entry.key))!;
      expect([body.length, createHash('sha256').update(body).digest('hex')]).toEqual([entry.bytes, entry.sha256]);
    }
    expect((await s3.get(`${o}metadata.json`))!.equals((await s3.get(`${s.workPrefix}metadata.json`))!)).toBe(true);
    expect((await s3.get(`${o}poster.png`))!.equals(f[0])).toBe(true);
    expect(probe((await s3.get(`${o}video.mp4`))!, 'mp4')).toMatchObject({ codec_name: 'h264', nb_read_frames: '4', r_frame_rate: '10/1' });
    expect(probe((await s3.get(`${o}video.gif`))!, 'gif')).toMatchObject({ nb_read_frames: '4' });
    expect(result.timings).toEqual({ denoiseS: 1.25, totalS: 2.5 });
    expect(JSON.parse((await s3.get(result.resultKey))!.toString('utf8'))).toEqual(result);

    const snapshot = await Promise.all(expected.map(async (k) => (await s3.get(k))!));
    expect(await run({ spec: s })).toEqual(result);
    expect(await s3.list(o)).toEqual(expected);
    for (const [i, k] of expected.entries()) expect((await s3.get(k))!.equals(snapshot[i]), k).toBe(true);
    expect(await s3.list(`${s.workPrefix}frames/`)).toHaveLength(4);
    expect((await s3.get(s.input.key))!.toString()).toBe('original upload');
  });

  it('never rewrites finished outputs: a re-run after result.json returns it and writes nothing; a lost output is restored', async () => {
    const s = spec({}, 'inputs/pp-finished.png');
    await s3.put(s.input.key, 'original upload');
    await workerOutput(s, 4);
    const run = createPostprocessHandler({ s3: s3.s3, dataBucket: s3.bucket, ffmpegPath: FFMPEG });
    const result = await run(s);
    const o = s.outputPrefix;
    const stamp = async (): Promise<string[]> =>
      Promise.all(result.outputs.map(async (e) => {
        const h = await s3.s3.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: e.key }));
        return `${e.key} ${h.ETag} ${h.LastModified?.getTime()}`;
      }));
    const before = await stamp();
    // The worker's frames change (a later, different run of the same job id): the finished outputs stay.
    for (const [i, b] of (await frames(4, 96, 64)).reverse().entries()) await s3.put(`${s.workPrefix}frames/${String(i).padStart(4, '0')}.png`, b);
    await new Promise((r) => setTimeout(r, 1100)); // LastModified has 1 s resolution
    expect(await run(s)).toEqual(result);
    expect(await stamp()).toEqual(before);
    // An output deleted since (by hand, say) is written again rather than left missing.
    await s3.s3.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: `${o}video.gif` }));
    await run(s);
    expect(await s3.list(o)).toContain(`${o}video.gif`);
  });

  it('refuses to write over a result.json that is not this job’s (OutputConflict), writing nothing', async () => {
    const run = createPostprocessHandler({ s3: s3.s3, dataBucket: s3.bucket, ffmpegPath: FFMPEG });
    const a = spec({}, 'inputs/pp-a.png');
    const b = spec({}, 'inputs/pp-b.png');
    await workerOutput(a, 4);
    await workerOutput(b, 4);
    const ra = await run(a);
    await s3.put(`${b.outputPrefix}result.json`, JSON.stringify(ra));
    const e = (await run(b).catch((x: unknown) => x)) as PipelineError;
    expect(e.name).toBe('OutputConflict');
    expect(e.reason).toContain(`belongs to job ${a.jobId}`);
    await s3.put(`${b.outputPrefix}result.json`, 'not json');
    expect(await run(b).catch((x: PipelineError) => x.name)).toBe('OutputConflict');
    expect(await s3.list(b.outputPrefix)).toEqual([`${b.outputPrefix}result.json`]);
  });

  it('refuses missing or inconsistent worker output', async () => {
    const run = createPostprocessHandler({ s3: s3.s3, dataBucket: s3.bucket, ffmpegPath: FFMPEG });
    const none = spec({}, 'inputs/pp2.png');
    expect(await run(none).catch((e: PipelineError) => e.name)).toBe('WorkerOutputNotFound');
    const noMeta = spec({}, 'inputs/pp3.png');
    for (const [i, b] of (await frames(4, 96, 64)).entries()) await s3.put(`${noMeta.workPrefix}frames/000${i}.png`, b);
    expect(await run(noMeta).catch((e: PipelineError) => e.reason)).toMatch(/metadata.json: the worker wrote no metadata/);
    const short = spec({ frames: 5 }, 'inputs/pp4.png');
    await workerOutput(short, 3);
    expect(await run(short).catch((e: PipelineError) => e.name)).toBe('InvalidWorkerOutput');
    expect(await s3.list(short.outputPrefix)).toEqual([]);
  });
});
