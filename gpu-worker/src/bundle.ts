/**
 * Model bundles (docs/design.md §5.2, docs/bundles.md): load from a folder or an `s3://bucket/prefix/`,
 * validate manifest.json, check the manifest against the family's component contract, and after
 * the sessions open, check every ONNX graph against the manifest — all before the first step.
 * S3 bundles are cached on local disk keyed by content hash, so a Batch container (or a host
 * volume shared by containers) downloads a model once.
 */
import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { GetObjectCommand, HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { blobPath, downloadRanged, downloadSettings, DownloadError, exists, fetchVerifiedBlob, Pool, sha256File } from './download.ts';
import type { DownloadOptions } from './download.ts';
import { holdBundle, makeRoom, partialDir, touchLastUsed } from './modelCache.ts';
import type { CacheOptions } from './modelCache.ts';
import { ManifestError, parseManifest } from '#shared/schemas';
import type { Manifest, TensorSpec } from '#shared/schemas';
import { BUNDLE_CONTRACT } from '#shared/schemas';
import type { IoMeta } from './runtime/protocol.ts';

export class BundleError extends Error {
  override readonly name = 'BundleError';
}

export interface Bundle {
  /** Where it came from (folder or s3:// URI). */
  readonly source: string;
  /** Local folder holding manifest.json and the files. */
  readonly root: string;
  readonly manifest: Manifest;
  /** Content hash: SHA-256 of manifest.json and every file's identity (size + ETag or bytes). */
  readonly hash: string;
  /** For a bundle from S3: how it reached the local cache. */
  readonly download?: BundleDownload;
  /** For a bundle from S3: ends this job's use of the cached copy (it may be evicted after); call when done. */
  readonly release?: () => Promise<void>;
}

/** How an S3 bundle reached the cache (metadata.json `modelCache`). */
export interface BundleDownload {
  /** The whole bundle was already in the cache (no GET). */
  readonly hit: boolean;
  /** Bytes downloaded by this job (0 on a hit). */
  readonly bytes: number;
  /** Ranged GETs made (retries included). */
  readonly requests: number;
  /** Files found verified in the content-addressed store (shared with other bundles and jobs). */
  readonly filesShared: number;
  /** Files the manifest records no SHA-256 for (downloaded but not verifiable). */
  readonly unverified: string[];
  /** What backs the cache: `instance-store`, `ebs` (the launch template's marker), or null (unknown). */
  readonly storage: string | null;
}

export interface OpenBundleOptions {
  /** Where S3 bundles are cached (default $CIL_MODEL_CACHE, else $CIL_CACHE_DIR/models, else ~/.cache/cil/models). */
  readonly cacheDir?: string;
  readonly s3?: S3Client;
  readonly download?: DownloadOptions;
  /** The host cache's eviction: free-space floor, in-use locks (modelCache.ts). */
  readonly cache?: CacheOptions;
}

/** The SHA-256 manifest.json records for a file (its `files` map, or the component's own), if any. */
export function recordedSha256(m: Manifest, file: string): string | null {
  const f = m.files?.[file];
  if (f !== undefined) return f;
  for (const c of Object.values(m.components)) if (c.file === file && c.sha256 !== undefined) return c.sha256;
  return null;
}

/** The model cache folder: the option, $CIL_MODEL_CACHE, $CIL_CACHE_DIR/models (the instance's NVMe), or ~/.cache/cil/models. */
export function modelCacheDir(cacheDir?: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  return resolve(cacheDir ?? env.CIL_MODEL_CACHE ?? (env.CIL_CACHE_DIR ? join(env.CIL_CACHE_DIR, 'models') : join(env.HOME ?? '.', '.cache', 'cil', 'models')));
}

/** Every file a bundle must contain, relative to its root. */
export function bundleFiles(m: Manifest): string[] {
  const files = new Set<string>();
  for (const c of Object.values(m.components)) {
    files.add(c.file);
    for (const e of c.externalData ?? []) files.add(e);
  }
  if (m.tokenizer) files.add(m.tokenizer.file);
  return [...files];
}

function specMatches(spec: TensorSpec, want: { name: string; dtypes: readonly string[]; dims: readonly (string | number)[] }): string | null {
  if (!want.dtypes.includes(spec.dtype)) return `dtype ${spec.dtype}, the contract allows ${want.dtypes.join(' or ')}`;
  if (spec.dims.length !== want.dims.length) return `rank ${spec.dims.length} [${spec.dims.join(', ')}], the contract has [${want.dims.join(', ')}]`;
  for (let i = 0; i < want.dims.length; i++) {
    const w = want.dims[i];
    if (typeof w === 'number' && spec.dims[i] !== w) return `axis ${i} is ${spec.dims[i]}, the contract fixes it to ${w}`;
  }
  return null;
}

/** The manifest's components against the family contract (names, dtypes, ranks, fixed sizes). */
export function checkManifestContract(m: Manifest, where: string): void {
  const contract = BUNDLE_CONTRACT[m.family];
  const problems: string[] = [];
  for (const [name, want] of Object.entries(contract)) {
    const c = m.components[name];
    if (!c) {
      problems.push(`component '${name}' is missing (a ${m.family} bundle needs ${Object.keys(contract).join(', ')})`);
      continue;
    }
    for (const [kind, wantList, haveList] of [
      ['input', want.inputs, c.inputs],
      ['output', want.outputs, c.outputs],
    ] as const) {
      const haveNames = haveList.map((t) => t.name);
      for (const w of wantList) {
        const h = haveList.find((t) => t.name === w.name);
        if (!h) {
          problems.push(`${name}: ${kind} '${w.name}' is missing (has ${haveNames.join(', ') || 'none'})`);
          continue;
        }
        const p = specMatches(h, w);
        if (p) problems.push(`${name}: ${kind} '${w.name}' has ${p}`);
      }
      for (const h of haveList) {
        if (!wantList.some((w) => w.name === h.name)) problems.push(`${name}: unexpected ${kind} '${h.name}' (the contract has ${wantList.map((w) => w.name).join(', ')})`);
      }
    }
  }
  if (problems.length) throw new BundleError(`${where}: bundle does not meet the ${m.family} contract:\n  - ${problems.join('\n  - ')}`);
}

/** An opened ONNX session's inputs/outputs against the manifest's component spec. */
export function checkSessionAgainstManifest(m: Manifest, component: string, file: string, inputs: readonly IoMeta[], outputs: readonly IoMeta[]): void {
  const c = m.components[component];
  const problems: string[] = [];
  for (const [kind, specs, actual] of [
    ['input', c.inputs, inputs],
    ['output', c.outputs, outputs],
  ] as const) {
    for (const s of specs) {
      const a = actual.find((x) => x.name === s.name);
      if (!a) {
        problems.push(`${kind} '${s.name}' is not in the graph (graph ${kind}s: ${actual.map((x) => x.name).join(', ')})`);
        continue;
      }
      if (a.type !== s.dtype) problems.push(`${kind} '${s.name}' is ${a.type} in the graph, ${s.dtype} in the manifest`);
      if (a.shape.length !== s.dims.length) {
        problems.push(`${kind} '${s.name}' has rank ${a.shape.length} [${a.shape.join(', ')}] in the graph, ${s.dims.length} [${s.dims.join(', ')}] in the manifest`);
        continue;
      }
      s.dims.forEach((d, i) => {
        const g = a.shape[i];
        if (typeof d === 'number' && typeof g === 'number' && d !== g) problems.push(`${kind} '${s.name}' axis ${i} is ${g} in the graph, ${d} in the manifest`);
      });
    }
    for (const a of actual) {
      if (!specs.some((s) => s.name === a.name)) problems.push(`graph ${kind} '${a.name}' is not in the manifest`);
    }
  }
  if (problems.length) throw new BundleError(`${file} (component '${component}') does not match manifest.json:\n  - ${problems.join('\n  - ')}`);
}


async function verifyHashes(root: string, m: Manifest, where: string): Promise<void> {
  for (const f of bundleFiles(m)) {
    const want = recordedSha256(m, f);
    if (want === null) continue;
    const got = await sha256File(join(root, f));
    if (got !== want) throw new BundleError(`${where}: ${f} has SHA-256 ${got}, manifest.json records ${want}; the file is corrupt or not this bundle's`);
  }
}

function readManifestBytes(bytes: Uint8Array, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new BundleError(`${where}: manifest.json is not valid JSON (${(e as Error).message})`);
  }
  try {
    return parseManifest(json, where);
  } catch (e) {
    if (e instanceof ManifestError) throw new BundleError(e.message);
    throw e;
  }
}

