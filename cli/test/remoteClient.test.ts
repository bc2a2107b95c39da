/** The client side of the pipeline (cli/remote/client.ts): upload keys, the upload, downloading a prefix. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor } from '#shared/schemas';
import { startLocalS3 } from '../../functions/test/helpers/s3server.ts';
import type { LocalS3 } from '../../functions/test/helpers/s3server.ts';
import { executionArnOf } from '../../infra/lib/names.ts';
import { contentTypeOf, downloadPrefix, uploadImage, uploadKeyFor, UploadKeyError } from '../remote/client.ts';

describe('names', () => {
  it('upload keys: a safe stem, a hash of image and request, the extension', () => {
    const img = Buffer.from('img');
    const k = uploadKeyFor('My Photo (1).JPG', img, { prompt: 'a' });
    expect(k).toMatch(/^inputs\/My-Photo-1-[0-9a-f]{8}\.jpg$/);
    expect(uploadKeyFor('My Photo (1).JPG', img, { prompt: 'a' })).toBe(k);
    expect(uploadKeyFor('My Photo (1).JPG', img, { prompt: 'b' })).not.toBe(k);
    expect(uploadKeyFor('..png', img, {})).toMatch(/^inputs\/image-[0-9a-f]{8}\.png$/);
    expect(() => uploadKeyFor('notes.txt', img, {})).toThrow(UploadKeyError);
    expect(executionArnOf('arn:aws:states:r:1:stateMachine:Gen', 'j-1')).toBe('arn:aws:states:r:1:execution:Gen:j-1');
    expect([contentTypeOf('a.PNG'), contentTypeOf('a.webp'), contentTypeOf('a.jpeg')]).toEqual(['image/png', 'image/webp', 'image/jpeg']);
  });
});

describe('upload and download against an S3-protocol server on 127.0.0.1', () => {
  let s3: LocalS3;
  let dir: string;
  beforeAll(async () => {
    s3 = await startLocalS3();
    dir = mkdtempSync(join(tmpdir(), 'cil-remote-client-'));
  });
  afterAll(async () => {
    await s3.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('puts the sidecar request before the image and derives the job id from the key and ETag', async () => {
    const u = await uploadImage(s3.s3, s3.bucket, 'inputs/a.png', Buffer.from('png'), { request: { prompt: 'p' }, contentType: 'image/png' });
    expect(u.etag).toMatch(/^[0-9a-f]{32}$/);
    expect(u.jobId).toBe(jobIdFor(s3.bucket, 'inputs/a.png', u.versionId ?? u.etag));
    expect(JSON.parse((await s3.get('inputs/a.json'))!.toString())).toEqual({ prompt: 'p' });
    const plain = await uploadImage(s3.s3, s3.bucket, 'inputs/b.png', Buffer.from('png'), { request: null });
    expect(plain.key).toBe('inputs/b.png');
    expect(await s3.get('inputs/b.json')).toBeNull();
  });

  it('downloads every object under a prefix, keys relative to it', async () => {
    await s3.put('outputs/j-1/video.mp4', 'mp4');
    await s3.put('outputs/j-1/frames/0000.png', 'f0');
    const files = await downloadPrefix(s3.s3, s3.bucket, 'outputs/j-1/', join(dir, 'out'));
    expect(files.map((f) => f.slice(join(dir, 'out').length + 1)).sort()).toEqual(['frames/0000.png', 'video.mp4']);
    expect(readFileSync(join(dir, 'out', 'video.mp4'), 'utf8')).toBe('mp4');
  });
});
