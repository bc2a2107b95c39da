/**
 * Locations: an `s3://bucket/key` URI or a local path, read whole. One parser (`parseS3Uri` of
 * #shared/schemas), one test for "nothing is there" (`isMissing`: S3's NoSuchKey, NotFound,
 * NoSuchVersion or a 404, or a file's ENOENT), and reads that answer null for a missing object or
 * file. Used by the functions (s3.ts), the worker (gpu-worker/src/sink.ts, stats/io.ts), local
 * mode and the remote CLI. Other errors (a 403, a network failure) always propagate.
 */
import { readFile, stat } from 'node:fs/promises';
import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { isS3Uri, parseS3Uri } from '#shared/schemas';
import type { S3Location } from '#shared/schemas';

/** A location that cannot be used (bad URI, missing file or folder, nothing to list). */
export class LocationError extends Error {
  override readonly name = 'LocationError';
}

/** Error names S3 answers a missing object (or version) with: GET has a code, HEAD only a status. */
const MISSING_NAMES: ReadonlySet<string> = new Set(['NoSuchKey', 'NotFound', 'NoSuchVersion']);

/** True when `e` says the object or file is not there (and nothing else went wrong). */
export function isMissing(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const err = e as { name?: unknown; code?: unknown; $metadata?: { httpStatusCode?: number } };
  return err.code === 'ENOENT' || err.$metadata?.httpStatusCode === 404 || (typeof err.name === 'string' && MISSING_NAMES.has(err.name));
}

/** `s3://bucket/key` (or `…/prefix/` with `what: 'prefix'`) split, a bad URI as LocationError. */
export function parseLocation(uri: string, what: 'key' | 'prefix' = 'key'): S3Location {
  return parseS3Uri(uri, { what, error: (m) => new LocationError(m) });
}

/** The object's bytes, or null when it does not exist. */
export async function getObjectBytes(s3: Pick<S3Client, 'send'>, bucket: string, key: string): Promise<Uint8Array | null> {
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return await r.Body!.transformToByteArray();
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}

/** An object location must name a key, not a bucket or a prefix. */
function objectOf(location: string): S3Location {
  const loc = parseLocation(location);
  if (loc.key === '') throw new LocationError(`'${location}' is not an s3://bucket/key URI`);
  return loc;
}

/** The bytes at a path or an S3 URI; a missing one is an error (the SDK's or the file system's). */
export async function readLocation(location: string, s3?: S3Client): Promise<Uint8Array> {
  if (!isS3Uri(location)) return readFile(location);
  const { bucket, key } = objectOf(location);
  const r = await (s3 ?? new S3Client({})).send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return r.Body!.transformToByteArray();
}

/** The bytes at a path or an S3 URI, or null when nothing is there. */
export async function readOptionalLocation(location: string, s3?: S3Client): Promise<Uint8Array | null> {
  try {
    return await readLocation(location, s3);
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
}

/** Whether something is at a path (file or folder) or an S3 URI (an object). */
export async function locationExists(location: string, s3?: S3Client): Promise<boolean> {
  try {
    if (!isS3Uri(location)) {
      await stat(location);
      return true;
    }
    const { bucket, key } = objectOf(location);
    await (s3 ?? new S3Client({})).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}
