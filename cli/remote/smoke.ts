/**
 * `cil smoke`: the check after a deploy. For each model bundle in the data bucket (models/<id>/),
 * upload a built-in test card at the model's resolution, wait for the job's outcome in the bucket
 * (outputs/<jobId>/result.json or failures/<jobId>.json), and report per job the execution
 * provider, the timings the worker measured (model download, session open, mean step, total) and
 * a cost estimate. It fails unless every job succeeded on CUDA: a deploy whose GPUs do not work is
 * not a working deploy. `allowCpu` relaxes the provider check, for the local pipeline's tests only.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { jobKeys, parseManifest, PREFIX } from '#shared/schemas';
import { getObjectBytes } from '../../storage/src/location.ts';
import { testCardPng } from '../../local/src/testCard.ts';
import type { StackInfo } from './ops.ts';
import { submitImage } from './ops.ts';
import { printable } from '../printable.ts';

/**
 * On-demand list prices (USD per instance-hour, us-east-1) of the GPU instance types the stack
 * can use. ESTIMATES: prices change and differ by Region; Spot is typically 60–70 % lower. A
 * multi-GPU type is divided by its GPU count (one job per GPU).
 */
export const GPU_HOURLY_USD: Readonly<Record<string, { readonly usd: number; readonly gpus: number }>> = Object.freeze({
  'g5.xlarge': { usd: 1.006, gpus: 1 },
  'g5.2xlarge': { usd: 1.212, gpus: 1 },
  'g6.xlarge': { usd: 0.805, gpus: 1 },
  'g6.2xlarge': { usd: 0.978, gpus: 1 },
  'g6e.xlarge': { usd: 1.861, gpus: 1 },
  'g6e.2xlarge': { usd: 2.242, gpus: 1 },
  'p4d.24xlarge': { usd: 32.773, gpus: 8 },
  'p5.48xlarge': { usd: 98.32, gpus: 8 },
});

export class SmokeError extends Error {
  override readonly name = 'SmokeError';
}

export interface SmokeOptions {
  /** Only these model ids (default: every bundle under models/). */
  readonly models?: readonly string[];
  /** Denoising steps of each smoke job (default: the model's default). */
  readonly steps?: number;
  /** Instance type for the cost estimate (default g6.xlarge), or a price per GPU-hour. */
  readonly instanceType?: string;
  readonly hourlyUsd?: number;
  /** Give up waiting after this long (default 30 min). */
  readonly timeoutMs?: number;
  readonly pollMs?: number;
  /** Accept a job that ran on the CPU (tests on the local pipeline only). */
  readonly allowCpu?: boolean;
  /** A tag in the upload keys (default: the time), so that each smoke run is new jobs. */
  readonly runId?: string;
  readonly onProgress?: (line: string) => void;
}

export interface SmokeJob {
  readonly model: string;
  readonly jobId: string;
  readonly key: string;
  readonly status: 'succeeded' | 'failed' | 'timed-out';
  readonly error: string | null;
  readonly executionProvider: string | null;
  readonly timings: { readonly downloadS: number | null; readonly sessionOpenS: number | null; readonly stepS: number | null; readonly totalS: number | null };
  /** USD: (download + session open + generation) × price per GPU-second; an estimate. */
  readonly costUsd: number | null;
  /** Why this job fails the smoke test, null when it passes. */
  readonly problem: string | null;
}

export interface SmokeReport {
  readonly ok: boolean;
  readonly pricePerGpuHourUsd: number;
  readonly priceSource: string;
  readonly jobs: SmokeJob[];
}

export function pricePerGpuHour(o: Pick<SmokeOptions, 'instanceType' | 'hourlyUsd'>): { usd: number; source: string } {
  if (o.hourlyUsd !== undefined) return { usd: o.hourlyUsd, source: 'given' };
  const type = o.instanceType ?? 'g6.xlarge';
  const p = GPU_HOURLY_USD[type];
  if (!p) throw new SmokeError(`no price known for instance type '${type}' (known: ${Object.keys(GPU_HOURLY_USD).join(', ')}); pass --hourly-usd`);
  return { usd: p.usd / p.gpus, source: `${type} on-demand list price, us-east-1 (estimate)` };
}

