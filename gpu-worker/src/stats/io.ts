/**
 * Locations for the statistics commands: a local path or an s3://bucket/key URI (parsed and
 * read by storage/src/location.ts), read whole, written atomically (local: write then rename;
 * S3: PutObject is atomic), listed by folder/prefix; and the video source (a folder or an S3
 * prefix) whose ids are paths relative to it.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { isS3Uri } from '#shared/schemas';
import { sortIds } from '#shared/stats';
import { LocationError, parseLocation, readOptionalLocation } from '../../../storage/src/location.ts';

export { LocationError };

/** The bytes at `location`, or null when nothing is there. Other errors propagate. */
export const readOptional: (location: string, s3?: S3Client) => Promise<Uint8Array | null> = readOptionalLocation;

/** The bytes at `location`; LocationError naming it when nothing is there. */
export async function readRequired(location: string, s3?: S3Client): Promise<Uint8Array> {
  const b = await readOptional(location, s3);
  if (b === null) throw new LocationError(`${location}: no such file`);
  return b;
}

/** Writes `bytes` so that a reader (or a crash) never sees half a file. */
export async function writeLocation(location: string, bytes: Uint8Array, s3?: S3Client): Promise<void> {
  if (isS3Uri(location)) {
    const { bucket, key } = parseLocation(location);
    if (key === '' || key.endsWith('/')) throw new LocationError(`${location}: an output needs an object key, not a prefix`);
    await (s3 ?? new S3Client({})).send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: bytes, ContentType: 'application/octet-stream' }));
    return;
  }
  const p = resolve(location);
  await mkdir(dirname(p), { recursive: true });
  const tmp = `${p}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  await writeFile(tmp, bytes);
  await rename(tmp, p);
}

/** `base` joined with a file name: a folder path or an s3:// prefix. */
export function joinLocation(base: string, name: string): string {
  if (isS3Uri(base)) return base.endsWith('/') ? `${base}${name}` : `${base}/${name}`;
  return join(base, name);
}

async function walk(root: string, dir: string, out: string[]): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  for (const e of entries) {
    if (e.name.startsWith('.')) continue; // hidden files and our own temporaries
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(root, p, out);
    else if (e.isFile()) out.push(relative(root, p).split(sep).join('/'));
  }
}

/** Keys (relative to the prefix) or paths (relative to the folder) under `location` whose names pass `keep`, sorted. */
export async function listLocation(location: string, keep: (name: string) => boolean, s3?: S3Client): Promise<string[]> {
  if (isS3Uri(location)) {
    const { bucket, key: prefix } = parseLocation(location, 'prefix');
    const client = s3 ?? new S3Client({});
    const out: string[] = [];
    let token: string | undefined;
    do {
      const r = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const c of r.Contents ?? []) {
        const k = c.Key;
        if (k === undefined || k.endsWith('/')) continue;
        const rel = k.slice(prefix.length);
        if (keep(rel)) out.push(rel);
      }
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
    return sortIds(out);
  }
  const root = resolve(location);
  let st;
  try {
    st = await stat(root);
  } catch {
    throw new LocationError(`${location}: no such folder`);
  }
  if (!st.isDirectory()) throw new LocationError(`${location}: not a folder`);
  const out: string[] = [];
  await walk(root, root, out);
  return sortIds(out.filter(keep));
}

/** Video file extensions the statistics job lists (case-insensitive); other files are ignored. */
export const VIDEO_EXTENSIONS: readonly string[] = ['.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi', '.mpg', '.mpeg', '.ts', '.flv', '.wmv', '.ogv', '.gif'];

export const isVideoName = (name: string): boolean => VIDEO_EXTENSIONS.includes(extname(name).toLowerCase());

export interface LocalVideo {
  readonly path: string;
  /** Deletes the local copy of an S3 video (a no-op for local files). */
  release(): Promise<void>;
}

export interface VideoSource {
  readonly location: string;
  /** Video ids (paths relative to the folder or prefix), sorted by code point. */
  readonly ids: readonly string[];
  /** A local file for `id` (S3 objects are downloaded to a temporary folder). */
  materialize(id: string): Promise<LocalVideo>;
  /** Removes the temporary folder. */
  close(): Promise<void>;
}

/** Lists the videos under a folder or an s3:// prefix. */
export async function openVideoSource(location: string, s3?: S3Client): Promise<VideoSource> {
  const ids = await listLocation(location, isVideoName, s3);
  if (!isS3Uri(location)) {
    const root = resolve(location);
    return {
      location,
      ids,
      materialize: (id) => Promise.resolve({ path: join(root, ...id.split('/')), release: () => Promise.resolve() }),
      close: () => Promise.resolve(),
    };
  }
  const { bucket, key: prefix } = parseLocation(location, 'prefix');
  const client = s3 ?? new S3Client({});
  // The promise, not the path: concurrent materialize calls (the prefetch) share one folder
  // instead of each making one that close() never sees.
  let tmp: Promise<string> | null = null;
  let counter = 0;
  return {
    location,
    ids,
    materialize: async (id) => {
      tmp ??= mkdtemp(join(tmpdir(), 'cil-stats-'));
      const path = join(await tmp, `${counter++}${extname(id).toLowerCase()}`);
      const r = await client.send(new GetObjectCommand({ Bucket: bucket, Key: prefix + id }));
      await pipeline(r.Body as Readable, createWriteStream(path));
      return { path, release: () => rm(path, { force: true }) };
    },
    close: async () => {
      if (tmp !== null) await rm(await tmp, { recursive: true, force: true });
    },
  };
}
