/**
 * The handlers' S3 client: a network failure that outlives the SDK's retries is named
 * S3Unreachable (retried by the state machine); an error S3 itself answers keeps its own name,
 * and a body-less 5xx (HEAD) is named by its status.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { HANDLER_TRANSIENT_ERRORS } from '../../infra/lib/workflows/asl.ts';
import { PERMANENT_ERRORS, S3Unreachable } from '../src/errors.ts';
import { headObject, makeS3Client, networkErrorCode, readObject } from '../src/s3.ts';

const env = (port: number): Record<string, string> => ({ S3_ENDPOINT: `http://127.0.0.1:${port}`, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'x' });

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('makeS3Client', () => {
  it('names a refused connection S3Unreachable after the SDK retried it', async () => {
    const port = await freePort();
    const s3 = makeS3Client(env(port), { maxAttempts: 2, credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
    const e = (await readObject(s3, { bucket: 'b', key: 'k' }, 10).catch((x: unknown) => x)) as Error;
    expect(e).toBeInstanceOf(S3Unreachable);
    expect(e.message).toMatch(/GetObjectCommand could not reach the endpoint \(ECONNREFUSED after 2 attempts\)/);
    expect(networkErrorCode(e.cause)).toBe('ECONNREFUSED');
    s3.destroy();
  });

  it('leaves an error S3 answered (500 InternalError) under its own name', async () => {
    let hits = 0;
    const srv = createServer((req, res) => {
      hits++;
      req.resume();
      res.writeHead(500, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>');
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    try {
      const s3 = makeS3Client(env((srv.address() as AddressInfo).port), { maxAttempts: 2, credentials: { accessKeyId: 'x', secretAccessKey: 'x' } });
      const e = (await readObject(s3, { bucket: 'b', key: 'k' }, 10).catch((x: unknown) => x)) as Error;
      expect(e.name).toBe('InternalError');
      expect(hits).toBe(2);
      // HEAD answers carry no body: named by the status, not 'Unknown'.
      const h = (await headObject(s3, { bucket: 'b', key: 'k' }).catch((x: unknown) => x)) as Error;
      expect(h.name).toBe('InternalError');
      s3.destroy();
    } finally {
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });

  it('S3Unreachable is transient: the workflows retry it and it is not a permanent error', () => {
    expect(HANDLER_TRANSIENT_ERRORS).toContain('S3Unreachable');
    expect(PERMANENT_ERRORS).not.toContain('S3Unreachable');
  });
});
