/**
 * The reconciler's S3 side: recent uploads under inputs/ (every version, in a versioned bucket;
 * the current objects, in an unversioned one such as the local S3 server) and key existence.
 */
import { ListObjectsV2Command, ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { PREFIX } from '#shared/schemas';
import { headObject } from '../s3.ts';
import type { ListedUpload } from './core.ts';

/** Every version under inputs/ modified at or after `since` (delete markers are not uploads). */
export async function* listUploadVersions(s3: Pick<S3Client, 'send'>, bucket: string, since: Date): AsyncIterable<ListedUpload> {
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  for (;;) {
    const r = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: PREFIX.inputs, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }));
    for (const v of r.Versions ?? []) {
      if (!v.Key || !v.LastModified || v.LastModified < since) continue;
      yield { key: v.Key, versionId: v.VersionId && v.VersionId !== 'null' ? v.VersionId : null, etag: v.ETag ?? null, size: v.Size ?? null, lastModified: v.LastModified };
    }
    if (!r.IsTruncated) return;
    keyMarker = r.NextKeyMarker;
    versionIdMarker = r.NextVersionIdMarker;
  }
}

/** The current objects under inputs/ modified at or after `since` (an unversioned bucket). */
export async function* listUploadObjects(s3: Pick<S3Client, 'send'>, bucket: string, since: Date): AsyncIterable<ListedUpload> {
  let token: string | undefined;
  for (;;) {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: PREFIX.inputs, ContinuationToken: token }));
    for (const o of r.Contents ?? []) {
      if (!o.Key || !o.LastModified || o.LastModified < since) continue;
      yield { key: o.Key, versionId: null, etag: o.ETag ?? null, size: o.Size ?? null, lastModified: o.LastModified };
    }
    if (!r.IsTruncated) return;
    token = r.NextContinuationToken;
  }
}

export async function keyExists(s3: S3Client, bucket: string, key: string): Promise<boolean> {
  return (await headObject(s3, { bucket, key })) !== null;
}
