/**
 * Eviction of the host model cache (docs/worker.md "Model cache"). The cache on the instance's
 * NVMe volume holds one folder per bundle, `<cache>/<content hash>/`, whose files are hard links
 * into the content-addressed store `<cache>/blobs/sha256/`. Before a download, when the volume's
 * free space would fall below a floor (`CIL_MODEL_CACHE_MIN_FREE_GIB`), the least recently used
 * bundles are removed, then the store's blobs no bundle links any more, until the download fits.
 *
 * A bundle a job is using is never removed. Each job marks its bundle in use with a lock file,
 * `<cache>/.in-use/<hash>/<owner>.lock` (pid, host, start), refreshed every `heartbeatMs` and
 * removed when the job ends. Jobs run in separate containers (separate PID namespaces), so a pid
 * cannot tell another container's job from a dead one: a lock whose refresh is older than `staleMs`
 * is a crashed job's and no longer counts (it is removed). The in-use marking and the check for
 * the bundle, and the eviction's check and removal, run under one short mutex (`<cache>/.mutex`, a
 * directory: mkdir is atomic), so a job never opens a bundle that is being removed.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, rmdir, stat, statfs, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';

export class CacheFullError extends Error {
  override readonly name = 'CacheFullError';
}

export interface CacheSpace {
  /** Bytes available to this process on the cache's volume. */
  readonly free: number;
  /** The volume's size in bytes. */
  readonly total: number;
}

/** How full the cache's volume is (tests give their own). */
export type SpaceProbe = (dir: string) => Promise<CacheSpace>;

export const volumeSpace: SpaceProbe = async (dir) => {
  const s = await statfs(dir);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
};

export interface CacheOptions {
  /** Free bytes to keep on the volume after a download (default $CIL_MODEL_CACHE_MIN_FREE_GIB, else 10 GiB). */
  readonly minFreeBytes?: number;
  readonly space?: SpaceProbe;
  /** How often a job refreshes its in-use lock (default 60 s). */
  readonly heartbeatMs?: number;
  /** A lock not refreshed for this long is a crashed job's (default 10 min). */
  readonly staleMs?: number;
  readonly now?: () => number;
  readonly log?: (line: Record<string, unknown>) => void;
}

const GIB = 1024 ** 3;
const BUNDLE_DIR = /^[0-9a-f]{64}$/;
const IN_USE = '.in-use';
const MUTEX = '.mutex';

/** The floor of free space: the option, $CIL_MODEL_CACHE_MIN_FREE_GIB (a number ≥ 0), else 10 GiB. */
export function minFreeBytes(o: CacheOptions = {}, env: Readonly<Record<string, string | undefined>> = process.env): number {
  if (o.minFreeBytes !== undefined) return o.minFreeBytes;
  const raw = env.CIL_MODEL_CACHE_MIN_FREE_GIB;
  if (raw === undefined || raw.trim() === '') return 10 * GIB;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new CacheFullError(`CIL_MODEL_CACHE_MIN_FREE_GIB must be a number of GiB ≥ 0, got '${raw}'`);
  return Math.round(n * GIB);
}

