/**
 * Eviction of the host model cache (gpu-worker/src/modelCache.ts) on a temporary folder standing
 * in for the instance's NVMe volume: its "volume" has a fixed capacity and its free space is what
 * the files in it leave (hard links counted once), so removing a bundle frees exactly its bytes.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { link, lstat, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { blobPath } from '../src/download.ts';
import { CacheFullError, holdBundle, makeRoom, minFreeBytes, partialDir } from '../src/modelCache.ts';
import type { SpaceProbe } from '../src/modelCache.ts';

let cache: string;
const T0 = Date.parse('2026-01-01T00:00:00Z');
const hashOf = (name: string): string => createHash('sha256').update(name).digest('hex');

/** A volume of `capacity` bytes holding the cache: free = capacity − the bytes of its files (each inode once). */
function volume(capacity: number): SpaceProbe {
  return async (dir) => {
    const seen = new Set<number>();
    let used = 0;
    const walk = async (d: string): Promise<void> => {
      for (const e of await readdir(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else {
          const st = await lstat(p);
          if (!seen.has(st.ino)) used += st.size;
          seen.add(st.ino);
        }
      }
    };
    await walk(dir);
    return { free: capacity - used, total: capacity };
  };
}

/**
 * A complete bundle `name` last used at T0 + `minute` minutes: `own` bytes only it has, and files
 * linked from the content-addressed store (`blobs`: name → bytes, shared by every bundle naming it).
 */
async function addBundle(name: string, minute: number, own: number, blobs: Record<string, number> = {}): Promise<string> {
  const hash = hashOf(name);
  const root = join(cache, hash);
  await mkdir(root, { recursive: true });
  await writeFile(join(root, 'own.bin'), Buffer.alloc(own, 1));
  for (const [blob, bytes] of Object.entries(blobs)) {
    const path = blobPath(cache, hashOf(blob));
    await mkdir(join(cache, 'blobs', 'sha256'), { recursive: true });
    if (!existsSync(path)) await writeFile(path, Buffer.alloc(bytes, 2));
    await link(path, join(root, blob));
  }
  // Empty, so that the volume's arithmetic is the bundles' bytes alone.
  await writeFile(join(root, '.complete'), '');
  const t = new Date(T0 + minute * 60_000);
  await utimes(join(root, '.complete'), t, t);
  return hash;
}

const present = (hash: string): boolean => existsSync(join(cache, hash, '.complete'));

beforeEach(async () => {
  cache = await mkdtemp(join(tmpdir(), 'cil-model-cache-'));
});
afterEach(async () => {
  await rm(cache, { recursive: true, force: true });
});

describe('model cache eviction', () => {
  it('room enough: nothing is evicted', async () => {
    const a = await addBundle('a', 1, 300);
    const r = await makeRoom(cache, 100, hashOf('new'), { space: volume(1000), minFreeBytes: 100 });
    expect(r).toEqual({ evicted: [], free: 700 });
    expect(present(a)).toBe(true);
  });

  it('evicts the least recently used bundles, oldest first, until the download fits above the floor', async () => {
    const a = await addBundle('a', 1, 300);
    const b = await addBundle('b', 3, 300);
    const c = await addBundle('c', 2, 200);
    // 800 used of 1000; 450 needed with 100 kept free: evicting a (oldest) is not enough, c (next) is.
    const r = await makeRoom(cache, 450, hashOf('new'), { space: volume(1000), minFreeBytes: 100 });
    expect(r.evicted).toEqual([a, c]);
    expect(r.free).toBe(700);
    expect([present(a), present(b), present(c)]).toEqual([false, true, false]);
    // Nothing half-removed is left behind.
    expect((await readdir(cache)).filter((n) => n.startsWith('.evicting-'))).toEqual([]);
  });

  it('opening a bundle makes it the most recently used', async () => {
    const a = await addBundle('a', 1, 300);
    const b = await addBundle('b', 2, 300);
    const hold = await holdBundle(cache, a, { now: () => T0 + 60 * 60_000 });
    expect(hold.complete).toBe(true);
    await hold.release();
    expect((await stat(join(cache, a, '.complete'))).mtimeMs).toBe(T0 + 60 * 60_000);
    const r = await makeRoom(cache, 350, hashOf('new'), { space: volume(1000), minFreeBytes: 100 });
    expect(r.evicted).toEqual([b]);
    expect(present(a)).toBe(true);
  });

  it('never evicts a bundle another job holds, nor the one being opened; a released one goes', async () => {
    const a = await addBundle('a', 1, 300);
    const b = await addBundle('b', 2, 300);
    const c = await addBundle('c', 3, 300);
    const hold = await holdBundle(cache, a);
    const lock = (await readdir(join(cache, '.in-use', a)))[0];
    expect(lock).toMatch(/-\d+-[0-9a-f]{8}\.lock$/);
    // a is held, b is the one being opened: c goes although it is the newest.
    const r = await makeRoom(cache, 300, b, { space: volume(1200), minFreeBytes: 100 });
    expect(r.evicted).toEqual([c]);
    expect([present(a), present(b)]).toEqual([true, true]);
    await hold.release();
    expect(existsSync(join(cache, '.in-use'))).toBe(false);
    const again = await makeRoom(cache, 550, b, { space: volume(1200), minFreeBytes: 100 });
    expect(again.evicted).toEqual([a]);
  });

  it('a lock a crashed job left (not refreshed within staleMs) does not hold the bundle, and is removed', async () => {
    const a = await addBundle('a', 1, 300);
    await mkdir(join(cache, '.in-use', a), { recursive: true });
    const stale = join(cache, '.in-use', a, 'ip-10-0-0-1-7-deadbeef.lock');
    await writeFile(stale, '{"pid": 7}\n');
    const old = new Date(Date.now() - 11 * 60_000);
    await utimes(stale, old, old);
    const r = await makeRoom(cache, 300, hashOf('new'), { space: volume(700), minFreeBytes: 100 });
    expect(r.evicted).toEqual([a]);
    expect(existsSync(stale)).toBe(false);
  });

  it('a held lock is refreshed while the job runs, so a long job never looks crashed', async () => {
    const a = await addBundle('a', 1, 300);
    const hold = await holdBundle(cache, a, { heartbeatMs: 20, staleMs: 200 });
    const [name] = await readdir(join(cache, '.in-use', a));
    const lockPath = join(cache, '.in-use', a, name);
    const old = new Date(Date.now() - 60_000);
    await utimes(lockPath, old, old);
    await new Promise((r) => setTimeout(r, 120));
    expect(Date.now() - (await stat(lockPath)).mtimeMs).toBeLessThan(200);
    await expect(makeRoom(cache, 300, hashOf('new'), { space: volume(700), minFreeBytes: 100, heartbeatMs: 20, staleMs: 200 })).rejects.toThrow(CacheFullError);
    expect(present(a)).toBe(true);
    await hold.release();
  });

  it('a blob of the store stays while any bundle links it, and goes with the last one', async () => {
    const a = await addBundle('a', 1, 100, { unet: 400 });
    const b = await addBundle('b', 2, 100, { unet: 400 });
    const unet = blobPath(cache, hashOf('unet'));
    // 600 used (the shared blob once) of 1000; 500 needed, 100 kept: a alone frees only its own 100 bytes.
    const r = await makeRoom(cache, 500, hashOf('new'), { space: volume(1000), minFreeBytes: 100 });
    expect(r.evicted).toEqual([a, b]);
    expect(existsSync(unet)).toBe(false);
    expect(r.free).toBe(1000);
  });

  it('while a download is in progress, blobs no bundle links are kept (the download may be about to link them)', async () => {
    const a = await addBundle('a', 1, 100, { vae: 300 });
    const partial = await partialDir(cache);
    await expect(makeRoom(cache, 700, hashOf('new'), { space: volume(1000), minFreeBytes: 100 })).rejects.toThrow(CacheFullError);
    expect(present(a)).toBe(false);
    expect(existsSync(blobPath(cache, hashOf('vae')))).toBe(true);
    await rm(partial, { recursive: true });
  });

  it('refuses clearly, evicting nothing, a bundle that cannot fit even in an empty cache', async () => {
    const a = await addBundle('a', 1, 300);
    const err = await makeRoom(cache, 950, hashOf('huge'), { space: volume(1000), minFreeBytes: 100 }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(CacheFullError);
    expect((err as Error).message).toMatch(/a bundle of 950 bytes cannot fit in the model cache at .*: the volume holds 1000 bytes and 100 bytes must stay free \(CIL_MODEL_CACHE_MIN_FREE_GIB\)/);
    expect(present(a)).toBe(true);
  });

  it('refuses clearly when the bundles in use leave too little room, naming how many', async () => {
    const a = await addBundle('a', 1, 400);
    const b = await addBundle('b', 2, 400);
    const holds = [await holdBundle(cache, a), await holdBundle(cache, b)];
    const err = await makeRoom(cache, 300, hashOf('new'), { space: volume(1000), minFreeBytes: 100 }).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(CacheFullError);
    expect((err as Error).message).toMatch(/after evicting 0 bundle\(s\).*2 bundle\(s\) are in use by other jobs on this instance/);
    expect([present(a), present(b)]).toEqual([true, true]);
    for (const h of holds) await h.release();
  });

  it('the floor: the option, $CIL_MODEL_CACHE_MIN_FREE_GIB, else 10 GiB; a bad value is refused by name', () => {
    expect(minFreeBytes({ minFreeBytes: 5 })).toBe(5);
    expect(minFreeBytes({}, { CIL_MODEL_CACHE_MIN_FREE_GIB: '2.5' })).toBe(2.5 * 1024 ** 3);
    expect(minFreeBytes({}, {})).toBe(10 * 1024 ** 3);
    expect(() => minFreeBytes({}, { CIL_MODEL_CACHE_MIN_FREE_GIB: 'lots' })).toThrow(/CIL_MODEL_CACHE_MIN_FREE_GIB must be a number of GiB ≥ 0, got 'lots'/);
  });

  it('a bundle not in the cache is held but not complete', async () => {
    const hold = await holdBundle(cache, hashOf('missing'));
    expect(hold.complete).toBe(false);
    await hold.release();
  });
});
