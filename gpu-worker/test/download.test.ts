/**
 * Model loading from S3 (a real S3-protocol server on 127.0.0.1): parallel ranged GETs with
 * retries into the cache, every file checked against the SHA-256 manifest.json records, a
 * corrupted file refused and never used, a content-addressed store shared by bundles and by
 * concurrent jobs.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeDemoBundle } from '../../demo/src/bundle.ts';
import { startLocalS3 } from '../../functions/test/helpers/s3server.ts';
import type { LocalS3 } from '../../functions/test/helpers/s3server.ts';
import { BundleError, bundleFiles, modelCacheDir, openBundle, recordedSha256 } from '../src/bundle.ts';
import { blobPath, partsOf, Pool } from '../src/download.ts';

let s3: LocalS3;
let work: string;
let local: string;
const files = new Map<string, Buffer>();
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
/** Small parts: every file of the demo bundle is fetched in many ranged GETs. */
const DL = { partBytes: 4096, concurrency: 3, backoffMs: 1 };

async function upload(prefix: string, patch: (m: Record<string, unknown>) => void = () => undefined, replace: Record<string, Buffer> = {}): Promise<void> {
  const m = JSON.parse(files.get('manifest.json')!.toString('utf8')) as Record<string, unknown>;
  patch(m);
  for (const [f, b] of files) if (f !== 'manifest.json') await s3.put(`${prefix}${f}`, replace[f] ?? b);
  await s3.put(`${prefix}manifest.json`, JSON.stringify(m));
}

/** Counts GETs (and fails chosen ones) on the way to the server. */
function countingClient(failFirst = 0): { client: S3Client; gets: () => number; ranges: () => string[] } {
  let gets = 0;
  let failed = 0;
  const ranges: string[] = [];
  const client = {
    send: async (cmd: { constructor: { name: string }; input: { Range?: string } }) => {
      if (cmd.constructor.name === 'GetObjectCommand') {
        gets++;
        if (cmd.input.Range) ranges.push(cmd.input.Range);
        if (cmd.input.Range && failed < failFirst) {
          failed++;
          throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError', $metadata: {} });
        }
      }
      return s3.s3.send(cmd as never);
    },
  } as unknown as S3Client;
  return { client, gets: () => gets, ranges: () => ranges };
}

beforeAll(async () => {
  s3 = await startLocalS3();
  work = await mkdtemp(join(tmpdir(), 'cil-download-'));
  local = join(work, 'bundle');
  await writeDemoBundle(local);
  const walk = async (dir: string, rel = ''): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) await walk(join(dir, e.name), `${rel}${e.name}/`);
      else files.set(`${rel}${e.name}`, await readFile(join(dir, e.name)));
    }
  };
  await walk(local);
}, 60_000);

