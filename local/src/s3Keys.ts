/**
 * What the local S3 refuses before s3rver touches its file store (docs/local.md, *What is real
 * and what is stood in*).
 *
 * s3rver keeps each object as files at `<directory>/<bucket>/<key>._S3rver_object` (plus
 * `._S3rver_metadata.json` and `._S3rver_object.md5`), joined with `path.join`. S3 keys are
 * opaque strings, but a file path is not: a `..` segment climbs out of its folder
 * (`inputs/../models/demo/manifest.json` overwrote the demo model; `inputs/../../../x` wrote
 * outside the data folder), `.` and empty segments make two keys one file, a NUL cannot be in a
 * file name, and a segment longer than the file system's 255 bytes made the write stream fail
 * with ENAMETOOLONG — an error s3rver leaves unhandled, which took `cil local up` down with every
 * job in flight.
 *
 * S3 itself stores every such key literally (up to 1024 bytes). Storing them literally here would
 * mean replacing s3rver's on-disk layout, so the local S3 answers them instead with an S3 error
 * (400, S3's XML body) that names the key, the rule and the reason. Keys over 1024 bytes get
 * S3's own `KeyTooLongError`; everything else S3 would accept gets `InvalidArgument`. Keys the
 * pipeline writes (`inputs/<name>-<hash>.<ext>`, `outputs/<job>/…`, `models/…`) are never
 * refused.
 *
 * The check runs twice: on each request, as a Koa middleware ahead of s3rver's router (the key of
 * the path, the `x-amz-copy-source` header, `uploadId` and `partNumber`, which s3rver also joins
 * into paths); and in the store itself, for the keys s3rver reads from request bodies (a
 * multi-object DeleteObjects, a browser-form POST) and as a backstop.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** S3's limit on a key: 1024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;
/** The longest file name most file systems allow (ext4, XFS, APFS, NTFS: 255). */
export const NAME_MAX_BYTES = 255;
/** The longest suffix s3rver appends to a key's last segment. */
const LONGEST_SUFFIX = '._S3rver_metadata.json';
/** The longest last segment the local S3 can store (255 − 22 bytes of s3rver's suffix). */
export const MAX_LAST_SEGMENT_BYTES = NAME_MAX_BYTES - LONGEST_SUFFIX.length;
/** Linux's PATH_MAX, less one for the terminating NUL. */
const MAX_PATH_BYTES = 4095;
/** s3rver's upload ids: 16 random bytes in hex. */
const UPLOAD_ID = /^[0-9a-f]{32}$/;
/** A bucket name the file store can hold as one folder: no '/', no '.'/'..', no NUL. */
const BUCKET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/;

/** Why the local S3 refuses a request: an S3 error code (its HTTP status follows from it) and a message. */
export interface S3Refusal {
  readonly code: 'KeyTooLongError' | 'InvalidArgument' | 'InvalidBucketName' | 'NoSuchUpload';
  readonly message: string;
}

/**
 * A key as it can appear in a message: JSON-quoted (control characters escaped, so that an error
 * body stays well-formed XML and a terminal shows no escape sequence) and cut after 120 characters.
 */
export function quoteKey(key: string): string {
  return key.length > 120 ? `${JSON.stringify(key.slice(0, 120))}… (${key.length} characters)` : JSON.stringify(key);
}

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/**
 * Why the local S3 cannot store `key` under `bucket` (null: it can). `root` is the store's folder
 * (for the whole path's length).
 */
export function localKeyRefusal(key: string, o: { readonly bucket?: string; readonly root?: string } = {}): S3Refusal | null {
  const q = quoteKey(key);
  const n = bytes(key);
  if (n > MAX_KEY_BYTES) return { code: 'KeyTooLongError', message: `Your key is too long: key ${q} is ${n} bytes of UTF-8; S3 allows at most ${MAX_KEY_BYTES}` };
  if (key.includes('\0')) return { code: 'InvalidArgument', message: `key ${q} contains a NUL character (U+0000), which the local S3 cannot store: it keeps each object as a file named after its key` };
  const segments = key.split('/');
  for (const [i, s] of segments.entries()) {
    const where = `segment ${i + 1} of ${segments.length}`;
    if (s === '.' || s === '..') {
      return { code: 'InvalidArgument', message: `key ${q}: ${where} is '${s}'; the local S3 keeps objects as files and refuses '.' and '..' segments, which would reach another key's file or leave the bucket (S3 itself stores such a key literally)` };
    }
    if (s === '' && i < segments.length - 1) {
      return { code: 'InvalidArgument', message: `key ${q}: ${where} is empty (a leading '/' or '//'); the local S3 keeps objects as files and refuses empty segments, which would make this key another key's file (S3 itself stores such a key literally)` };
    }
    const limit = i === segments.length - 1 ? MAX_LAST_SEGMENT_BYTES : NAME_MAX_BYTES;
    if (bytes(s) > limit) {
      return { code: 'InvalidArgument', message: `key ${q}: ${where} is ${bytes(s)} bytes; the local S3 keeps each segment as a file name and allows at most ${limit} bytes for ${i === segments.length - 1 ? 'the last segment (255 less the 22 of its file suffix)' : 'a folder segment'} (S3 itself allows any segment within the key's ${MAX_KEY_BYTES} bytes)` };
    }
  }
  if (o.root !== undefined && bytes(join(o.root, o.bucket ?? '', key)) + LONGEST_SUFFIX.length > MAX_PATH_BYTES) {
    return { code: 'InvalidArgument', message: `key ${q}: with the data folder ${o.root} its file path would be over ${MAX_PATH_BYTES} bytes; use a shorter data folder or key` };
  }
  return null;
}

