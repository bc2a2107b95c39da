/**
 * The Spot interruption notice. ECS draining does not stop a standalone Batch task, so the worker
 * itself polls the instance metadata service (IMDSv2) for `spot/instance-action`, which EC2 sets
 * about two minutes before it reclaims the instance. On a notice the job is aborted as on SIGTERM:
 * it checkpoints and exits 143, which Batch retries, and the next attempt resumes.
 *
 * Off outside EC2: when AWS_EC2_METADATA_DISABLED=true or CIL_SPOT_WATCH=off, when nothing says
 * this is a Batch/ECS container (spotWatchEnabled), or when the token call fails within a short
 * timeout (no metadata service answers). The endpoint is the SDK's
 * AWS_EC2_METADATA_SERVICE_ENDPOINT when set (tests use a fake on 127.0.0.1).
 */
import { request } from 'node:http';

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
export async function watchSpotInterruption(o: SpotWatchOptions): Promise<SpotWatch> {
  const env = o.env ?? process.env;
  const log = o.log ?? ((): void => undefined);
  const off: SpotWatch = { active: false, stop: () => undefined };
  if (!spotWatchEnabled(env)) return off;
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
    log({ event: 'spot-watch', active: false, reason: `no instance metadata service (${(e as Error).message})` });
    return off;
  }
  let stopped = false;
  let busy = false;
  const poll = async (): Promise<void> => {
    if (busy || stopped) return;
    busy = true;
    try {
      let r = await call(`${base}/latest/meta-data/spot/instance-action`, 'GET', { 'X-aws-ec2-metadata-token': token }, timeoutMs);
      if (r.status === 401) {
        token = await getToken();
        r = await call(`${base}/latest/meta-data/spot/instance-action`, 'GET', { 'X-aws-ec2-metadata-token': token }, timeoutMs);
      }
      // 404: no notice (or not a Spot instance). 200: the notice.
      const notice = r.status === 200 ? parseNotice(r.body) : null;
      if (notice && !stopped) {
        stopped = true;
        clearInterval(timer);
        log({ event: 'spot-notice', action: notice.action, time: notice.time });
        o.onNotice(notice);
      }
    } catch (e) {
      // One missed poll is not a notice; the next one tries again.
      log({ event: 'warning', message: `spot notice poll failed: ${(e as Error).message}` });
    } finally {
      busy = false;
    }
  };
  const every = o.intervalMs ?? (Number(env.CIL_SPOT_POLL_MS) >= 10 ? Number(env.CIL_SPOT_POLL_MS) : 5000);
  const timer = setInterval(() => void poll(), every);
  timer.unref();
  log({ event: 'spot-watch', active: true, endpoint: base });
  return {
    active: true,
    stop: () => {
      stopped = true;
      clearInterval(timer);
    },
  };
}
