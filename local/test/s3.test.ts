/** The S3 stand-in (local/src/s3.ts): s3rver on 127.0.0.1, its object-created events as EventBridge delivers them. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectCreated, LocalS3Server } from '../src/s3.ts';
import { LOCAL_CREDENTIALS, LocalS3Error, localS3Client, localS3Env, startS3Server } from '../src/s3.ts';

const root = mkdtempSync(join(tmpdir(), 'cil-local-s3-'));
let server: LocalS3Server;
const events: ObjectCreated[] = [];

beforeAll(async () => {
  server = await startS3Server({ directory: join(root, 's3'), port: 0, bucket: 'cil-data', onObjectCreated: (e) => events.push(e) });
});
afterAll(async () => {
  await server.close();
  rmSync(root, { recursive: true, force: true });
});

describe('the local S3 server', () => {
  it('stores objects and reports each creation as an S3 "Object Created" detail', async () => {
    const put = await server.s3.send(new PutObjectCommand({ Bucket: 'cil-data', Key: 'inputs/a.png', Body: 'png' }));
    const other = localS3Client(server.endpoint);
    const r = await other.send(new GetObjectCommand({ Bucket: 'cil-data', Key: 'inputs/a.png' }));
    expect(await r.Body!.transformToString()).toBe('png');
    other.destroy();
    expect(events).toHaveLength(1);
    const d = events[0].detail;
    expect(d.bucket).toEqual({ name: 'cil-data' });
    expect(d.object.key).toBe('inputs/a.png');
    expect(d.object.size).toBe(3);
    expect(`"${d.object.etag}"`).toBe(put.ETag);
    expect(Number.isNaN(Date.parse(events[0].time))).toBe(false);
  });

  it('points another process\'s SDK at it, with the fixed credentials and checksums only when required', () => {
    expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
    expect(localS3Env(server.endpoint)).toMatchObject({
      AWS_ENDPOINT_URL_S3: server.endpoint,
      AWS_ACCESS_KEY_ID: LOCAL_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: LOCAL_CREDENTIALS.secretAccessKey,
      AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
    });
  });

  it('a closed server cannot be restarted', async () => {
    const once = await startS3Server({ directory: join(root, 'once'), port: 0, bucket: 'b', onObjectCreated: () => undefined });
    await once.close();
    await expect(once.restart()).rejects.toThrow(LocalS3Error);
  });
});