/** Why the local S3 refuses a bucket name (null: it does not). */
export function localBucketRefusal(bucket: string): S3Refusal | null {
  if (BUCKET_NAME.test(bucket)) return null;
  return { code: 'InvalidBucketName', message: `The specified bucket is not valid: ${quoteKey(bucket)} (letters, digits, '.', '_' and '-', starting with a letter or digit, at most 255 characters)` };
}

// --- s3rver integration --------------------------------------------------------------------

/** s3rver's error class: thrown in its Koa app, it becomes S3's XML error with the code's status. */
type S3ErrorCtor = new (code: string, message: string, detail?: Record<string, string>) => Error;

interface KoaContext {
  readonly path: string;
  readonly query: Record<string, string | string[] | undefined>;
  readonly headers: Record<string, string | string[] | undefined>;
}
type KoaMiddleware = ((ctx: KoaContext, next: () => Promise<unknown>) => Promise<unknown>) & { readonly router?: unknown };

interface FilesystemStore {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
}

/** The part of an s3rver instance the guard hooks into (a Koa app with a file store). */
export interface GuardableS3rver {
  readonly middleware: KoaMiddleware[];
  readonly store: FilesystemStore;
}

export class LocalS3GuardError extends Error {
  override readonly name = 'LocalS3GuardError';
}

/** decodeURIComponent that keeps the text when it is not valid percent-encoding (as s3rver's router does). */
function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** What a request names, as s3rver's router and object controller will read it; the first refusal. */
export function requestRefusal(path: string, query: KoaContext['query'], headers: KoaContext['headers'], root: string): S3Refusal | null {
  // s3rver's routes are `/:bucket` and `/:bucket/:key+`; the router decodes each parameter.
  const m = /^\/([^/]*)(?:\/(.*))?$/s.exec(path);
  if (m === null || m[1] === '') return null; // `/`: ListBuckets
  const bucket = safeDecode(m[1]);
  const bad = localBucketRefusal(bucket);
  if (bad) return bad;
  if (m[2] !== undefined && m[2] !== '') {
    const r = localKeyRefusal(safeDecode(m[2]), { bucket, root });
    if (r) return r;
  }
  if (query.uploadId !== undefined && !(typeof query.uploadId === 'string' && UPLOAD_ID.test(query.uploadId))) {
    return { code: 'NoSuchUpload', message: `The specified upload does not exist: upload id ${quoteKey(String(query.uploadId))}` };
  }
  if (query.partNumber !== undefined && !(typeof query.partNumber === 'string' && /^[1-9][0-9]{0,4}$/.test(query.partNumber) && Number(query.partNumber) <= 10_000)) {
    return { code: 'InvalidArgument', message: `Part number must be an integer between 1 and 10000, inclusive (got ${quoteKey(String(query.partNumber))})` };
  }
  const copy = headers['x-amz-copy-source'];
  if (copy !== undefined) {
    // s3rver reads it with decodeURI, drops one leading '/', and splits off the bucket.
    let src: string;
    try {
      src = decodeURI(String(copy));
    } catch {
      return { code: 'InvalidArgument', message: `x-amz-copy-source ${quoteKey(String(copy))} is not valid URL encoding` };
    }
    if (src.startsWith('/')) src = src.slice(1);
    const [srcBucket, ...rest] = src.split('/');
    const b = localBucketRefusal(srcBucket);
    if (b) return b;
    const k = localKeyRefusal(rest.join('/'), { bucket: srcBucket, root });
    if (k) return { code: k.code, message: `x-amz-copy-source: ${k.message}` };
  }
  return null;
}

/**
 * Puts the guard into an s3rver instance (before `run()`): a middleware just ahead of its router
 * (after its virtual-host rewrite, so the bucket and key are the ones the router will see), and
 * a check in its file store's getResourcePath. `root` is the store's folder.
 */
export function guardS3rver(server: GuardableS3rver, root: string): void {
  const S3Error = createRequire(import.meta.url)('s3rver/lib/models/error') as S3ErrorCtor;
  const fail = (r: S3Refusal): never => {
    throw new S3Error(r.code, r.message);
  };
  // s3rver (3.7) adds its middleware in its constructor, the router last (`router.routes()`, a
  // function carrying `.router`); anything else means a changed s3rver, which must not be
  // trusted unguarded.
  const router = server.middleware.at(-1);
  if (router?.router === undefined) throw new LocalS3GuardError("s3rver's middleware is not laid out as expected (the router last): the local S3 cannot guard its keys");
  server.middleware.splice(server.middleware.length - 1, 0, async (ctx, next) => {
    const r = requestRefusal(ctx.path, ctx.query, ctx.headers, root);
    if (r) fail(r);
    return next();
  });
  // Every object's files (and a multipart upload's folder) are named by getResourcePath.
  const store = server.store;
  const getResourcePath = store.getResourcePath.bind(store);
  store.getResourcePath = (bucket, key, resource) => {
    const b = localBucketRefusal(bucket);
    if (b) fail(b);
    if (key !== undefined) {
      const k = localKeyRefusal(key, { bucket, root });
      if (k) fail(k);
    }
    return getResourcePath(bucket, key, resource);
  };
}
