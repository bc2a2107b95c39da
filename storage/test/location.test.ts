/**
 * storage/src/location.ts, the one module for S3 and local locations: the parse (with the
 * caller's error type), the one "nothing is there" test, and reads of paths and s3:// URIs against
 * a real S3-protocol server on 127.0.0.1.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseS3Uri, S3UriError } from '#shared/schemas';
import { getObjectBytes, isMissing, locationExists, LocationError, parseLocation, readLocation, readOptionalLocation } from '../src/location.ts';
import { startLocalS3 } from '../../functions/test/helpers/s3server.ts';
import type { LocalS3 } from '../../functions/test/helpers/s3server.ts';

describe('parseS3Uri (#shared/schemas) and parseLocation', () => {
  it('splits bucket and key; a prefix gets its trailing slash', () => {
    expect(parseS3Uri('s3://cil-data/jobs/j-1/input.png')).toEqual({ bucket: 'cil-data', key: 'jobs/j-1/input.png' });
    expect(parseS3Uri('s3://cil-data')).toEqual({ bucket: 'cil-data', key: '' });
    expect(parseS3Uri('s3://cil-data/models/demo', { what: 'prefix' })).toEqual({ bucket: 'cil-data', key: 'models/demo/' });
    expect(parseS3Uri('s3://cil-data/', { what: 'prefix' })).toEqual({ bucket: 'cil-data', key: '' });
  });

  it('refuses bad buckets and dot segments, with the caller\'s error type', () => {
    expect(() => parseS3Uri('s3://Bad_Bucket/k')).toThrow(S3UriError);
    expect(() => parseS3Uri('s3://Bad_Bucket/k')).toThrow("'s3://Bad_Bucket/k' is not an s3://bucket/key URI");
    expect(() => parseLocation('s3://b/k')).toThrow(LocationError);
    expect(() => parseLocation('s3://cil-data/a/../b')).toThrow("'s3://cil-data/a/../b': '.' and '..' are not allowed in the key");
    expect(() => parseLocation('s3://cil-data/./p', 'prefix')).toThrow("'s3://cil-data/./p': '.' and '..' are not allowed in the prefix");
  });
});

describe('isMissing', () => {
  it('is true for S3\'s missing answers and a file\'s ENOENT, false for anything else', () => {
    for (const name of ['NoSuchKey', 'NotFound', 'NoSuchVersion']) expect(isMissing(Object.assign(new Error('x'), { name }))).toBe(true);
    expect(isMissing(Object.assign(new Error('x'), { name: 'Unknown', $metadata: { httpStatusCode: 404 } }))).toBe(true);
    expect(isMissing(Object.assign(new Error('x'), { code: 'ENOENT' }))).toBe(true);
    expect(isMissing(Object.assign(new Error('x'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } }))).toBe(false);
    expect(isMissing(Object.assign(new Error('x'), { code: 'EACCES' }))).toBe(false);
    expect(isMissing('NoSuchKey')).toBe(false);
    expect(isMissing(null)).toBe(false);
  });
});

describe('reads of paths and s3:// URIs', () => {
  let s3: LocalS3;
  let dir: string;
  beforeAll(async () => {
    s3 = await startLocalS3();
    await s3.put('inputs/a.bin', Buffer.from('abc'));
    dir = mkdtempSync(join(tmpdir(), 'cil-location-'));
    writeFileSync(join(dir, 'a.bin'), 'xyz');
  });
  afterAll(async () => {
    await s3.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads an object or a file whole; null (optional) or the underlying error (required) when missing', async () => {
    expect(Buffer.from(await readLocation(`s3://${s3.bucket}/inputs/a.bin`, s3.s3)).toString()).toBe('abc');
    expect(Buffer.from(await readLocation(join(dir, 'a.bin'))).toString()).toBe('xyz');
    expect(await readOptionalLocation(`s3://${s3.bucket}/inputs/none.bin`, s3.s3)).toBeNull();
    expect(await readOptionalLocation(join(dir, 'none.bin'))).toBeNull();
    await expect(readLocation(`s3://${s3.bucket}/inputs/none.bin`, s3.s3)).rejects.toMatchObject({ name: 'NoSuchKey' });
    await expect(readLocation(join(dir, 'none.bin'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('an object read needs a key: a bare bucket is a LocationError, before any request', async () => {
    await expect(readOptionalLocation(`s3://${s3.bucket}`, s3.s3)).rejects.toThrow(LocationError);
  });

  it('getObjectBytes and locationExists', async () => {
    expect(Buffer.from((await getObjectBytes(s3.s3, s3.bucket, 'inputs/a.bin'))!).toString()).toBe('abc');
    expect(await getObjectBytes(s3.s3, s3.bucket, 'inputs/none.bin')).toBeNull();
    expect(await locationExists(`s3://${s3.bucket}/inputs/a.bin`, s3.s3)).toBe(true);
    expect(await locationExists(`s3://${s3.bucket}/inputs/none.bin`, s3.s3)).toBe(false);
    expect(await locationExists(join(dir, 'a.bin'))).toBe(true);
    expect(await locationExists(join(dir, 'none.bin'))).toBe(false);
  });
});
