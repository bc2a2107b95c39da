/**
 * A real S3-protocol server (s3rver) on 127.0.0.1 for handler tests: a random free port, a fresh
 * temp directory, one bucket; `stop()` closes it and removes the directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { makeS3Client } from '../../src/s3.ts';

// s3rver ships no type declarations; this is the part of its API the tests use.
interface S3rverInstance {
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;
const S3rver = createRequire(import.meta.url)('s3rver') as S3rverCtor;

export interface LocalS3 {
  readonly endpoint: string;
  readonly bucket: string;
  readonly s3: S3Client;
  put(key: string, body: Buffer | string, metadata?: Record<string, string>): Promise<void>;
  get(key: string): Promise<Buffer | null>;
  list(prefix?: string): Promise<string[]>;
  stop(): Promise<void>;
}

/** An object's bytes, or null when there is no such key (read with the SDK directly, not the code under test). */
export async function getObjectOrNull(s3: S3Client, bucket: string, key: string): Promise<Buffer | null> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await r.Body!.transformToByteArray());
  } catch (e) {
    if ((e as Error).name === 'NoSuchKey') return null;
    throw e;
  }
}

export async function startLocalS3(bucket = 'cil-data'): Promise<LocalS3> {
  const dir = mkdtempSync(join(tmpdir(), 'cil-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  // s3rver accepts any credentials; fixed ones keep the SDK from searching the environment.
  const s3 = makeS3Client({ S3_ENDPOINT: endpoint, AWS_REGION: 'us-east-1' }, { credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } });
  return {
    endpoint,
    bucket,
    s3,
    async put(key, body, metadata) {
      await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: metadata }));
    },
    get: (key) => getObjectOrNull(s3, bucket, key),
    async list(prefix = '') {
      const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      return (r.Contents ?? []).map((c) => c.Key!).sort();
    },
    async stop() {
      s3.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