async function openFolder(dir: string, source: string): Promise<Bundle> {
  const root = resolve(dir);
  const where = join(root, 'manifest.json');
  let bytes: Buffer;
  try {
    bytes = await readFile(where);
  } catch {
    throw new BundleError(`${source}: no manifest.json in ${root}`);
  }
  const manifest = readManifestBytes(bytes, where);
  checkManifestContract(manifest, where);
  const h = createHash('sha256').update(bytes);
  for (const f of bundleFiles(manifest)) {
    const p = join(root, f);
    let st;
    try {
      st = await stat(p);
    } catch {
      throw new BundleError(`${source}: ${f} is listed in manifest.json but missing from the bundle`);
    }
    h.update(`\u0000${f}\u0000${st.size}`);
  }
  await verifyHashes(root, manifest, source);
  return { source, root, manifest, hash: h.digest('hex') };
}

export function parseS3Uri(uri: string): { bucket: string; prefix: string } {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/?(.*)$/.exec(uri);
  if (!m) throw new BundleError(`'${uri}' is not an s3://bucket/prefix URI`);
  const prefix = m[2] === '' || m[2].endsWith('/') ? m[2] : `${m[2]}/`;
  if (prefix.split('/').some((s) => s === '..' || s === '.')) throw new BundleError(`'${uri}': '.' and '..' are not allowed in the prefix`);
  return { bucket: m[1], prefix };
}

