/**
 * Small helpers over @aws-sdk/client-s3 for the handlers: a client factory that can point at a
 * local S3-protocol server, and reads that distinguish "missing" (storage/src/location.ts `isMissing`), "too
 * large" and "changed" from real errors (which propagate, so Step Functions retries them).
 */
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import type { Env } from './env.ts';
import { s3Config } from './env.ts';
import { S3AccessDenied, S3Unreachable } from './errors.ts';
import { isMissing } from '../../storage/src/location.ts';

/** Socket-level error codes of Node's HTTP stack that mean "S3 was not reachable", not "S3 said no". */
const NETWORK_ERROR_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ECONNABORTED']);

/** The network error, if `e` is one (the SDK passes Node's socket errors through with their `code`). */
export function networkErrorCode(e: unknown): string | null {
  if (!(e instanceof Error) || e instanceof S3ServiceException) return null;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && NETWORK_ERROR_CODES.has(code) ? code : null;
}

/**
 * A 5xx answer without an error body (HEAD has none) reaches the caller named `Unknown`; named by
 * its status instead (`ServiceUnavailable` for 503, else `InternalError`), it is retried like the
 * same error on a GET. Null when `e` is not such an answer.
 */
export function serverErrorName(e: unknown): string | null {
  if (!(e instanceof S3ServiceException) || !['Unknown', 'UnknownError'].includes(e.name)) return null;
  const status = e.$metadata.httpStatusCode ?? 0;
  if (status < 500 || status > 599) return null;
  return status === 503 ? 'ServiceUnavailable' : 'InternalError';
}

/**
 * Names a network failure that outlived the SDK's retries `S3Unreachable`, and a body-less 5xx by
 * its status, so that Step Functions retries them as transient errors. Added at the `initialize`
 * step: outside the SDK's retry middleware, so it sees only the final error.
 */
export function nameNetworkErrors(client: S3Client): S3Client {
  client.middlewareStack.add(
    (next, context) => async (args) => {
      try {
        return await next(args);
      } catch (e) {
        const serverName = serverErrorName(e);
        if (serverName !== null) throw Object.defineProperty(e as Error, 'name', { value: serverName, configurable: true, writable: true });
        const code = networkErrorCode(e);
        if (code === null) throw e;
        const attempts = (e as { $metadata?: { attempts?: number } }).$metadata?.attempts;
        throw new S3Unreachable(`S3 ${context.commandName ?? 'request'} could not reach the endpoint (${code}${attempts ? ` after ${attempts} attempts` : ''}): ${(e as Error).message}`, { cause: e });
      }
    },
    { step: 'initialize', name: 'cilNameNetworkErrors', override: true },
  );
  return client;
}

/** The S3 client of a handler, from the environment (see env.ts `s3Config`). */
export function makeS3Client(env: Env = process.env, overrides: Partial<S3ClientConfig> = {}): S3Client {
  const c = s3Config(env);
  const config: S3ClientConfig = { region: c.region, forcePathStyle: c.forcePathStyle, ...overrides };
  if (c.endpoint !== null) {
    config.endpoint = c.endpoint;
    // Local S3 servers do not speak the SDK's default aws-chunked CRC32 trailers.
    config.requestChecksumCalculation = 'WHEN_REQUIRED';
    config.responseChecksumValidation = 'WHEN_REQUIRED';
  }
  return nameNetworkErrors(new S3Client(config));
}

export interface ObjectRef {
  readonly bucket: string;
  readonly key: string;
  readonly versionId?: string | null;
  /** Read only if the object still has this ETag (quoted or not). */
  readonly ifMatch?: string | null;
}

export interface ObjectInfo {
  readonly size: number;
  readonly etag: string | null;
  readonly versionId: string | null;
  readonly lastModified: Date | null;
  readonly contentType: string | null;
  /** User metadata (x-amz-meta-*), keys lower-case. */
  readonly metadata: Readonly<Record<string, string>>;
}

export type ReadResult =
  | { readonly kind: 'missing' }
  | { readonly kind: 'changed' }
  | { readonly kind: 'tooLarge'; readonly info: ObjectInfo }
  | { readonly kind: 'ok'; readonly info: ObjectInfo; readonly bytes: Buffer };

function status(e: unknown): number | undefined {
  return e instanceof S3ServiceException ? e.$metadata.httpStatusCode : undefined;
}

/**
 * 403 AccessDenied, or a body-less 403 (HEAD answers have no error code). Other 403 codes
 * (SignatureDoesNotMatch, InvalidAccessKeyId, RequestTimeTooSkewed …) keep their own names.
 */
