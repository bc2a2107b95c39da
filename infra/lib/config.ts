/**
 * Deployment parameters: every one has a safe default, can be set through CDK context
 * (`cdk deploy -c cil:spot=false`, or the "context" block of cdk.json) or through the stack's
 * props, and is validated here so that a typo fails synth with a message naming the key.
 */
import { z } from 'zod';
import type { Family } from '#shared/schemas';

/**
 * AWS Batch's documented default quota for SubmitJob is 50 transactions per second per account
 * and Region. The batch-production map starts at most `batchMaxConcurrency` generation runs at
 * once, each submitting one Batch job shortly after it starts, so the concurrency is capped well
 * under that rate, leaving room for the upload-triggered runs and the statistics workflow.
 */
export const SUBMIT_JOB_RATE_LIMIT = 50;
export const MAX_BATCH_CONCURRENCY = 40;

/** CloudWatch Logs retention values (days) that the service accepts. */
export const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653] as const;

/** GPU instance families Batch may launch (the worker needs an NVIDIA GPU with CUDA 12). */
const GPU_INSTANCE_TYPE = /^(g4dn|g5|g6|g6e|gr6|p3|p3dn|p4d|p4de|p5|p5e)\.[0-9a-z]+$/;

const ResourceProfile = z.strictObject({
  vcpus: z.int().min(1).max(192),
  memoryMiB: z.int().min(1024).max(2_000_000),
});
export type ResourceProfile = z.infer<typeof ResourceProfile>;

const FAMILIES = ['dynamicrafter', 'videocrafter', 'svd'] as const satisfies readonly Family[];

const ModelProfiles = z.strictObject({
  dynamicrafter: ResourceProfile,
  videocrafter: ResourceProfile,
  svd: ResourceProfile,
});
export type ModelProfiles = Record<Family, ResourceProfile>;

const Email = z.email();

/** One node of the fine-tuning job (docs/finetuning.md): vCPUs, memory and GPUs it asks for. */
const FinetuneNodeProfile = z.strictObject({
  vcpus: z.int().min(1).max(192),
  memoryMiB: z.int().min(4096).max(4_000_000),
  gpus: z.int().min(1).max(16),
});
export type FinetuneNodeProfile = z.infer<typeof FinetuneNodeProfile>;

export const CilConfigSchema = z.strictObject({
  /** GPU instance types the compute environments may launch. */
  instanceTypes: z.array(z.string().regex(GPU_INSTANCE_TYPE, 'must be a GPU instance type such as g5.xlarge or g6.2xlarge')).min(1),
  /** Upper bound of the Spot (or, with spot off, the on-demand) compute environment. */
  maxVcpus: z.int().min(1).max(10_000),
  /** Run GPU jobs on Spot instances (the worker checkpoints on SIGTERM, and Batch retries reclaims). */
  spot: z.boolean(),
  /** With spot on: add an on-demand compute environment after the Spot one in the job queue. */
  onDemandFallback: z.boolean(),
  /** Upper bound of the on-demand fallback environment. */
  onDemandMaxVcpus: z.int().min(1).max(10_000),
  /** Root EBS volume of each GPU instance: container images, model cache and job scratch. */
  rootVolumeGiB: z.int().min(100).max(16_384),
  /** vCPUs and memory a generation job asks for, per model family. */
  modelProfiles: ModelProfiles,
  /** vCPUs and memory of one statistics shard (a GPU job). */
  statisticsProfile: ResourceProfile,
  /** Batch's per-attempt timeout of a generation job. */
  generateAttemptMinutes: z.int().min(5).max(24 * 60),
  /** Step Functions' timeout of the whole Generate step (queueing, all attempts). */
  generateTimeoutHours: z.int().min(1).max(72),
  /** Batch attempts per job (host/Spot terminations and worker interruptions are retried). */
  batchRetryAttempts: z.int().min(1).max(10),
  /** Generation runs the batch-production map keeps in flight. */
  batchMaxConcurrency: z.int().min(1).max(MAX_BATCH_CONCURRENCY),
  /** Percentage of manifest lines that may fail before the batch run fails. */
  batchToleratedFailurePercentage: z.number().min(0).max(100),
  /** Step Functions' timeout of the statistics shards step. */
  statisticsTimeoutHours: z.int().min(1).max(168),
  /** Subscribed by email to job notifications (success and failure). */
  notificationEmail: Email.optional(),
  /** Subscribed by email to operational alarms (defaults to notificationEmail). */
  alarmEmail: Email.optional(),
  /** Expiry of the presigned output URLs in notifications; 0 sends keys only. */
  presignExpirySeconds: z.int().min(0).max(7 * 24 * 3600),
  logRetentionDays: z.union(LOG_RETENTION_DAYS.map((d) => z.literal(d))),
  /** Log the states' input and output in the workflows' log groups (may contain prompts). */
  includeExecutionData: z.boolean(),
  natGateways: z.int().min(1).max(3),
  /** jobs/ (per-job working files) expire after this many days. */
  scratchRetentionDays: z.int().min(1).max(3650),
  /** Checkpoint objects (tagged cil-kind=checkpoint) expire after this many days. */
  checkpointRetentionDays: z.int().min(1).max(3650),
  /** statistics/partials/ expire after this many days (the merged file is what is kept). */
  partialsRetentionDays: z.int().min(1).max(3650),
  /** Overwritten or deleted object versions are kept this many days. */
  noncurrentVersionDays: z.int().min(1).max(3650),
  /** Alarm when a Batch job has waited RUNNABLE longer than this. */
  runnableAlarmMinutes: z.int().min(5).max(24 * 60),
  /** Alarm when at least this many executions fail (or time out) within 5 minutes. */
  failedExecutionsThreshold: z.int().min(1).max(10_000),
  /** Deploy the TimeNoise fine-tuning workflow (docs/finetuning.md): its own on-demand GPU fleet and image. */
  finetune: z.boolean(),
  /** Instance types of the fine-tuning compute environment (multi-GPU; multi-node jobs run on-demand only). */
  finetuneInstanceTypes: z.array(z.string().regex(GPU_INSTANCE_TYPE, 'must be a GPU instance type such as p4d.24xlarge')).min(1),
  /** What one node of the fine-tuning job asks for. */
  finetuneNode: FinetuneNodeProfile,
  /** Nodes of a fine-tuning job unless the execution input says otherwise. */
  finetuneNodes: z.int().min(1).max(64),
  /** Upper bound of the fine-tuning compute environment (bounds the nodes an execution may ask for). */
  finetuneMaxVcpus: z.int().min(1).max(20_000),
  /** Root EBS volume of each fine-tuning instance: image, inputs, dataset copy, checkpoints in flight. */
  finetuneVolumeGiB: z.int().min(200).max(16_384),
  /** Batch's per-attempt timeout of the training job (an interrupted attempt resumes from its checkpoint). */
  finetuneTimeoutHours: z.int().min(1).max(14 * 24),
});
export type CilConfig = z.infer<typeof CilConfigSchema>;

