/** Validate end to end against a real S3-protocol server (s3rver on 127.0.0.1). */
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseJobSpec } from '#shared/schemas';
import { jobIdFor } from '#shared/schemas';
import { PipelineError } from '../src/errors.ts';
import { logger } from '../src/logger.ts';
import { seedForJob } from '../src/validate/core.ts';
import { createValidateHandler } from '../src/validate/handler.ts';
import { handmadePng, meanRgb, noiseImage, pseudoRandomBytes, tinyManifest, uploadEvent } from './helpers/fixtures.ts';
import type { LocalS3 } from './helpers/s3server.ts';
import { startLocalS3 } from './helpers/s3server.ts';

let s3: LocalS3;
let validate: ReturnType<typeof createValidateHandler>;

beforeAll(async () => {
  logger.setLogLevel('SILENT');
  s3 = await startLocalS3();
  validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
  await s3.put('models/tiny/manifest.json', JSON.stringify(tinyManifest()));
  // The default model (a request without a sidecar asks for 'demo').
  await s3.put('models/demo/manifest.json', JSON.stringify(tinyManifest({ id: 'demo' })));
  await s3.put('models/broken/manifest.json', '{"format": "cil-bundle/1"');
  await s3.put('statistics/tiny-stats.safetensors', Buffer.alloc(64));
});
afterAll(async () => {
  await s3?.stop();
});

/** Uploads the sidecar (if any), then the image, as documented; returns the event. */
async function upload(key: string, body: Buffer, o: { sidecar?: string | Buffer; metadata?: Record<string, string> } = {}): Promise<Record<string, unknown>> {
  // Sidecar first: one written after the image is refused (RequestChanged).
  if (o.sidecar !== undefined) await s3.put(key.replace(/\.[^./]+$/, '.json'), o.sidecar);
  await s3.put(key, body, o.metadata);
  const etag = (await import('node:crypto')).createHash('md5').update(body).digest('hex');
  return uploadEvent(s3.bucket, key, { size: body.length, etag });
}

async function errorOf(p: Promise<unknown>): Promise<PipelineError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(PipelineError);
  return e as PipelineError;
}

