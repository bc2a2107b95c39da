/**
 * The sidecar as Validate reads it (issue 19):
 * - defect 1: in AWS a GET of a missing key answers 403 AccessDenied, not 404, unless the role may
 *   list that key's prefix. s3rver has no IAM, so the 403 comes from aws-sdk-client-mock (on one
 *   client instance) and from a raw HTTP server that answers as S3 does; it must become the typed
 *   S3AccessDenied naming the permission, never "missing" and never a bare AccessDenied.
 * - defect 5: the image is pinned by version/ETag at event time; a sidecar written after the image
 *   must be refused (RequestChanged), not used. Reproduced on s3rver: sidecar A, image, sidecar B.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor } from '#shared/schemas';
import { PERMANENT_ERRORS, PipelineError } from '../src/errors.ts';
import { logger } from '../src/logger.ts';
import { headObject, makeS3Client, readObject } from '../src/s3.ts';
import { createValidateHandler } from '../src/validate/handler.ts';
import { noiseImage, tinyManifest, uploadEvent } from './helpers/fixtures.ts';
import type { LocalS3 } from './helpers/s3server.ts';
import { startLocalS3 } from './helpers/s3server.ts';

const CREDS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };

async function errorOf(p: Promise<unknown>): Promise<PipelineError> {
  // A resolved value is kept, so that a wrongly accepted upload shows what job it became.
  const e = await p.then(
    (v: unknown) => v,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(PipelineError);
  return e as PipelineError;
}

/** S3's answer to a GET of a key the caller may not list, as the SDK delivers it. */
function accessDenied(): S3ServiceException {
  return new S3ServiceException({ name: 'AccessDenied', $fault: 'client', $metadata: { httpStatusCode: 403 }, message: 'Access Denied' });
}

beforeAll(() => logger.setLogLevel('SILENT'));

describe('403 on an optional object (defect 1)', () => {
  it('a 403 AccessDenied on the sidecar GET is S3AccessDenied naming s3:ListBucket and the sidecar, not "no sidecar" and not a bare AccessDenied', async () => {
    const png = await noiseImage(100, 100).png().toBuffer();
    const client = new S3Client({ region: 'us-east-1', credentials: CREDS });
    const m = mockClient(client);
    try {
      m.on(HeadObjectCommand, { Key: 'inputs/cat.png' }).resolves({ ContentLength: png.length, ETag: '"e"', LastModified: new Date('2025-01-15T12:00:00Z'), Metadata: {} });
      m.on(GetObjectCommand, { Key: 'inputs/cat.json' }).rejects(accessDenied());
      const validate = createValidateHandler({ s3: client, dataBucket: 'cil-data' });
      const e = await errorOf(validate(uploadEvent('cil-data', 'inputs/cat.png', { size: png.length, etag: 'e' })));
      expect(e.name).toBe('S3AccessDenied');
      expect(e.reason).toContain('s3://cil-data/inputs/cat.json');
      expect(e.reason).toContain('s3:ListBucket');
      expect(e.reason).toContain("s3:prefix 'inputs/*'");
      expect(PERMANENT_ERRORS).toContain('S3AccessDenied');
      // Stopped at the sidecar: no manifest read, nothing written.
      expect(m.commandCalls(GetObjectCommand).map((c) => c.args[0].input.Key)).toEqual(['inputs/cat.json']);
      expect(m.commandCalls(PutObjectCommand)).toHaveLength(0);
    } finally {
      m.restore();
    }
  });

  it('a real S3 403 answer (GET with an AccessDenied body, HEAD without a body) is S3AccessDenied from readObject and headObject', async () => {
    const srv = createServer((req, res) => {
      req.resume();
      res.writeHead(403, { 'content-type': 'application/xml' });
      if (req.method === 'HEAD') res.end();
      else res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    const s3 = makeS3Client({ S3_ENDPOINT: `http://127.0.0.1:${port}`, AWS_REGION: 'us-east-1' }, { maxAttempts: 1, credentials: CREDS });
    try {
      const g = (await readObject(s3, { bucket: 'b', key: 'inputs/x.json' }, 10).catch((x: unknown) => x)) as Error;
      expect(g.name).toBe('S3AccessDenied');
      expect(g.message).toMatch(/GetObject s3:\/\/b\/inputs\/x\.json: 403 AccessDenied/);
      const h = (await headObject(s3, { bucket: 'b', key: 'statistics/s.safetensors' }).catch((x: unknown) => x)) as Error;
      expect(h.name).toBe('S3AccessDenied');
      expect(h.message).toMatch(/HeadObject s3:\/\/b\/statistics\/s\.safetensors: 403/);
      expect(h.message).toContain("s3:prefix 'statistics/*'");
    } finally {
      s3.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});

describe('the sidecar is the one that was there when the image was uploaded (defect 5)', () => {
  let s3: LocalS3;
  let validate: ReturnType<typeof createValidateHandler>;
  beforeAll(async () => {
    s3 = await startLocalS3();
    validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
    await s3.put('models/tiny/manifest.json', JSON.stringify(tinyManifest()));
    await s3.put('models/demo/manifest.json', JSON.stringify(tinyManifest({ id: 'demo' })));
    await s3.put('statistics/tiny-stats.safetensors', Buffer.alloc(64));
  });
  afterAll(async () => {
    await s3?.stop();
  });

  /** Until the clock is in a later second than now: S3's Last-Modified has one-second resolution. */
  async function nextSecond(): Promise<void> {
    await new Promise((r) => setTimeout(r, 1100 - (Date.now() % 1000)));
  }

  async function putImage(key: string): Promise<Record<string, unknown>> {
    const png = await noiseImage(100, 100).png().toBuffer();
    await s3.put(key, png);
    return uploadEvent(s3.bucket, key, { size: png.length, etag: createHash('md5').update(png).digest('hex') });
  }

  it('sidecar A, then the image, then sidecar B: refused as RequestChanged, not a job with B’s prompt', async () => {
    await s3.put('inputs/pin.json', JSON.stringify({ model: 'tiny', prompt: 'prompt A', steps: 3 }));
    const ev = await putImage('inputs/pin.png');
    await nextSecond();
    await s3.put('inputs/pin.json', JSON.stringify({ model: 'tiny', prompt: 'prompt B', steps: 3 }));
    const e = await errorOf(validate(ev));
    expect(e.name).toBe('RequestChanged');
    expect(e.reason).toMatch(/^inputs\/pin\.json: written at \S+Z, after the image inputs\/pin\.png \(\S+Z\)/);
    expect(e.reason).not.toContain('prompt');
    // Nothing written for the job.
    const etag = (ev.detail as { object: { etag: string } }).object.etag;
    expect(await s3.list(`jobs/${jobIdFor(s3.bucket, 'inputs/pin.png', etag)}/`)).toEqual([]);
  });

  it('a sidecar that appears only after the image (none at event time) is refused too', async () => {
    const ev = await putImage('inputs/late.png');
    await nextSecond();
    await s3.put('inputs/late.json', JSON.stringify({ model: 'tiny', prompt: 'late', steps: 3 }));
    expect((await errorOf(validate(ev))).name).toBe('RequestChanged');
  });

  it('the documented order (sidecar, then image) still gives a job with the sidecar’s request', async () => {
    await s3.put('inputs/ok.json', JSON.stringify({ model: 'tiny', prompt: 'prompt A', steps: 3 }));
    await nextSecond();
    const spec = await validate(await putImage('inputs/ok.png'));
    expect(spec.request).toMatchObject({ model: 'tiny', prompt: 'prompt A', steps: 3 });
  });
});