export const DEFAULT_CONFIG: CilConfig = Object.freeze({
  instanceTypes: ['g5.xlarge', 'g5.2xlarge', 'g6.xlarge', 'g6.2xlarge'],
  maxVcpus: 32,
  spot: true,
  onDemandFallback: true,
  onDemandMaxVcpus: 16,
  rootVolumeGiB: 200,
  // A g5/g6.xlarge has 4 vCPUs and 16 GiB (about 15.3 GiB left to containers); SVD at 576×1024
  // decodes more frames at a larger size, so it takes a .2xlarge (8 vCPUs, 32 GiB).
  modelProfiles: {
    dynamicrafter: { vcpus: 4, memoryMiB: 14_800 },
    videocrafter: { vcpus: 4, memoryMiB: 14_800 },
    svd: { vcpus: 8, memoryMiB: 30_000 },
  },
  statisticsProfile: { vcpus: 4, memoryMiB: 14_800 },
  generateAttemptMinutes: 60,
  generateTimeoutHours: 6,
  batchRetryAttempts: 3,
  batchMaxConcurrency: 10,
  batchToleratedFailurePercentage: 10,
  statisticsTimeoutHours: 24,
  presignExpirySeconds: 0,
  logRetentionDays: 30,
  includeExecutionData: false,
  natGateways: 1,
  scratchRetentionDays: 14,
  checkpointRetentionDays: 3,
  partialsRetentionDays: 30,
  noncurrentVersionDays: 30,
  runnableAlarmMinutes: 30,
  failedExecutionsThreshold: 1,
  // Off by default: it adds an on-demand multi-GPU fleet (capped at zero instances when idle) and a
  // second large image built at every deploy; turn it on where fine-tuning is done.
  finetune: false,
  // 8× A100 40 GB, 96 vCPUs, 1152 GiB, 400 Gbit/s: the paper-scale setup (docs/finetuning.md).
  finetuneInstanceTypes: ['p4d.24xlarge'],
  finetuneNode: { vcpus: 92, memoryMiB: 1_100_000, gpus: 8 },
  finetuneNodes: 2,
  finetuneMaxVcpus: 192,
  finetuneVolumeGiB: 2000,
  finetuneTimeoutHours: 72,
});

export const CONTEXT_PREFIX = 'cil:';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Reads the context values that are set; anything else is left to the defaults. */
export type ContextReader = (key: string) => unknown;

