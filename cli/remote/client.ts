/**
 * The pipeline's client side, as `cil submit | fetch` and `cil local run` use it: the upload key of
 * an image, the upload itself (the sidecar request first, then the image, whose object-created
 * event starts the job; the job id follows from the answer), and copying a job's outputs out of
 * the bucket. What follows a running job is told to an ExecutionObserver.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { isSafeRelativeKey, jobIdFor, sidecarKey } from '#shared/schemas';
import { IMAGE_EXTENSIONS, PREFIX } from '#shared/schemas';
import { listKeys, unquoteEtag } from '../../functions/src/s3.ts';

/** What is told about a running job (cli/progress.ts JobReporter is one). */
export interface ExecutionObserver {
  state(name: string, at: number): void;
  batch(status: string, detail?: string): void;
  progress(p: { readonly phase: string; readonly step?: number; readonly total?: number; readonly elapsedS?: number }): void;
  end(at: number): void;
}

export class UploadKeyError extends Error {
  override readonly name = 'UploadKeyError';
}

/**
 * The key an image is uploaded under: `inputs/<name>-<8 hex>.<ext>`, the hex a hash of the image
 * and the request, so that a sidecar never serves two requests. In an unversioned bucket (local
 * mode) the job id comes from key and ETag: the same image with the same request is the same job,
 * and a new prompt is a new job. In the versioned AWS bucket every upload is a new version, so a
 * new job.
 */
export function uploadKeyFor(fileName: string, image: Uint8Array, request: Readonly<Record<string, unknown>>): string {
  const ext = extname(fileName).toLowerCase();
  if (!(IMAGE_EXTENSIONS as readonly string[]).includes(ext)) throw new UploadKeyError(`${fileName}: the name must end in ${IMAGE_EXTENSIONS.join(', ')}`);
  const stem =
    basename(fileName, extname(fileName))
      .replace(/[^A-Za-z0-9._-]+/g, '-')
      .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '')
      .slice(0, 64) || 'image';
  const h = createHash('sha256').update(image).update('\0').update(JSON.stringify(request)).digest('hex').slice(0, 8);
  const key = `${PREFIX.inputs}${stem}-${h}${ext}`;
  if (!isSafeRelativeKey(key)) throw new UploadKeyError(`cannot derive a safe key from '${fileName}'; pass one`);
  return key;
}

export function contentTypeOf(key: string): string {
  const ext = extname(key).toLowerCase();
  return ext === '.png' ? 'image/png' : ext === '.webp' ? 'image/webp' : 'image/jpeg';
}

export interface Uploaded {
  readonly key: string;
  readonly etag: string;
  readonly versionId: string | null;
  /** The job id the starter derives from the upload (jobIdFor(bucket, key, version id or ETag)). */
  readonly jobId: string;
}

/**
 * Uploads the sidecar request (when one is given), then the image: the image's object-created
 * event is what starts the job, so the request must be there first (docs/functions.md).
 */
export async function uploadImage(s3: Pick<S3Client, 'send'>, bucket: string, key: string, image: Uint8Array | string, o: { readonly request?: Readonly<Record<string, unknown>> | null; readonly contentType?: string } = {}): Promise<Uploaded> {
  if (o.request !== undefined && o.request !== null) {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: sidecarKey(key), Body: JSON.stringify(o.request), ContentType: 'application/json' }));
  }
  const r = await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: image, ContentType: o.contentType }));
  const etag = unquoteEtag(r.ETag) ?? '';
  const versionId = r.VersionId ?? null;
  return { key, etag, versionId, jobId: jobIdFor(bucket, key, versionId ?? etag) };
}

/** Downloads every object under `prefix` into `dir` (keys relative to the prefix); returns the files written. */
export async function downloadPrefix(s3: S3Client, bucket: string, prefix: string, dir: string): Promise<string[]> {
  const keys = await listKeys(s3, bucket, prefix);
  const files: string[] = [];
  for (const key of keys) {
    const rel = key.slice(prefix.length);
    // Keys under a job prefix are the pipeline's own safe keys; refuse anything that would leave `dir`.
    if (rel === '' || rel.split('/').some((seg) => seg === '' || seg === '.' || seg === '..')) continue;
    const file = join(dir, rel);
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, await r.Body!.transformToByteArray());
    files.push(file);
  }
  return files;
}
