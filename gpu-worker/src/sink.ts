/** Where a job writes: a local folder or an s3://bucket/prefix/ (same relative keys in both). */
import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { isSafeRelativeKey } from '#shared/schemas';
import { parseS3Uri } from './bundle.ts';

export interface OutputSink {
  /** Human-readable location, for logs and metadata. */
  readonly location: string;
  put(key: string, bytes: Uint8Array, contentType: string): Promise<void>;
  get(key: string): Promise<Uint8Array | null>;
  delete(key: string): Promise<void>;
}

function checkKey(key: string): void {
  if (!isSafeRelativeKey(key)) throw new Error(`refusing output key '${key}': not a safe relative key`);
}

class LocalSink implements OutputSink {
  readonly location: string;
  constructor(dir: string) {
    this.location = resolve(dir);
  }
  #path(key: string): string {
    checkKey(key);
    const p = resolve(join(this.location, key));
    if (!p.startsWith(this.location + sep)) throw new Error(`refusing output key '${key}': escapes ${this.location}`);
    return p;
  }
  async put(key: string, bytes: Uint8Array): Promise<void> {
    const p = this.#path(key);
    await mkdir(dirname(p), { recursive: true });
    // write-then-rename: a reader never sees half a file
    const tmp = `${p}.tmp-${process.pid}`;
    await writeFile(tmp, bytes);
    await rename(tmp, p);
  }
  async get(key: string): Promise<Uint8Array | null> {
    try {
      return await readFile(this.#path(key));
    } catch {
      return null;
    }
  }
  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }
}

class S3Sink implements OutputSink {
  readonly location: string;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #s3: S3Client;
  constructor(uri: string, s3: S3Client) {
    const { bucket, prefix } = parseS3Uri(uri);
    this.#bucket = bucket;
    this.#prefix = prefix;
    this.#s3 = s3;
    this.location = `s3://${bucket}/${prefix}`;
  }
  async put(key: string, bytes: Uint8Array, contentType: string): Promise<void> {
    checkKey(key);
    await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key, Body: bytes, ContentType: contentType }));
  }
  async get(key: string): Promise<Uint8Array | null> {
    checkKey(key);
    try {
      const r = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
      return await r.Body!.transformToByteArray();
    } catch (e) {
      if ((e as Error).name === 'NoSuchKey' || (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return null;
      throw e;
    }
  }
  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
  }
}

export function openSink(location: string, s3?: S3Client): OutputSink {
  return location.startsWith('s3://') ? new S3Sink(location, s3 ?? new S3Client({})) : new LocalSink(location);
}

/** Reads a whole input from a path or an s3:// URI. */
export async function readInput(location: string, s3?: S3Client): Promise<Uint8Array> {
  if (!location.startsWith('s3://')) return readFile(location);
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(location);
  if (!m) throw new Error(`'${location}' is not an s3://bucket/key URI`);
  const r = await (s3 ?? new S3Client({})).send(new GetObjectCommand({ Bucket: m[1], Key: m[2] }));
  return r.Body!.transformToByteArray();
}