/** Model ids with a manifest under models/. */
export async function deployedModels(s3: Pick<S3Client, 'send'>, bucket: string): Promise<string[]> {
  const ids = new Set<string>();
  let token: string | undefined;
  do {
    const r = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: PREFIX.models, ContinuationToken: token }));
    for (const o of r.Contents ?? []) {
      const m = /^models\/([^/]+)\/manifest\.json$/.exec(o.Key ?? '');
      if (m) ids.add(m[1]);
    }
    token = r.IsTruncated ? r.NextContinuationToken : undefined;
  } while (token);
  return [...ids].sort();
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export async function runSmoke(s3: S3Client, stack: StackInfo, o: SmokeOptions = {}): Promise<SmokeReport> {
  const price = pricePerGpuHour(o);
  const say = o.onProgress ?? ((): void => undefined);
  const all = await deployedModels(s3, stack.bucket);
  const models = o.models && o.models.length > 0 ? o.models : all;
  for (const m of models) if (!all.includes(m)) throw new SmokeError(`model '${m}' is not deployed (models/ holds: ${all.join(', ') || 'none'})`);
  if (models.length === 0) throw new SmokeError(`no model bundles under s3://${stack.bucket}/${PREFIX.models}: deploy one first (docs/models.md)`);
  const runId = o.runId ?? new Date().toISOString().replace(/[-:.]/g, '').replace('T', '-').slice(0, 15);

  const submitted = [];
  for (const model of models) {
    const bytes = await getObjectBytes(s3, stack.bucket, `${PREFIX.models}${model}/manifest.json`);
    const manifest = parseManifest(JSON.parse(Buffer.from(bytes!).toString('utf8')), `models/${model}/manifest.json`);
    const card = await testCardPng(manifest.resolution.width, manifest.resolution.height);
    const request: Record<string, unknown> = { model, prompt: 'smoke test: the test card pans left', ...(o.steps !== undefined ? { steps: o.steps } : {}) };
    const s = await submitImage({ s3 }, stack, card, 'smoke.png', request, `${PREFIX.inputs}smoke/${runId}/${model}.png`);
    say(`submitted ${model}: job ${s.jobId}`);
    submitted.push({ model, jobId: s.jobId, key: s.key });
  }

  const deadline = Date.now() + (o.timeoutMs ?? 30 * 60_000);
  const jobs: SmokeJob[] = [];
  for (const sub of submitted) {
    const keys = jobKeys(sub.jobId);
    let outcome: { status: 'succeeded' | 'failed' | 'timed-out'; error: string | null } | null = null;
    while (!outcome) {
      const failure = await getObjectBytes(s3, stack.bucket, keys.failure);
      if (failure) {
        const f = JSON.parse(Buffer.from(failure).toString('utf8')) as { error?: string; reason?: string; failedStep?: string };
        outcome = { status: 'failed', error: `${f.error ?? 'failed'} in ${f.failedStep ?? '?'}: ${f.reason ?? ''}`.slice(0, 500) };
      } else if (await getObjectBytes(s3, stack.bucket, `${keys.output}result.json`)) {
        outcome = { status: 'succeeded', error: null };
      } else if (Date.now() > deadline) {
        outcome = { status: 'timed-out', error: `no result after ${Math.round((o.timeoutMs ?? 1_800_000) / 1000)} s` };
      } else {
        await new Promise((r) => setTimeout(r, o.pollMs ?? 10_000));
      }
    }
    const metaBytes = (await getObjectBytes(s3, stack.bucket, `${keys.output}metadata.json`)) ?? (await getObjectBytes(s3, stack.bucket, keys.workerMetadata));
    const meta = metaBytes ? (JSON.parse(Buffer.from(metaBytes).toString('utf8')) as { executionProvider?: unknown; timings?: Record<string, unknown> }) : null;
    const t = meta?.timings ?? {};
    const timings = { downloadS: num(t.downloadS), sessionOpenS: num(t.sessionOpenS), stepS: num(t.stepS), totalS: num(t.totalS) };
    const provider = typeof meta?.executionProvider === 'string' ? meta.executionProvider : null;
    const billedS = timings.totalS === null ? null : timings.totalS + (timings.downloadS ?? 0) + (timings.sessionOpenS ?? 0);
    let problem: string | null = null;
    if (outcome.status !== 'succeeded') problem = outcome.error;
    else if (provider !== 'cuda' && !o.allowCpu) problem = `ran on ${provider ?? 'an unknown provider'}, not CUDA: the GPU is not being used (driver, CUDA or cuDNN; docs/operations.md)`;
    jobs.push({ model: sub.model, jobId: sub.jobId, key: sub.key, status: outcome.status, error: outcome.error, executionProvider: provider, timings, costUsd: billedS === null ? null : (billedS / 3600) * price.usd, problem });
    say(`${sub.model}: ${outcome.status}${provider ? ` on ${provider}` : ''}`);
  }
  return { ok: jobs.every((j) => j.problem === null), pricePerGpuHourUsd: price.usd, priceSource: price.source, jobs };
}

/** The report as a tab-separated table (text from the bucket escaped: printable.ts). */
export function formatSmoke(r: SmokeReport): string {
  const f = (v: number | null, d = 2): string => (v === null ? '-' : v.toFixed(d));
  const lines = [`model\tjob\tstatus\tprovider\tdownload s\tsession open s\tstep s\ttotal s\tcost USD (estimate)`];
  for (const j of r.jobs) lines.push([j.model, j.jobId, j.status, j.executionProvider ?? '-', f(j.timings.downloadS), f(j.timings.sessionOpenS), f(j.timings.stepS, 3), f(j.timings.totalS), f(j.costUsd, 4)].map((c) => printable(c)).join('\t'));
  lines.push(`price: ${r.pricePerGpuHourUsd.toFixed(3)} USD per GPU-hour (${r.priceSource})`);
  for (const j of r.jobs) if (j.problem) lines.push(printable(`FAILED ${j.model} (${j.jobId}): ${j.problem}`));
  lines.push(r.ok ? 'smoke test passed' : 'smoke test FAILED');
  return `${lines.join('\n')}\n`;
}
