/**
 * The Spot interruption notice. ECS draining does not stop a standalone Batch task, so the worker
 * itself polls the instance metadata service (IMDSv2) for `spot/instance-action`, which EC2 sets
 * about two minutes before it reclaims the instance. On a notice the job is aborted as on SIGTERM:
 * it checkpoints and exits 143, which Batch retries, and the next attempt resumes.
 *
 * The stack's launch template keeps IMDSv2's hop limit at 1, so containers cannot reach the
 * instance role's credentials, nor IMDS: there the host polls IMDS and writes the notice to
 * `.spot-instance-action` in the cache volume, and the worker watches that file
 * ($CIL_SPOT_NOTICE_FILE, default $CIL_CACHE_DIR/.spot-instance-action). Where a container can
 * reach IMDS (hop limit 2), the worker polls it itself.
 *
 * Off outside EC2: when AWS_EC2_METADATA_DISABLED=true or CIL_SPOT_WATCH=off, when nothing says
 * this is a Batch/ECS container (spotWatchEnabled), or when the token call fails within a short
 * timeout (no metadata service answers). The endpoint is the SDK's
 * AWS_EC2_METADATA_SERVICE_ENDPOINT when set (tests use a fake on 127.0.0.1).
 */
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';

export const IMDS_DEFAULT_ENDPOINT = 'http://169.254.169.254';
const TOKEN_TTL_S = 21600;

export interface SpotWatchOptions {
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Poll interval (default $CIL_SPOT_POLL_MS, else 5 s: the notice comes two minutes ahead). */
  readonly intervalMs?: number;
  /** Timeout of each metadata call (default 1 s). */
  readonly timeoutMs?: number;
  /** Called once, with the notice (`{action, time}` as EC2 gives it). */
  readonly onNotice: (notice: SpotNotice) => void;
  readonly log?: (line: Record<string, unknown>) => void;
}

export interface SpotNotice {
  readonly action: string;
  readonly time: string | null;
}

export interface SpotWatch {
  /** Whether the watch runs (false outside EC2 or when turned off). */
  readonly active: boolean;
  stop(): void;
}

interface HttpAnswer {
  readonly status: number;
  readonly body: string;
}

function call(url: string, method: 'GET' | 'PUT', headers: Record<string, string>, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Reads `{action, time}`; anything else from the endpoint is not a notice. */
export function parseNotice(body: string): SpotNotice | null {
  try {
    const j = JSON.parse(body) as { action?: unknown; time?: unknown };
    if (typeof j.action !== 'string' || !/^(terminate|stop|hibernate)$/.test(j.action)) return null;
    return { action: j.action, time: typeof j.time === 'string' ? j.time.slice(0, 64) : null };
  } catch {
    return null;
  }
}

/**
 * Whether the watch may run here at all, by the environment alone: not turned off, and either an
 * endpoint is named or this is a container on EC2 (Batch or ECS set these). A laptop running
 * `cil worker` by hand makes no metadata call.
 */
export function spotWatchEnabled(env: Readonly<Record<string, string | undefined>>): boolean {
  if (env.AWS_EC2_METADATA_DISABLED?.toLowerCase() === 'true' || env.CIL_SPOT_WATCH === 'off') return false;
  return Boolean(env.AWS_EC2_METADATA_SERVICE_ENDPOINT || env.AWS_BATCH_JOB_ID || env.ECS_CONTAINER_METADATA_URI_V4 || env.ECS_CONTAINER_METADATA_URI);
}

/**
 * Starts polling; resolves once the first token call has told whether a metadata service is
 * there (inactive otherwise). Polling never keeps the process alive.
 */
/** The host-written notice file, when there is a cache volume or it is named. */
export function spotNoticeFile(env: Readonly<Record<string, string | undefined>>): string | null {
  if (env.CIL_SPOT_NOTICE_FILE) return env.CIL_SPOT_NOTICE_FILE;
  return env.CIL_CACHE_DIR ? join(env.CIL_CACHE_DIR, SPOT_NOTICE_FILE_NAME) : null;
}

/** The file the host's IMDS poller writes in the cache volume (the launch template's contract). */
export const SPOT_NOTICE_FILE_NAME = '.spot-instance-action';

export async function watchSpotInterruption(o: SpotWatchOptions): Promise<SpotWatch> {
  const env = o.env ?? process.env;
  const log = o.log ?? ((): void => undefined);
  const off: SpotWatch = { active: false, stop: () => undefined };
  if (env.CIL_SPOT_WATCH === 'off') return off;
  const file = spotNoticeFile(env);
  const imds = spotWatchEnabled(env) ? await imdsWatch(o, env, log) : null;
  if (!imds && !file) return off;
  const every = o.intervalMs ?? (Number(env.CIL_SPOT_POLL_MS) >= 10 ? Number(env.CIL_SPOT_POLL_MS) : 5000);
  let stopped = false;
  let busy = false;
  const fire = (notice: SpotNotice, via: string): void => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    log({ event: 'spot-notice', action: notice.action, time: notice.time, via });
    o.onNotice(notice);
  };
  const poll = async (): Promise<void> => {
    if (busy || stopped) return;
    busy = true;
    try {
      if (file) {
        const text = await readFile(file, 'utf8').catch(() => null);
        const n = text === null ? null : parseNotice(text);
        if (n) return fire(n, file);
      }
      if (imds) {
        const n = await imds.poll();
        if (n) fire(n, 'imds');
      }
    } catch (e) {
      // One missed poll is not a notice; the next one tries again.
      log({ event: 'warning', message: `spot notice poll failed: ${(e as Error).message}` });
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void poll(), every);
  timer.unref();
  log({ event: 'spot-watch', active: true, imds: imds !== null, file });
  return {
    active: true,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}

/** IMDSv2 from this process: a token (null when no service answers), then one GET per poll. */
async function imdsWatch(o: SpotWatchOptions, env: Readonly<Record<string, string | undefined>>, log: (l: Record<string, unknown>) => void): Promise<{ poll(): Promise<SpotNotice | null> } | null> {
  const base = (env.AWS_EC2_METADATA_SERVICE_ENDPOINT ?? IMDS_DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const timeoutMs = o.timeoutMs ?? 1000;
  const getToken = async (): Promise<string> => {
    const r = await call(`${base}/latest/api/token`, 'PUT', { 'X-aws-ec2-metadata-token-ttl-seconds': String(TOKEN_TTL_S) }, timeoutMs);
    if (r.status !== 200 || r.body === '') throw new Error(`token call answered HTTP ${r.status}`);
    return r.body;
  };
  let token: string;
  try {
    token = await getToken();
  } catch (e) {
    log({ event: 'spot-watch', imds: false, reason: `no instance metadata service (${(e as Error).message})` });
    return null;
  }
  const url = `${base}/latest/meta-data/spot/instance-action`;
  return {
    async poll() {
      let r = await call(url, 'GET', { 'X-aws-ec2-metadata-token': token }, timeoutMs);
      if (r.status === 401) {
        token = await getToken();
        r = await call(url, 'GET', { 'X-aws-ec2-metadata-token': token }, timeoutMs);
      }
      // 404: no notice (or not a Spot instance). 200: the notice.
      return r.status === 200 ? parseNotice(r.body) : null;
    },
  };
}