function settings(o: CacheOptions): { heartbeatMs: number; staleMs: number; now: () => number } {
  const heartbeatMs = o.heartbeatMs ?? 60_000;
  const staleMs = o.staleMs ?? 10 * 60_000;
  if (staleMs <= heartbeatMs) throw new CacheFullError(`the in-use lock's staleness (${staleMs} ms) must exceed its refresh interval (${heartbeatMs} ms)`);
  return { heartbeatMs, staleMs, now: o.now ?? Date.now };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs `fn` holding the cache's mutex; a mutex older than `staleMs` is a crashed holder's and is broken. */
async function withMutex<T>(cacheDir: string, o: CacheOptions, fn: () => Promise<T>): Promise<T> {
  const { staleMs, now } = settings(o);
  const dir = join(cacheDir, MUTEX);
  await mkdir(cacheDir, { recursive: true });
  for (let waited = 0; ; waited += 20) {
    try {
      await mkdir(dir);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const st = await stat(dir).catch(() => null);
      if (st && now() - st.mtimeMs > Math.min(staleMs, 60_000)) await rmdir(dir).catch(() => undefined);
      if (waited > staleMs) throw new CacheFullError(`the model cache's mutex ${dir} has been held for over ${staleMs} ms`);
      await sleep(20);
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(dir).catch(() => undefined);
  }
}

/** Whether a live job holds `hash`; stale locks (crashed jobs) are removed on the way. */
async function inUse(cacheDir: string, hash: string, o: CacheOptions): Promise<boolean> {
  const { staleMs, now } = settings(o);
  const dir = join(cacheDir, IN_USE, hash);
  let live = false;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const st = await stat(join(dir, name)).catch(() => null);
    if (st === null) continue;
    if (now() - st.mtimeMs <= staleMs) live = true;
    else await rm(join(dir, name), { force: true });
  }
  return live;
}

/** A job's hold on a bundle of the cache: refreshed while it runs, released at its end. */
export interface BundleHold {
  /** Whether the bundle was complete in the cache when the hold was taken. */
  readonly complete: boolean;
  readonly release: () => Promise<void>;
}

/**
 * Marks bundle `hash` in use (so no other job evicts it) and says whether it is complete in the
 * cache; the bundle's last use is now (its `.complete` file's time is the LRU clock).
 */
export async function holdBundle(cacheDir: string, hash: string, o: CacheOptions = {}): Promise<BundleHold> {
  const { heartbeatMs, now } = settings(o);
  const dir = join(cacheDir, IN_USE, hash);
  const lock = join(dir, `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}.lock`);
  const complete = await withMutex(cacheDir, o, async () => {
    await mkdir(dir, { recursive: true });
    await writeFile(lock, `${JSON.stringify({ pid: process.pid, host: hostname(), since: new Date(now()).toISOString() })}\n`);
    return touchLastUsed(cacheDir, hash, now());
  });
  const timer = setInterval(() => {
    const t = new Date(now());
    utimes(lock, t, t).catch(() => undefined);
  }, heartbeatMs);
  timer.unref();
  let released = false;
  return {
    complete,
    release: async () => {
      if (released) return;
      released = true;
      clearInterval(timer);
      // Under the mutex: another job may be making these folders to mark its own use.
      await withMutex(cacheDir, o, async () => {
        await rm(lock, { force: true });
        await rmdir(dir).catch(() => undefined);
        await rmdir(join(cacheDir, IN_USE)).catch(() => undefined);
      });
    },
  };
}

/** Sets the bundle's last use to `at`; false when it is not complete in the cache. */
export async function touchLastUsed(cacheDir: string, hash: string, at: number): Promise<boolean> {
  try {
    const t = new Date(at);
    await utimes(join(cacheDir, hash, '.complete'), t, t);
    return true;
  } catch {
    return false;
  }
}

export interface Eviction {
  /** Bundles removed, oldest first. */
  readonly evicted: string[];
  /** Free bytes on the volume afterwards. */
  readonly free: number;
}

/**
 * Makes room for `neededBytes` more in the cache, keeping `minFreeBytes` free: removes the least
 * recently used bundles that no live job holds (never `keep`, the bundle being opened), then blobs
 * no bundle links any more. CacheFullError when the bundle cannot fit even in an empty cache, or
 * when what is in use leaves too little room.
 */
export async function makeRoom(cacheDir: string, neededBytes: number, keep: string, o: CacheOptions = {}): Promise<Eviction> {
  settings(o);
  const space = o.space ?? volumeSpace;
  const floor = minFreeBytes(o);
  const gib = (b: number): string => (b >= GIB / 100 ? `${(b / GIB).toFixed(2)} GiB` : `${b} bytes`);
  await mkdir(cacheDir, { recursive: true });
  const first = await space(cacheDir);
  if (neededBytes + floor > first.total) {
    throw new CacheFullError(
      `a bundle of ${gib(neededBytes)} cannot fit in the model cache at ${cacheDir}: the volume holds ${gib(first.total)} and ${gib(floor)} must stay free (CIL_MODEL_CACHE_MIN_FREE_GIB); use an instance type with a larger instance store or a larger root volume (rootVolumeGiB)`,
    );
  }
  if (first.free - neededBytes >= floor) return { evicted: [], free: first.free };
  const evicted: string[] = [];
  const held: string[] = [];
  let free = first.free;
  const entries = await bundlesByLastUse(cacheDir);
  for (const { hash } of entries) {
    if (hash === keep) continue;
    const removed = await withMutex(cacheDir, o, async () => {
      if (await inUse(cacheDir, hash, o)) return null;
      // Out of sight first (an atomic rename), so no job opens it half-removed.
      const gone = join(cacheDir, `.evicting-${hash}-${randomBytes(4).toString('hex')}`);
      await rename(join(cacheDir, hash), gone);
      return gone;
    });
    if (removed === null) {
      held.push(hash);
      continue;
    }
    await rm(removed, { recursive: true, force: true });
    await removeOrphanBlobs(cacheDir, o);
    evicted.push(hash);
    o.log?.({ event: 'model-cache-evicted', bundle: hash });
    free = (await space(cacheDir)).free;
    if (free - neededBytes >= floor) return { evicted, free };
  }
  throw new CacheFullError(
    `the model cache at ${cacheDir} has ${gib(free)} free after evicting ${evicted.length} bundle(s), but this bundle needs ${gib(neededBytes)} and ${gib(floor)} must stay free; ` +
      `${held.length} bundle(s) are in use by other jobs on this instance (${held.map((h) => h.slice(0, 12)).join(', ') || 'none'})`,
  );
}

/** The complete bundles of the cache, least recently used first. */
async function bundlesByLastUse(cacheDir: string): Promise<{ hash: string; lastUsed: number }[]> {
  const out: { hash: string; lastUsed: number }[] = [];
  for (const name of await readdir(cacheDir)) {
    if (!BUNDLE_DIR.test(name)) continue;
    const st = await stat(join(cacheDir, name, '.complete')).catch(() => null);
    if (st !== null) out.push({ hash: name, lastUsed: st.mtimeMs });
  }
  return out.sort((a, b) => a.lastUsed - b.lastUsed || a.hash.localeCompare(b.hash));
}

/** A partial folder older than this is a crashed download's (a Batch attempt ends far sooner). */
const PARTIAL_ABANDONED_MS = 6 * 3600_000;

/**
 * A private folder for a bundle being assembled (`<cache>/.partial-*`), made under the mutex: blob
 * collection, also under it, runs only while no download is in progress, so a blob a download
 * found in the store is never removed before the download links it.
 */
export async function partialDir(cacheDir: string, o: CacheOptions = {}): Promise<string> {
  const dir = join(cacheDir, `.partial-${randomBytes(6).toString('hex')}`);
  await withMutex(cacheDir, o, () => mkdir(dir, { recursive: true }));
  return dir;
}

/**
 * Blobs of the store that no bundle links any more (one link: the store's own), removed under the
 * mutex when no download is in progress; partial folders of crashed downloads are removed too.
 */
async function removeOrphanBlobs(cacheDir: string, o: CacheOptions): Promise<void> {
  const now = settings(o).now();
  await withMutex(cacheDir, o, async () => {
    let downloading = false;
    for (const name of await readdir(cacheDir)) {
      if (!name.startsWith('.partial-')) continue;
      const st = await stat(join(cacheDir, name)).catch(() => null);
      if (st !== null && now - st.mtimeMs > PARTIAL_ABANDONED_MS) await rm(join(cacheDir, name), { recursive: true, force: true });
      else downloading = true;
    }
    if (downloading) return;
    const dir = join(cacheDir, 'blobs', 'sha256');
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      const st = await stat(join(dir, name)).catch(() => null);
      if (st !== null && st.nlink <= 1) await rm(join(dir, name), { force: true });
    }
  });
}
