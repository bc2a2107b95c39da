/** Where a job writes: a local folder or an s3://bucket/prefix/ (same relative keys in both). */
import { mkdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { DeleteObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { isS3Uri, isSafeRelativeKey } from '#shared/schemas';
import { getObjectBytes, parseLocation, readLocation } from '../../storage/src/location.ts';

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
    const { bucket, key: prefix } = parseLocation(uri, 'prefix');
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
    return getObjectBytes(this.#s3, this.#bucket, this.#prefix + key);
  }
  async delete(key: string): Promise<void> {
    checkKey(key);
    await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#prefix + key }));
  }
}

export function openSink(location: string, s3?: S3Client): OutputSink {
  return isS3Uri(location) ? new S3Sink(location, s3 ?? new S3Client({})) : new LocalSink(location);
}

/** Reads a whole input from a path or an s3:// URI (storage/src/location.ts). */
export const readInput: (location: string, s3?: S3Client) => Promise<Uint8Array> = readLocation;