describe('validate handler (s3rver)', () => {
  it('writes the normalised image and the spec under the job, returns the spec, leaves the upload alone', async () => {
    const png = await noiseImage(200, 150).png().toBuffer();
    const ev = await upload('inputs/cats/tabby.png', png, { sidecar: JSON.stringify({ model: 'tiny', prompt: 'a cat', steps: 5 }) });
    const spec = await validate(ev);
    const jobId = jobIdFor(s3.bucket, 'inputs/cats/tabby.png', (ev.detail as { object: { etag: string } }).object.etag);
    expect(spec.jobId).toBe(jobId);
    expect(spec.request).toMatchObject({ model: 'tiny', prompt: 'a cat', steps: 5, start: 940, seed: seedForJob(jobId), frames: 4, fps: 10 });
    expect(spec.input).toEqual({ key: 'inputs/cats/tabby.png', versionId: null, etag: (ev.detail as { object: { etag: string } }).object.etag, size: png.length });
    expect(spec.createdAt).toBe('2025-01-15T12:00:00.000Z');
    expect(await s3.list(`jobs/${jobId}/`)).toEqual([`jobs/${jobId}/input.png`, `jobs/${jobId}/request.json`]);
    const written = JSON.parse((await s3.get(`jobs/${jobId}/request.json`))!.toString('utf8')) as unknown;
    expect(parseJobSpec(written, 'request.json')).toEqual(spec);
    const meta = await sharp((await s3.get(spec.imageKey))!).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels, meta.space]).toEqual(['png', 96, 64, 3, 'srgb']);
    expect((await s3.get('inputs/cats/tabby.png'))!.equals(png)).toBe(true);

    // Idempotent: the same event again gives the same spec and the same bytes.
    const before = (await s3.get(`jobs/${jobId}/request.json`))!;
    const again = await validate(ev);
    expect(again).toEqual(spec);
    expect((await s3.get(`jobs/${jobId}/request.json`))!.equals(before)).toBe(true);
  });

  it('reads the request from x-amz-meta-request when there is no sidecar; the sidecar wins over it', async () => {
    const png = await noiseImage(100, 100).png().toBuffer();
    const a = await validate(await upload('inputs/meta.png', png, { metadata: { request: '{"model":"tiny","steps":3}' } }));
    expect(a.request.steps).toBe(3);
    const b = await validate(await upload('inputs/both.png', png, { metadata: { request: '{"model":"tiny","steps":3}' }, sidecar: '{"model":"tiny","steps":6}' }));
    expect(b.request.steps).toBe(6);
  });

  it('never logs the prompt at info', async () => {
    const secret = 'a secret prompt about a tabby';
    const lines: string[] = [];
    const capture = (s: string | Uint8Array): boolean => {
      lines.push(String(s));
      return true;
    };
    const spies = [vi.spyOn(process.stdout, 'write').mockImplementation(capture), vi.spyOn(process.stderr, 'write').mockImplementation(capture)];
    logger.setLogLevel('INFO');
    try {
      await validate(await upload('inputs/secret.png', await noiseImage(100, 100).png().toBuffer(), { sidecar: JSON.stringify({ model: 'tiny', prompt: secret }) }));
      await validate(await upload('inputs/secret2.png', await noiseImage(100, 100).png().toBuffer(), { sidecar: JSON.stringify({ model: 'tiny', prompt: secret + 'x'.repeat(3000) }) })).catch(() => undefined);
    } finally {
      logger.setLogLevel('SILENT');
      for (const spy of spies) spy.mockRestore();
    }
    const out = lines.join('');
    expect(out).toContain('upload valid');
    expect(out).toContain('upload refused');
    expect(out).not.toContain('secret prompt');
  });

  // The bad-input list of issue 5, end to end: each ends in a typed error or a correct image, and
  // the upload is byte-identical afterwards.
  const sidecarCases: [string, string | Buffer, RegExp][] = [
    ['a sidecar with unknown fields', '{"model":"tiny","stpes":5,"colour":"red"}', /unknown fields "stpes", "colour"/],
    ['a sidecar with wrong types', '{"model":"tiny","steps":"50","seed":1.5,"outputs":"mp4"}', /steps:[\s\S]*seed:[\s\S]*outputs:/],
    ['a sidecar with out-of-range values', '{"model":"tiny","steps":0,"eta":2,"fps":120}', /steps: Too small[\s\S]*eta: Too big[\s\S]*fps: Too big/],
    ['a 100 kB prompt', JSON.stringify({ model: 'tiny', prompt: 'p'.repeat(100_000) }), /prompt: Too big: expected string to have <=2000 characters/],
    ['a sidecar that is not JSON', '{"model": tiny}', /not valid JSON/],
  ];
  type Case = { name: string; key: string; body: () => Promise<Buffer>; sidecar?: string | Buffer; stored: boolean; expect: string; reason?: RegExp };
  const noisePng = () => noiseImage(200, 150, 5).png().toBuffer();
  const cases: Case[] = [
    { name: 'zero-byte file', key: 'inputs/bad/empty.png', body: () => Promise.resolve(Buffer.alloc(0)), stored: true, expect: 'InvalidImage', reason: /empty \(0 bytes\)/ },
    { name: 'random bytes named .png', key: 'inputs/bad/random.png', body: () => Promise.resolve(pseudoRandomBytes(4096, 11)), stored: true, expect: 'InvalidImage', reason: /not a PNG, JPEG or WebP/ },
    { name: 'truncated PNG', key: 'inputs/bad/trunc.png', body: async () => { const b = await noisePng(); return b.subarray(0, b.length >> 1); }, stored: true, expect: 'InvalidImage', reason: /truncated PNG/ },
    { name: 'truncated JPEG', key: 'inputs/bad/trunc.jpg', body: async () => { const b = await noiseImage(200, 150).jpeg().toBuffer(); return b.subarray(0, b.length >> 1); }, stored: true, expect: 'InvalidImage', reason: /truncated JPEG/ },
    { name: 'PNG declaring 50000×50000', key: 'inputs/bad/bomb.png', body: () => Promise.resolve(handmadePng(50000, 50000)), stored: true, expect: 'InvalidImage', reason: /2500000000 pixels is over the limit/ },
    { name: '1×1 image', key: 'inputs/bad/dot.png', body: () => noiseImage(1, 1).png().toBuffer(), stored: true, expect: 'InvalidImage', reason: /1×1 is too small/ },
    { name: 'CMYK JPEG', key: 'inputs/ok/cmyk.jpg', body: () => sharp({ create: { width: 120, height: 90, channels: 3, background: { r: 200, g: 50, b: 50 } } }).toColourspace('cmyk').jpeg().toBuffer(), stored: true, expect: 'ok' },
    { name: 'EXIF-rotated photo', key: 'inputs/ok/rotated.jpg', body: () => noiseImage(150, 100).jpeg().withMetadata({ orientation: 6 }).toBuffer(), stored: true, expect: 'ok' },
    ...sidecarCases.map(([name, sidecar, reason]): Case => ({ name, key: `inputs/req/${name.replace(/[^a-z0-9]+/g, '-')}.png`, body: noisePng, sidecar, stored: true, expect: 'InvalidRequest', reason })),
    { name: 'a key with ..', key: 'inputs/../models/tiny/x.png', body: noisePng, stored: false, expect: 'InvalidKey', reason: /refused/ },
    { name: 'a key with spaces', key: 'inputs/my cat.png', body: noisePng, stored: true, expect: 'InvalidKey', reason: /"inputs\/my cat.png" refused/ },
    { name: 'a key with unicode', key: 'inputs/kätzchen.png', body: noisePng, stored: true, expect: 'InvalidKey', reason: /refused/ },
    { name: 'a key with a leading /', key: '/inputs/cat.png', body: noisePng, stored: false, expect: 'InvalidKey', reason: /must start with 'inputs\/'/ },
    { name: 'an unknown model', key: 'inputs/bad/nomodel.png', body: noisePng, sidecar: '{"model":"nope"}', stored: true, expect: 'ModelNotFound', reason: /no manifest at models\/nope\/manifest.json/ },
    { name: 'a broken manifest', key: 'inputs/bad/broken.png', body: noisePng, sidecar: '{"model":"broken"}', stored: true, expect: 'ModelNotFound', reason: /not valid JSON/ },
    { name: 'missing statistics', key: 'inputs/bad/nostats.png', body: noisePng, sidecar: '{"model":"tiny","statistics":"absent"}', stored: true, expect: 'StatisticsNotFound', reason: /statistics\/absent.safetensors does not exist/ },
  ];

  it.each(cases)('$name → $expect', async (c) => {
    const body = await c.body();
    const ev = c.stored ? await upload(c.key, body, { sidecar: c.sidecar }) : uploadEvent(s3.bucket, c.key, { size: body.length });
    const jobs = await s3.list('jobs/');
    if (c.expect === 'ok') {
      const spec = await validate(ev);
      const img = await sharp((await s3.get(spec.imageKey))!).raw().toBuffer({ resolveWithObject: true });
      expect([img.info.width, img.info.height, img.info.channels]).toEqual([96, 64, 3]);
      // CMYK → sRGB is approximate without the source profile (see validate-image.test.ts).
      if (c.name === 'CMYK JPEG') expect(meanRgb(img.data, 96, 0, 0, 96, 64).every((v, i) => Math.abs(v - [200, 50, 50][i]) <= 30)).toBe(true);
    } else {
      const e = await errorOf(validate(ev));
      expect(e.name).toBe(c.expect);
      expect(e.toJSON()).toEqual({ error: c.expect, reason: e.message });
      if (c.reason) expect(e.reason).toMatch(c.reason);
      expect(await s3.list('jobs/')).toEqual(jobs); // nothing written for a refused upload
    }
    if (c.stored) expect((await s3.get(c.key))!.equals(body)).toBe(true);
  });

  it('InputNotFound when the upload is gone or replaced since the event', async () => {
    expect((await errorOf(validate(uploadEvent(s3.bucket, 'inputs/never.png')))).name).toBe('InputNotFound');
    const ev = await upload('inputs/replaced.png', await noiseImage(100, 100, 1).png().toBuffer());
    await s3.put('inputs/replaced.png', await noiseImage(100, 100, 2).png().toBuffer());
    const e = await errorOf(validate(ev));
    expect(e.name).toBe('InputNotFound');
    expect(e.reason).toMatch(/replaced since the event/);
  });

  it('takes the generation input of a batch-manifest line: inline request, image under batches/', async () => {
    const png = await noiseImage(120, 100).png().toBuffer();
    await s3.put('batches/b1/img.png', png);
    await s3.put('batches/b1/img.json', '{"model":"tiny","steps":9}'); // a sidecar is not read for inline requests
    const jobId = 'j-00000000000000000000abcd';
    const input = { jobId, bucket: s3.bucket, key: 'batches/b1/img.png', versionId: null, etag: null, size: null, request: { model: 'tiny', steps: 2 }, batch: { name: 'b1', manifestKey: 'batches/b1.jsonl', line: 1 } };
    const spec = await validate(input);
    expect(spec).toMatchObject({ jobId, input: { key: 'batches/b1/img.png', size: png.length }, request: { steps: 2, seed: seedForJob(jobId) } });
    const bad = await errorOf(validate({ ...input, jobId: 'j-00000000000000000000abce', request: { model: 'tiny', steps: 'x' } }));
    expect(bad.reason).toMatch(/^batches\/b1.jsonl line 1: invalid job request/);
  });

  it('InvalidEvent for another bucket or a malformed event', async () => {
    expect((await errorOf(validate(uploadEvent('someone-else', 'inputs/a.png')))).name).toBe('InvalidEvent');
    expect((await errorOf(validate({ hello: 'world' }))).name).toBe('InvalidEvent');
  });
});