/**
 * `-c key=value` on the command line gives strings; cdk.json gives JSON values. A string that
 * parses as JSON is taken as that JSON (`32`, `false`, `["g5.xlarge"]`); for list-valued keys a
 * comma-separated string is also accepted (`g5.xlarge,g6.xlarge`).
 */
function fromContextString(key: keyof CilConfig, raw: string): unknown {
  const listKey = key === 'instanceTypes' || key === 'finetuneInstanceTypes';
  const t = raw.trim();
  if (/^[[{]|^-?\d|^(true|false|null)$/.test(t)) {
    try {
      return JSON.parse(t) as unknown;
    } catch {
      // fall through: not JSON, validated as a plain string below
    }
  }
  return listKey ? t.split(',').map((s) => s.trim()).filter((s) => s.length > 0) : raw;
}

/**
 * The effective configuration: defaults, then context (`cil:<key>`), then explicit overrides.
 * `modelProfiles` merges per family. Throws ConfigError naming every bad key.
 */
export function resolveConfig(readContext: ContextReader, overrides: Partial<CilConfig> = {}): CilConfig {
  const fromContext: Record<string, unknown> = {};
  for (const key of Object.keys(CilConfigSchema.shape) as (keyof CilConfig)[]) {
    const v = readContext(`${CONTEXT_PREFIX}${key}`);
    if (v === undefined) continue;
    fromContext[key] = typeof v === 'string' ? fromContextString(key, v) : v;
  }
  const merged: Record<string, unknown> = { ...DEFAULT_CONFIG, ...fromContext, ...overrides };
  const profiles: Record<string, unknown> = { ...DEFAULT_CONFIG.modelProfiles };
  for (const layer of [fromContext.modelProfiles, overrides.modelProfiles]) {
    if (layer !== undefined && (typeof layer !== 'object' || layer === null || Array.isArray(layer))) {
      merged.modelProfiles = layer; // let the schema report the wrong type
      break;
    }
    if (layer) Object.assign(profiles, layer);
    merged.modelProfiles = profiles;
  }
  const r = CilConfigSchema.safeParse(merged);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  - ${CONTEXT_PREFIX}${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new ConfigError(`invalid deployment parameters (CDK context or stack props):\n${lines.join('\n')}`);
  }
  const c = r.data;
  const problems: string[] = [];
  const check = (what: string, p: ResourceProfile): void => {
    const fits = c.instanceTypes.some((t) => fitsInstance(p, t));
    if (!fits) problems.push(`${what} (${p.vcpus} vCPUs, ${p.memoryMiB} MiB) fits none of the instance types ${c.instanceTypes.join(', ')}: its jobs would wait RUNNABLE forever`);
    if (p.vcpus > c.maxVcpus) problems.push(`${what} asks for ${p.vcpus} vCPUs, more than ${CONTEXT_PREFIX}maxVcpus (${c.maxVcpus})`);
  };
  for (const family of FAMILIES) check(`${CONTEXT_PREFIX}modelProfiles.${family}`, c.modelProfiles[family]);
  check(`${CONTEXT_PREFIX}statisticsProfile`, c.statisticsProfile);
  if (c.finetune && c.finetuneNode.vcpus * c.finetuneNodes > c.finetuneMaxVcpus) {
    problems.push(`${CONTEXT_PREFIX}finetuneNodes (${c.finetuneNodes}) × finetuneNode.vcpus (${c.finetuneNode.vcpus}) exceeds ${CONTEXT_PREFIX}finetuneMaxVcpus (${c.finetuneMaxVcpus}): the default job could never start`);
  }
  if (problems.length > 0) throw new ConfigError(`invalid deployment parameters:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
  return c;
}

/** vCPUs and GiB per size of the g4dn, g5 and g6 families (they share them; g6e has more memory). */
const GPU_SIZES: Readonly<Record<string, readonly [number, number]>> = {
  xlarge: [4, 16],
  '2xlarge': [8, 32],
  '4xlarge': [16, 64],
  '8xlarge': [32, 128],
  '12xlarge': [48, 192],
  '16xlarge': [64, 256],
  '24xlarge': [96, 384],
  '48xlarge': [192, 768],
};

/**
 * The ECS agent registers somewhat less memory than the instance has (the OS and the agent keep
 * the rest); 94 % is a conservative estimate for these sizes. Unknown types are assumed to fit
 * (Batch itself reports a job that fits nowhere, and the queue cancels it, see compute.ts).
 */
function fitsInstance(p: ResourceProfile, instanceType: string): boolean {
  const [family, size] = instanceType.split('.');
  const known = ['g4dn', 'g5', 'g6'].includes(family ?? '') ? GPU_SIZES[size ?? ''] : undefined;
  if (!known) return true;
  const [vcpus, gib] = known;
  return p.vcpus <= vcpus && p.memoryMiB <= 0.94 * gib * 1024;
}