afterAll(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

describe('parts and pool', () => {
  it('splits a file into inclusive byte ranges covering it exactly', () => {
    expect(partsOf(10, 4)).toEqual([[0, 3], [4, 7], [8, 9]]);
    expect(partsOf(8, 4)).toEqual([[0, 3], [4, 7]]);
    expect(partsOf(0, 4)).toEqual([]);
  });

  it('never runs more than its bound at once', async () => {
    const pool = new Pool(2);
    let now = 0;
    let peak = 0;
    await Promise.all(Array.from({ length: 8 }, () => pool.run(async () => {
      peak = Math.max(peak, ++now);
      await new Promise((r) => setImmediate(r));
      now--;
    })));
    expect(peak).toBe(2);
    expect(() => new Pool(0)).toThrow(/integer ≥ 1/);
  });
});

describe('openBundle from S3', () => {
  it('downloads every file by parallel ranged GETs into the cache, each verified; a second open is a cache hit', async () => {
    await upload('models/ok/', (m) => {
      // Record every file's hash (the tokenizer has none in the demo manifest).
      const fm: Record<string, string> = {};
      for (const [f, b] of files) if (f !== 'manifest.json') fm[f] = sha(b);
      m.files = fm;
    });
    const cache = join(work, 'cache-ok');
    const c = countingClient();
    const b = await openBundle(`s3://${s3.bucket}/models/ok/`, { cacheDir: cache, s3: c.client, download: DL });
    const want = bundleFiles(b.manifest);
    for (const f of want) expect(sha(await readFile(join(b.root, f))), f).toBe(sha(files.get(f)!));
    const big = want.reduce((n, f) => n + Math.ceil(files.get(f)!.length / DL.partBytes), 0);
    expect(big).toBeGreaterThan(want.length);
    expect(c.ranges()).toHaveLength(big);
    expect(c.ranges().every((r) => /^bytes=\d+-\d+$/.test(r))).toBe(true);
    expect(b.download).toMatchObject({ hit: false, requests: big, filesShared: 0, unverified: [] });
    expect(b.download!.bytes).toBe(want.reduce((n, f) => n + files.get(f)!.length, 0));
    // Content-addressed: each verified file sits in the store under its SHA-256, linked into the bundle.
    for (const f of want) expect(existsSync(blobPath(cache, recordedSha256(b.manifest, f)!)), f).toBe(true);

    const c2 = countingClient();
    const again = await openBundle(`s3://${s3.bucket}/models/ok/`, { cacheDir: cache, s3: c2.client, download: DL });
    expect(again.root).toBe(b.root);
    expect(again.download).toMatchObject({ hit: true, bytes: 0, requests: 0 });
    expect(c2.ranges()).toHaveLength(0);
  }, 60_000);

  it('retries a failed part on its own', async () => {
    await upload('models/retry/');
    const c = countingClient(2);
    const b = await openBundle(`s3://${s3.bucket}/models/retry/`, { cacheDir: join(work, 'cache-retry'), s3: c.client, download: DL });
    const parts = bundleFiles(b.manifest).reduce((n, f) => n + Math.ceil(files.get(f)!.length / DL.partBytes), 0);
    expect(b.download!.requests).toBe(parts + 2);
    for (const f of bundleFiles(b.manifest)) expect(sha(await readFile(join(b.root, f))), f).toBe(sha(files.get(f)!));
    // The demo manifest records no hash for its tokenizer: downloaded, and reported as unverified.
    expect(b.download!.unverified).toEqual(bundleFiles(b.manifest).filter((f) => recordedSha256(b.manifest, f) === null));
  }, 60_000);

  it('refuses a corrupted file (SHA-256 differs from the manifest): clear error, nothing kept, never used', async () => {
    const m = JSON.parse(files.get('manifest.json')!.toString('utf8')) as { components: Record<string, { file: string; sha256?: string }> };
    const victim = Object.values(m.components).find((c) => c.sha256)!.file;
    const bad = Buffer.from(files.get(victim)!);
    bad[bad.length >> 1] ^= 0xff;
    await upload('models/corrupt/', () => undefined, { [victim]: bad });
    const cache = join(work, 'cache-corrupt');
    const err = await openBundle(`s3://${s3.bucket}/models/corrupt/`, { cacheDir: cache, s3: s3.s3, download: DL }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BundleError);
    expect((err as Error).message).toContain(victim);
    expect((err as Error).message).toMatch(/SHA-256 of the downloaded file is [0-9a-f]{64}, manifest\.json records [0-9a-f]{64}.*was not used/);
    // No bundle folder, no blob of the bad bytes, no partial file left behind.
    const left = await readdir(cache, { recursive: true });
    expect(left.filter((f) => !f.startsWith('blobs'))).toEqual([]);
    expect(existsSync(blobPath(cache, sha(bad)))).toBe(false);
    expect(left.some((f) => f.includes('.partial'))).toBe(false);
  }, 60_000);

  it('refuses a file whose `files` hash differs (the tokenizer, which has no component)', async () => {
    const tok = [...files.keys()].find((f) => f.endsWith('.json') && f !== 'manifest.json')!;
    await upload('models/badtok/', (m) => {
      m.files = { [tok]: '0'.repeat(64) };
    });
    await expect(openBundle(`s3://${s3.bucket}/models/badtok/`, { cacheDir: join(work, 'cache-badtok'), s3: s3.s3, download: DL })).rejects.toThrow(
      new RegExp(`${tok.replace('.', '\\.')}.*manifest\\.json records 0{64}`),
    );
  }, 60_000);

  it('concurrent jobs on one cache: both get the same verified bundle, one copy of each file', async () => {
    await upload('models/shared/');
    const cache = join(work, 'cache-shared');
    const [a, b] = await Promise.all([
      openBundle(`s3://${s3.bucket}/models/shared/`, { cacheDir: cache, s3: s3.s3, download: DL }),
      openBundle(`s3://${s3.bucket}/models/shared/`, { cacheDir: cache, s3: s3.s3, download: DL }),
    ]);
    expect(a.root).toBe(b.root);
    for (const f of bundleFiles(a.manifest)) expect(sha(await readFile(join(a.root, f))), f).toBe(sha(files.get(f)!));
    const entries = await readdir(cache);
    expect(entries.filter((e) => e.startsWith('.partial'))).toEqual([]);
    expect(entries.filter((e) => /^[0-9a-f]{64}$/.test(e))).toEqual([a.hash]);
    // A second bundle with the same ONNX files finds them in the store: nothing of them downloaded again.
    await upload('models/shared-copy/', (m) => {
      m.description = 'the same ONNX files under another manifest';
    });
    const c = await openBundle(`s3://${s3.bucket}/models/shared-copy/`, { cacheDir: cache, s3: s3.s3, download: DL });
    expect(c.download!.filesShared).toBe(bundleFiles(c.manifest).filter((f) => recordedSha256(c.manifest, f) !== null).length);
  }, 60_000);

  it('the host cache: an older bundle nobody holds is evicted to make room; the job holds its own until it releases it; one that cannot fit is refused before any GET', async () => {
    await upload('models/evict/');
    const cache = join(work, 'cache-evict');
    // An older bundle of 1 MB nobody uses, on a "volume" with room for the new one only once it is gone.
    const old = 'f'.repeat(64);
    await mkdir(join(cache, old), { recursive: true });
    await writeFile(join(cache, old, 'unet.onnx'), Buffer.alloc(1 << 20));
    await writeFile(join(cache, old, '.complete'), '');
    // What the download adds: the manifest's files (about 115 kB), not the statistics the demo folder also holds.
    const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as Parameters<typeof bundleFiles>[0];
    const bundleBytes = bundleFiles(manifest).reduce((n, f) => n + files.get(f)!.length, 0);
    const used = async (): Promise<number> => {
      let n = 0;
      const seen = new Set<number>();
      const walk = async (d: string): Promise<void> => {
        for (const e of await readdir(d, { withFileTypes: true })) {
          if (e.isDirectory()) await walk(join(d, e.name));
          else {
            const st = await stat(join(d, e.name));
            if (!seen.has(st.ino)) n += st.size;
            seen.add(st.ino);
          }
        }
      };
      await walk(cache);
      return n;
    };
    const capacity = (1 << 20) + bundleBytes;
    const cacheOpts = { minFreeBytes: 4096, space: async () => ({ free: capacity - (await used()), total: capacity }) };
    const b = await openBundle(`s3://${s3.bucket}/models/evict/`, { cacheDir: cache, s3: s3.s3, download: DL, cache: cacheOpts });
    expect(existsSync(join(cache, old))).toBe(false);
    expect(b.download).toMatchObject({ hit: false });
    expect(await readdir(join(cache, '.in-use', b.hash))).toHaveLength(1);
    await b.release!();
    expect(existsSync(join(cache, '.in-use'))).toBe(false);

    // A bundle larger than the whole volume: refused by name, nothing fetched, no hold left.
    const c = countingClient();
    const tiny = { minFreeBytes: 0, space: () => Promise.resolve({ free: 1000, total: 1000 }) };
    await expect(openBundle(`s3://${s3.bucket}/models/evict/`, { cacheDir: join(work, 'cache-tiny'), s3: c.client, download: DL, cache: tiny })).rejects.toThrow(
      /CacheFullError|cannot fit in the model cache/,
    );
    expect(c.ranges()).toHaveLength(0);
    expect(existsSync(join(work, 'cache-tiny', '.in-use'))).toBe(false);
  }, 60_000);

  it('the cache folder: the option, $CIL_MODEL_CACHE, $CIL_CACHE_DIR/models (the instance store), ~/.cache/cil/models', () => {
    expect(modelCacheDir('/x', { CIL_MODEL_CACHE: '/y' })).toBe('/x');
    expect(modelCacheDir(undefined, { CIL_MODEL_CACHE: '/y', CIL_CACHE_DIR: '/z' })).toBe('/y');
    expect(modelCacheDir(undefined, { CIL_CACHE_DIR: '/z' })).toBe('/z/models');
    expect(modelCacheDir(undefined, { HOME: '/h' })).toBe('/h/.cache/cil/models');
  });
});
