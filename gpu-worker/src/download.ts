/**
 * Model download: every file of a bundle in parts, by ranged GETs run in parallel (one bounded
 * pool for the whole bundle), each part retried on its own; every file then checked against the
 * SHA-256 its manifest records, and refused (deleted, never used) when it differs.
 *
 * Files with a recorded SHA-256 go to a content-addressed store, `<cache>/blobs/sha256/<hex>`,
 * shared by every bundle and every job on the instance (a CIL checkpoint and its base model share
 * their VAE and encoders): written under a private temporary name, verified, then renamed into
 * place, so a concurrent job either finds the whole verified file or writes its own copy.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { access, mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';

/** A file is refused: its bytes are not what the manifest records, or it changed during the download. */
export class DownloadError extends Error {
  override readonly name: string = 'DownloadError';
}

export interface DownloadOptions {
  /** Bytes per ranged GET (default $CIL_DOWNLOAD_PART_MIB MiB, else 64 MiB). */
  readonly partBytes?: number;
  /** Ranged GETs in flight at once for the whole bundle (default $CIL_DOWNLOAD_CONCURRENCY, else 16). */
  readonly concurrency?: number;
  /** Tries per part (default 4), with jittered exponential backoff; on top of the SDK's own retries. */
  readonly attempts?: number;
  /** Backoff base in ms (default 250). */
  readonly backoffMs?: number;
}

export interface RemoteFile {
  readonly bucket: string;
  readonly key: string;
  readonly size: number;
  /** Pins every part to one version of the object (If-Match): a re-upload mid-download fails it. */
  readonly etag: string | null;
}

function envInt(name: string, fallback: number): number {
  const n = Number(process.env[name]);
  return Number.isInteger(n) && n >= 1 ? n : fallback;
}

export function downloadSettings(o: DownloadOptions = {}): Required<DownloadOptions> {
  return {
    partBytes: o.partBytes ?? envInt('CIL_DOWNLOAD_PART_MIB', 64) * 1024 * 1024,
    concurrency: o.concurrency ?? envInt('CIL_DOWNLOAD_CONCURRENCY', 16),
    attempts: o.attempts ?? 4,
    backoffMs: o.backoffMs ?? 250,
  };
}

/** A counting semaphore: at most `n` tasks run at once. */
export class Pool {
  #free: number;
  readonly #waiting: (() => void)[] = [];
  #cancelled: Error | null = null;
  constructor(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new DownloadError(`download concurrency must be an integer ≥ 1, got ${n}`);
    this.#free = n;
  }
  /** Tasks not yet started reject with `reason` (one file failed: the others need not finish). */
  cancel(reason: Error): void {
    this.#cancelled ??= reason;
  }
  /** The first reason given to cancel(), if any. */
  get cancelledBy(): Error | null {
    return this.#cancelled;
  }
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((r) => this.#waiting.push(r));
    try {
      if (this.#cancelled) throw this.#cancelled;
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

/** Errors a retry cannot fix: the object is gone, forbidden, or changed (If-Match failed). */
function isFinal(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = err.$metadata?.httpStatusCode;
  return status === 403 || status === 404 || status === 412 || err.name === 'PreconditionFailed' || err.name === 'NoSuchKey' || err instanceof DownloadError;
}

/** The parts of a file: [start, end] inclusive byte ranges. */
export function partsOf(size: number, partBytes: number): [number, number][] {
  const parts: [number, number][] = [];
  for (let start = 0; start < size; start += partBytes) parts.push([start, Math.min(size, start + partBytes) - 1]);
  return parts;
}

/**
 * Downloads `f` to `dest` (created or truncated) with parallel ranged GETs through `pool`.
 * Returns the bytes written and the GET requests made (retries included).
 */
export async function downloadRanged(s3: Pick<S3Client, 'send'>, f: RemoteFile, dest: string, pool: Pool, o: Required<DownloadOptions>): Promise<{ bytes: number; requests: number }> {
  const fh = await open(dest, 'w');
  let requests = 0;
  try {
    await fh.truncate(f.size);
    const where = `s3://${f.bucket}/${f.key}`;
    await Promise.all(
      partsOf(f.size, o.partBytes).map(([start, end]) =>
        pool.run(async () => {
          for (let attempt = 1; ; attempt++) {
            requests++;
            try {
              const r = await s3.send(new GetObjectCommand({ Bucket: f.bucket, Key: f.key, Range: `bytes=${start}-${end}`, IfMatch: f.etag ?? undefined }));
              let pos = start;
              for await (const chunk of r.Body as AsyncIterable<Uint8Array>) {
                if (pos + chunk.length > end + 1) throw new Error(`${where}: bytes ${start}-${end}: the server sent more than the range`);
                await fh.write(chunk, 0, chunk.length, pos);
                pos += chunk.length;
              }
              if (pos !== end + 1) throw new Error(`${where}: bytes ${start}-${end}: the body ended after ${pos - start} of ${end - start + 1} bytes`);
              return;
            } catch (e) {
              const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
              if (status === 412 || (e as Error).name === 'PreconditionFailed') throw new DownloadError(`${where} changed during the download (ETag is no longer ${f.etag}); start the job again`);
              if (isFinal(e) || attempt >= o.attempts) throw e;
              // Full jitter: parts that failed together do not retry together.
              await new Promise((res) => setTimeout(res, Math.random() * o.backoffMs * 2 ** (attempt - 1)));
            }
          }
        }),
      ),
    );
  } finally {
    await fh.close();
  }
  return { bytes: f.size, requests };
}

export async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(p), h);
  return h.digest('hex');
}

/** Whether a path exists (file or folder). */
export async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** The content-addressed store of verified files under a cache folder. */
export function blobPath(cacheDir: string, sha256: string): string {
  return join(cacheDir, 'blobs', 'sha256', sha256);
}

/**
 * A verified copy of `f` whose SHA-256 must be `sha256`, in the store: found there (a hit), or
 * downloaded under a private name, hashed, and renamed into place. A mismatch deletes the
 * download and throws DownloadError: the file is never used.
 */
export async function fetchVerifiedBlob(
  s3: Pick<S3Client, 'send'>,
  f: RemoteFile,
  sha256: string,
  cacheDir: string,
  pool: Pool,
  o: Required<DownloadOptions>,
): Promise<{ path: string; hit: boolean; bytes: number; requests: number }> {
  const path = blobPath(cacheDir, sha256);
  if (await exists(path)) return { path, hit: true, bytes: 0, requests: 0 };
  const dir = join(cacheDir, 'blobs', 'sha256');
  await mkdir(dir, { recursive: true });
  const tmp = join(cacheDir, 'blobs', `.partial-${randomBytes(6).toString('hex')}`);
  try {
    const r = await downloadRanged(s3, f, tmp, pool, o);
    const got = await sha256File(tmp);
    if (got !== sha256) {
      throw new DownloadError(`s3://${f.bucket}/${f.key}: SHA-256 of the downloaded file is ${got}, manifest.json records ${sha256}; the file is corrupt or not this bundle's, and was not used`);
    }
    // Same content under the same name: if a concurrent job renamed first, this replaces it atomically.
    await rename(tmp, path);
    return { path, hit: false, bytes: r.bytes, requests: r.requests };
  } finally {
    await rm(tmp, { force: true });
  }
}