function isAccessDenied(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  return e.name === 'AccessDenied' || (status(e) === 403 && ['Forbidden', 'Unknown', 'UnknownError'].includes(e.name));
}

/**
 * The typed error for a 403 on a read whose "missing" answer the caller handles. In AWS a GET or
 * HEAD of a key that does not exist answers 403, not 404, unless the caller may s3:ListBucket with
 * an s3:prefix covering the key; reading that as "missing" would hide a real denial, and leaving
 * it a bare AccessDenied hides which permission is lacking. So it names both.
 */
function accessDenied(op: 'GetObject' | 'HeadObject', ref: ObjectRef, e: Error): S3AccessDenied {
  const slash = ref.key.indexOf('/');
  const like = slash >= 0 ? `${ref.key.slice(0, slash + 1)}*` : ref.key;
  const read = ref.versionId ? 's3:GetObjectVersion' : 's3:GetObject';
  return new S3AccessDenied(
    `${op} s3://${ref.bucket}/${ref.key}: 403 AccessDenied. If the key does not exist, S3 answers 403 instead of 404 because ` +
      `this role lacks s3:ListBucket on bucket ${ref.bucket} with s3:prefix '${like}'; if it exists, the role lacks ${read} on it`,
    { cause: e },
  );
}

function isPreconditionFailed(e: unknown): boolean {
  return status(e) === 412 || (e instanceof Error && e.name === 'PreconditionFailed');
}

export function unquoteEtag(etag: string | null | undefined): string | null {
  return etag === undefined || etag === null ? null : etag.replace(/^"|"$/g, '');
}

function quoteEtag(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}

interface HeadLike {
  ContentLength?: number;
  ETag?: string;
  VersionId?: string;
  LastModified?: Date;
  ContentType?: string;
  Metadata?: Record<string, string>;
}

function infoOf(r: HeadLike): ObjectInfo {
  return {
    size: r.ContentLength ?? 0,
    etag: unquoteEtag(r.ETag),
    versionId: r.VersionId ?? null,
    lastModified: r.LastModified ?? null,
    contentType: r.ContentType ?? null,
    metadata: r.Metadata ?? {},
  };
}

/** HEAD: the object's size, ETag and metadata, or null when it does not exist. */
export async function headObject(s3: S3Client, ref: ObjectRef): Promise<ObjectInfo | null> {
  try {
    const r = await s3.send(new HeadObjectCommand({ Bucket: ref.bucket, Key: ref.key, VersionId: ref.versionId ?? undefined }));
    return infoOf(r);
  } catch (e) {
    if (isMissing(e)) return null;
    if (isAccessDenied(e)) throw accessDenied('HeadObject', ref, e as Error);
    throw e;
  }
}

/**
 * GET into memory, refusing (without reading the body) an object over `maxBytes`. 'changed' when
 * `ifMatch` no longer matches.
 */
export async function readObject(s3: S3Client, ref: ObjectRef, maxBytes: number): Promise<ReadResult> {
  let r;
  try {
    r = await s3.send(
      new GetObjectCommand({
        Bucket: ref.bucket,
        Key: ref.key,
        VersionId: ref.versionId ?? undefined,
        IfMatch: ref.ifMatch ? quoteEtag(ref.ifMatch) : undefined,
      }),
    );
  } catch (e) {
    if (isMissing(e)) return { kind: 'missing' };
    if (isPreconditionFailed(e)) return { kind: 'changed' };
    if (isAccessDenied(e)) throw accessDenied('GetObject', ref, e as Error);
    throw e;
  }
  const info = infoOf(r);
  // Checked here too: not every S3-compatible server honours If-Match.
  if (ref.ifMatch && info.etag !== null && info.etag !== unquoteEtag(ref.ifMatch)) {
    (r.Body as { destroy?: () => void } | undefined)?.destroy?.();
    return { kind: 'changed' };
  }
  if (info.size > maxBytes) {
    const body = r.Body as { destroy?: () => void } | undefined;
    body?.destroy?.();
    return { kind: 'tooLarge', info };
  }
  const bytes = r.Body ? Buffer.from(await r.Body.transformToByteArray()) : Buffer.alloc(0);
  // A server that sent no Content-Length: check what actually arrived.
  if (bytes.length > maxBytes) return { kind: 'tooLarge', info: { ...info, size: bytes.length } };
  return { kind: 'ok', info: { ...info, size: bytes.length }, bytes };
}

export async function putObject(s3: S3Client, bucket: string, key: string, body: Buffer | string, contentType: string): Promise<void> {
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, ContentType: contentType }));
}

/** Every key under a prefix (all pages), in S3's (UTF-8 binary) order. */
export async function listKeys(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of r.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Runs `fn` over `items` with at most `limit` in flight; results in input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
