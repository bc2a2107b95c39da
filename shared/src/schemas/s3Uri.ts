/**
 * The one parser of `s3://bucket/key` locations (pure): the worker, the statistics jobs, the CLI
 * and local mode all split a location here, so a URI means the same thing everywhere. Reading and
 * existence checks, which need the AWS SDK or the file system, are in storage/src/location.ts.
 */

export const S3_SCHEME = 's3://';

/** An S3 bucket name as S3 allows it (3–63 lower-case letters, digits, dots and hyphens). */
const S3_URI = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/;

export class S3UriError extends Error {
  override readonly name = 'S3UriError';
}

export interface S3Location {
  readonly bucket: string;
  /** The object key; for `what: 'prefix'` a prefix ending in '/' (or '' for the whole bucket). */
  readonly key: string;
}

export interface ParseS3UriOptions {
  /** What the path names, for the messages and the form of `key` (default 'key'). */
  readonly what?: 'key' | 'prefix';
  /** The error a bad URI is reported with (default S3UriError): each caller keeps its own type. */
  readonly error?: (message: string) => Error;
}

/** True when `location` is meant as an S3 URI (anything else is a local path). */
export function isS3Uri(location: string): boolean {
  return location.startsWith(S3_SCHEME);
}

/**
 * `s3://bucket/key` → bucket and key. The key may be empty or end in '/' (a prefix); `.` and `..`
 * segments are refused, since a local stand-in would resolve them to another path.
 */
export function parseS3Uri(uri: string, o: ParseS3UriOptions = {}): S3Location {
  const what = o.what ?? 'key';
  const fail = o.error ?? ((m: string): Error => new S3UriError(m));
  const m = S3_URI.exec(uri);
  if (!m) throw fail(`'${uri}' is not an s3://bucket/${what} URI`);
  const path = m[2] ?? '';
  const key = what === 'prefix' && path !== '' && !path.endsWith('/') ? `${path}/` : path;
  if (key.split('/').some((s) => s === '..' || s === '.')) throw fail(`'${uri}': '.' and '..' are not allowed in the ${what}`);
  return { bucket: m[1], key };
}