async function openS3(uri: string, o: OpenBundleOptions): Promise<Bundle> {
  const { bucket, prefix } = parseS3Uri(uri);
  const s3 = o.s3 ?? new S3Client({});
  const where = `s3://${bucket}/${prefix}manifest.json`;
  let manifestBytes: Uint8Array;
  try {
    const r = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}manifest.json` }));
    manifestBytes = await r.Body!.transformToByteArray();
  } catch (e) {
    throw new BundleError(`${where}: cannot read the manifest (${(e as Error).name}: ${(e as Error).message})`);
  }
  const manifest = readManifestBytes(manifestBytes, where);
  checkManifestContract(manifest, where);
  // The cache key covers the manifest and each file's ETag and size, so a re-upload of any file
  // gives a new key (a stale cache is never used).
  const h = createHash('sha256').update(manifestBytes);
  const files = bundleFiles(manifest);
  const heads = new Map<string, { size: number; etag: string | null }>();
  const pool0 = new Pool(16);
  await Promise.all(
    files.map((f) =>
      pool0.run(async () => {
        try {
          const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}${f}` }));
          heads.set(f, { size: head.ContentLength ?? 0, etag: head.ETag ?? null });
        } catch {
          throw new BundleError(`s3://${bucket}/${prefix}: ${f} is listed in manifest.json but missing from the bundle`);
        }
      }),
    ),
  );
  for (const f of files) h.update(`\u0000${f}\u0000${heads.get(f)!.size}\u0000${heads.get(f)!.etag ?? ''}`);
  const hash = h.digest('hex');
  const cacheDir = modelCacheDir(o.cacheDir);
  const root = join(cacheDir, hash);
  const storage = await cacheStorage();
  // In use from here until the job releases it: no other job on the instance evicts it.
  const { complete, release } = await holdBundle(cacheDir, hash, o.cache);
  if (complete) return { source: uri, root, manifest, hash, download: { hit: true, bytes: 0, requests: 0, filesShared: 0, unverified: [], storage }, release };
  try {
    // What the download adds to the volume: every file but those already in the store.
    let needed = 0;
    for (const f of files) {
      const sha = recordedSha256(manifest, f);
      if (sha === null || !(await exists(blobPath(cacheDir, sha)))) needed += heads.get(f)!.size;
    }
    await makeRoom(cacheDir, needed, hash, o.cache);
  } catch (e) {
    await release();
    throw e;
  }
  // Assembled in a private folder, then renamed: concurrent jobs sharing the cache volume never
  // see a half-written bundle, and the first rename wins. Files with a recorded SHA-256 come from
  // (or go to) the content-addressed store and are hard-linked in (download.ts).
  const settings = downloadSettings(o.download);
  const pool = new Pool(settings.concurrency);
  const tmp = await partialDir(cacheDir, o.cache);
  let bytes = 0;
  let requests = 0;
  let filesShared = 0;
  const unverified: string[] = [];
  try {
    await writeFile(join(tmp, 'manifest.json'), manifestBytes);
    // Settled, not raced: a failed file cancels the parts not yet started, and the folder is
    // removed only once nothing writes into it any more.
    const settled = await Promise.allSettled(
      files.map(async (f) => {
        const dest = join(tmp, f);
        await mkdir(dirname(dest), { recursive: true });
        const remote = { bucket, key: `${prefix}${f}`, ...heads.get(f)! };
        const want = recordedSha256(manifest, f);
        try {
          if (want === null) {
            unverified.push(f);
            const r = await downloadRanged(s3, remote, dest, pool, settings);
            bytes += r.bytes;
            requests += r.requests;
            return;
          }
          const blob = await fetchVerifiedBlob(s3, remote, want, cacheDir, pool, settings);
          if (blob.hit) filesShared++;
          bytes += blob.bytes;
          requests += blob.requests;
          await linkOrCopy(blob.path, dest);
        } catch (e) {
          const err = e instanceof DownloadError ? new BundleError(`${uri}: ${f}: ${e.message}`) : (e as Error);
          pool.cancel(err);
          throw err;
        }
      }),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw pool.cancelledBy ?? (failed.reason as Error);
    await writeFile(join(tmp, '.complete'), `${uri}\n`);
    try {
      await rename(tmp, root);
    } catch {
      if (!(await exists(join(root, '.complete')))) throw new BundleError(`cannot move the downloaded bundle into ${root}`);
    }
    await touchLastUsed(cacheDir, hash, Date.now());
  } catch (e) {
    await release();
    throw e;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  unverified.sort();
  return { source: uri, root, manifest, hash, download: { hit: false, bytes, requests, filesShared, unverified, storage }, release };
}

/** A hard link into the store (no second copy on disk); a copy where links cannot be made. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch {
    await copyFile(from, to);
  }
}

/** What backs the instance's cache volume: the launch template writes `$CIL_CACHE_DIR/.storage`. */
async function cacheStorage(): Promise<string | null> {
  const dir = process.env.CIL_CACHE_DIR;
  if (!dir) return null;
  try {
    const t = (await readFile(join(dir, '.storage'), 'utf8')).trim();
    return /^[a-z0-9-]{1,32}$/.test(t) ? t : null;
  } catch {
    return null;
  }
}

/** Opens and validates a bundle from a folder or an s3:// prefix. */
export async function openBundle(source: string, o: OpenBundleOptions = {}): Promise<Bundle> {
  return source.startsWith('s3://') ? openS3(source, o) : openFolder(source, source);
}
