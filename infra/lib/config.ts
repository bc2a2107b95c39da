/**
 * Deployment parameters: every one has a safe default, can be set through CDK context
 * (`cdk deploy -c cil:spot=false`, or the "context" block of cdk.json) or through the stack's
 * props, and is validated here so that a typo fails synth with a message naming the key.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import type { Family, Manifest } from '#shared/schemas';
import { ManifestError, parseManifest } from '#shared/schemas';
import { GPU_FAMILIES_BY_MEMORY, GPU_MEMORY_RESERVE_GIB, fitsInstance, gpuMemoryGiB, instanceShape } from './instances.ts';
import { REPO_ROOT } from './paths.ts';

export { GPU_MEMORY_RESERVE_GIB, gpuMemoryGiB, instanceShape } from './instances.ts';

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

/** A GPU fleet's name: a Spot and an on-demand compute environment and their job queues. */
const FleetName = z.string().regex(/^[a-z][a-z0-9]{0,15}$/, 'must be 1–16 characters of a-z and 0-9, starting with a letter');

/** `family@HEIGHTxWIDTH`: a model family at a resolution (a bundle's manifest says both). */
export const PLACEMENT_KEY = /^(dynamicrafter|videocrafter|svd)@([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$/;
const PlacementKey = z.string().regex(PLACEMENT_KEY, 'must be family@HEIGHTxWIDTH, such as svd@576x1024');

const GpuFleet = z.strictObject({
  /** Instance types of one size (one GPU count, one vCPU and memory shape): the GPU count per job stays predictable. */
  instanceTypes: z.array(z.string().regex(GPU_INSTANCE_TYPE, 'must be a GPU instance type such as g6.2xlarge or g6e.2xlarge')).min(1),
  /** Upper bound of the fleet's Spot (or, with spot off, on-demand) compute environment. */
  maxVcpus: z.int().min(1).max(10_000),
  /** Upper bound of its on-demand environment (jobs Spot had no capacity for are resubmitted there). */
  onDemandMaxVcpus: z.int().min(1).max(10_000),
});
export type GpuFleet = z.infer<typeof GpuFleet>;

/** Which compute the VPC gives the GPU workers to reach AWS services (docs/infra.md, *Networking*). */
export const NETWORKING_MODES = ['nat', 'endpoints'] as const;

export const CilConfigSchema = z.strictObject({
  /**
   * GPU fleets by name. Each has a Spot and an on-demand compute environment of one instance
   * size, and job queues per tier (QUEUE_PRIORITIES in names.ts).
   */
  gpuFleets: z.record(FleetName, GpuFleet).refine((f) => Object.keys(f).length > 0, { error: 'must name at least one fleet' }),
  /** Which fleet runs each model family at each resolution (`family@HEIGHTxWIDTH` → fleet name). */
  placement: z.record(PlacementKey, FleetName),
  /**
   * GPU memory (GiB) a job needs, per `family@HEIGHTxWIDTH`: the estimates of docs/models.md §5 by
   * default; a manifest in `modelManifests` that records its own (`gpuMemory`) takes precedence.
   */
  gpuMemoryGiB: z.record(PlacementKey, z.number().gt(0).max(1024)),
  /** manifest.json files (paths relative to the repository root) of the bundles to deploy; their `gpuMemory` is checked at synth. */
  modelManifests: z.array(z.string().min(1)),
  /** The fleet that runs statistics shards (their model is only known at run time: the largest fits all). */
  statisticsFleet: FleetName,
  /** Run GPU jobs on Spot instances (the worker checkpoints on SIGTERM, and Batch retries reclaims). */
  spot: z.boolean(),
  /** With spot on: an on-demand environment and queue per fleet, to which jobs Spot has no capacity for are resubmitted. */
  onDemandFallback: z.boolean(),
  /** A job RUNNABLE on Spot this long with no Spot capacity is cancelled by its queue (then resubmitted on-demand). */
  spotCapacityWaitMinutes: z.int().min(1).max(24 * 60),
  /** Root EBS volume of each GPU instance: container images, job scratch, and the cache where there is no instance store. */
  rootVolumeGiB: z.int().min(100).max(16_384),
  /** gp3 throughput of the root volume (MiB/s; 125 is gp3's baseline): bundles of 5–10 GB load faster. */
  rootVolumeThroughputMiBps: z.int().min(125).max(1000),
  /** gp3 IOPS of the root volume (3000 is the baseline; throughput needs at least 4 IOPS per MiB/s). */
  rootVolumeIops: z.int().min(3000).max(16_000),
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
  /** `nat`: a NAT gateway per AZ; `endpoints`: no NAT, VPC endpoints for what the workers use (docs/infra.md). */
  networking: z.enum(NETWORKING_MODES),
  /** NAT gateways with `networking: nat` (one per AZ: 2). */
  natGateways: z.int().min(1).max(2),
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
  /** Alarm when at least this many executions fail for system reasons (not the user's input) within 5 minutes. */
  failedExecutionsThreshold: z.int().min(1).max(10_000),
  /** Alarm when the estimated GPU spend of one day (on-demand prices, `instanceHourlyUsd`) exceeds this many US dollars. */
  dailyGpuSpendAlarmUsd: z.number().gt(0).max(1_000_000),
  /**
   * AWS Budgets: a daily COST budget of this many US dollars over the EC2 compute that carries
   * `costAllocationTag` (the GPU instances: the bill, not the estimate); over it, the alarm topic.
   */
  dailyGpuBudgetUsd: z.number().gt(0).max(1_000_000),
  /** Free space (GiB) the host model cache keeps on the instance's cache volume before a download; below it, least recently used bundles no job holds are evicted. */
  modelCacheMinFreeGiB: z.number().min(0).max(10_000),
  /**
   * The cost-allocation tag on every resource of the stack (and on the instances Batch launches),
   * which the budget filters on. Activate it once in the Billing console (Cost allocation tags).
   */
  costAllocationTag: z.strictObject({
    key: z.string().regex(/^(?!aws:)[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$/u, { error: 'must be 1–128 letters, digits, spaces or _ . : / = + - @, not starting with aws:' }),
    value: z.string().regex(/^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,256}$/u, { error: 'must be 1–256 letters, digits, spaces or _ . : / = + - @' }),
  }),
  /** On-demand price per instance-hour (USD; estimates, check your Region) for the spend metric and alarm. */
  instanceHourlyUsd: z.record(z.string().regex(GPU_INSTANCE_TYPE), z.number().gt(0).max(1000)),
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
  // One size per fleet (docs/infra.md, *Sizing*): 24 GB GPUs (A10G, L4) for 320×512, 48 GB (L40S)
  // for 576×1024. A .2xlarge (8 vCPUs, 32 GiB; g6e: 64 GiB) holds one job and its decoded frames.
  gpuFleets: {
    gpu24: { instanceTypes: ['g6.2xlarge', 'g5.2xlarge'], maxVcpus: 32, onDemandMaxVcpus: 16 },
    gpu48: { instanceTypes: ['g6e.2xlarge'], maxVcpus: 32, onDemandMaxVcpus: 16 },
  },
  placement: {
    'dynamicrafter@320x512': 'gpu24',
    'dynamicrafter@576x1024': 'gpu48',
    'videocrafter@320x512': 'gpu24',
    'svd@320x512': 'gpu24',
    'svd@576x1024': 'gpu48',
    // The built-in demo model (docs/demo-model.md): local mode runs these same definitions, and a
    // deployed stack can run it as a smoke test.
    'dynamicrafter@160x256': 'gpu24',
  },
  // docs/models.md §5 (estimated, batch-2 UNet call, float16; the upper end of each range in GiB).
  gpuMemoryGiB: {
    'dynamicrafter@320x512': 15,
    'dynamicrafter@576x1024': 42,
    'videocrafter@320x512': 15,
    'svd@320x512': 15,
    'svd@576x1024': 38,
    'dynamicrafter@160x256': 1,
  },
  modelManifests: [],
  statisticsFleet: 'gpu48',
  spot: true,
  onDemandFallback: true,
  spotCapacityWaitMinutes: 20,
  rootVolumeGiB: 200,
  rootVolumeThroughputMiBps: 500,
  rootVolumeIops: 3000,
  // Every fleet is of .2xlarge instances with one GPU: a job takes the whole instance (8 vCPUs,
  // about 30 GiB of the 32 the ECS agent registers on g5/g6).
  modelProfiles: {
    dynamicrafter: { vcpus: 8, memoryMiB: 30_000 },
    videocrafter: { vcpus: 8, memoryMiB: 30_000 },
    svd: { vcpus: 8, memoryMiB: 30_000 },
  },
  statisticsProfile: { vcpus: 8, memoryMiB: 30_000 },
  generateAttemptMinutes: 60,
  generateTimeoutHours: 6,
  batchRetryAttempts: 3,
  batchMaxConcurrency: 10,
  batchToleratedFailurePercentage: 10,
  statisticsTimeoutHours: 24,
  presignExpirySeconds: 0,
  logRetentionDays: 30,
  includeExecutionData: false,
  networking: 'nat',
  natGateways: 2,
  scratchRetentionDays: 14,
  checkpointRetentionDays: 3,
  partialsRetentionDays: 30,
  noncurrentVersionDays: 30,
  runnableAlarmMinutes: 30,
  failedExecutionsThreshold: 1,
  dailyGpuSpendAlarmUsd: 200,
  dailyGpuBudgetUsd: 200,
  modelCacheMinFreeGiB: 10,
  costAllocationTag: { key: 'cil-project', value: 'cil-video' },
  // On-demand, us-east-1, Linux (estimates; Spot is typically 30–60 % of these).
  instanceHourlyUsd: {
    'g5.xlarge': 1.006,
    'g5.2xlarge': 1.212,
    'g6.xlarge': 0.805,
    'g6.2xlarge': 0.978,
    'g6e.xlarge': 1.861,
    'g6e.2xlarge': 2.242,
    'p4d.24xlarge': 21.96,
    'p5.48xlarge': 55.04,
  },
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
  const listKey = key === 'finetuneInstanceTypes' || key === 'modelManifests';
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

/** Keys whose objects merge key by key over the defaults (a context value adds or replaces entries). */
const MERGED_KEYS = ['modelProfiles', 'placement', 'gpuMemoryGiB', 'instanceHourlyUsd'] as const;

/** Reads a manifest.json for `modelManifests` (a test passes its own). */
export type ManifestReader = (path: string) => unknown;

/**
 * The effective configuration: defaults, then context (`cil:<key>`), then explicit overrides.
 * `modelProfiles`, `placement`, `gpuMemoryGiB` and `instanceHourlyUsd` merge per key. Throws
 * ConfigError naming every bad key, and every model that fits no GPU it is placed on.
 */
export function resolveConfig(readContext: ContextReader, overrides: Partial<CilConfig> = {}, readManifest: ManifestReader = readManifestFile): CilConfig {
  const fromContext: Record<string, unknown> = {};
  for (const key of Object.keys(CilConfigSchema.shape) as (keyof CilConfig)[]) {
    const v = readContext(`${CONTEXT_PREFIX}${key}`);
    if (v === undefined) continue;
    fromContext[key] = typeof v === 'string' ? fromContextString(key, v) : v;
  }
  const merged: Record<string, unknown> = { ...DEFAULT_CONFIG, ...fromContext, ...overrides };
  for (const key of MERGED_KEYS) {
    const acc: Record<string, unknown> = { ...DEFAULT_CONFIG[key] };
    merged[key] = acc;
    for (const layer of [fromContext[key], overrides[key]]) {
      if (layer !== undefined && (typeof layer !== 'object' || layer === null || Array.isArray(layer))) {
        merged[key] = layer; // let the schema report the wrong type
        break;
      }
      if (layer) Object.assign(acc, layer);
    }
  }
  const r = CilConfigSchema.safeParse(merged);
  if (!r.success) {
    // A record key's own message (zod reports only "Invalid key in record" at the top).
    const message = (i: z.core.$ZodIssue): string => (i.code === 'invalid_key' && i.issues.length > 0 ? i.issues.map((k) => k.message).join('; ') : i.message);
    const lines = r.error.issues.map((i) => `  - ${CONTEXT_PREFIX}${i.path.join('.') || '(root)'}: ${message(i)}`);
    throw new ConfigError(`invalid deployment parameters (CDK context or stack props):\n${lines.join('\n')}`);
  }
  const c = r.data;
  const problems: string[] = [];
  const fleetNames = Object.keys(c.gpuFleets);
  const fleetOf = (what: string, name: string): GpuFleet | undefined => {
    const f = c.gpuFleets[name];
    if (!f) problems.push(`${what} names the fleet '${name}', which ${CONTEXT_PREFIX}gpuFleets does not have (it has: ${fleetNames.join(', ')})`);
    return f;
  };
  for (const [name, f] of Object.entries(c.gpuFleets)) {
    const sizes = new Set(f.instanceTypes.map((t) => t.split('.')[1]));
    if (sizes.size > 1) problems.push(`${CONTEXT_PREFIX}gpuFleets.${name}.instanceTypes mixes sizes (${f.instanceTypes.join(', ')}): one size per fleet, so that every instance has the same GPUs`);
    const gpus = new Set(f.instanceTypes.map((t) => instanceShape(t)?.gpus ?? 0));
    if (gpus.size > 1) problems.push(`${CONTEXT_PREFIX}gpuFleets.${name}.instanceTypes have different GPU counts (${f.instanceTypes.join(', ')})`);
  }
  const check = (what: string, p: ResourceProfile, fleetName: string, f: GpuFleet): void => {
    const misfits = f.instanceTypes.filter((t) => !fitsInstance(p, t));
    if (misfits.length > 0) problems.push(`${what} (${p.vcpus} vCPUs, ${p.memoryMiB} MiB) does not fit ${misfits.join(', ')} of fleet ${fleetName}: its jobs would wait RUNNABLE there`);
    if (p.vcpus > f.maxVcpus) problems.push(`${what} asks for ${p.vcpus} vCPUs, more than ${CONTEXT_PREFIX}gpuFleets.${fleetName}.maxVcpus (${f.maxVcpus})`);
  };
  // What each family@resolution needs: the defaults' estimates, then the manifests' own figures.
  const needs = new Map<string, { gib: number; source: string; from: string }>();
  for (const [key, gib] of Object.entries(c.gpuMemoryGiB)) needs.set(key, { gib, source: 'estimated', from: `${CONTEXT_PREFIX}gpuMemoryGiB` });
  for (const path of c.modelManifests) {
    const need = manifestNeed(path, readManifest);
    if (typeof need === 'string') problems.push(need);
    else needs.set(need.key, { gib: need.gib, source: need.source, from: path });
  }
  for (const [key, need] of needs) {
    const what = `${key} (needs ${need.gib} GiB of GPU memory, ${need.source}, from ${need.from})`;
    const fleetName = c.placement[key];
    if (fleetName === undefined) {
      problems.push(`${what} has no fleet: add ${CONTEXT_PREFIX}placement.${key} (one of ${fleetNames.join(', ')})`);
      continue;
    }
    const f = fleetOf(`${CONTEXT_PREFIX}placement.${key}`, fleetName);
    if (!f) continue;
    const small = f.instanceTypes.filter((t) => gpuMemoryGiB(t) < need.gib + GPU_MEMORY_RESERVE_GIB);
    if (small.length > 0) {
      const allowed = GPU_FAMILIES_BY_MEMORY.filter(([, gib]) => gib >= need.gib + GPU_MEMORY_RESERVE_GIB).map(([fam, gib]) => `${fam} (${gib.toFixed(1)} GiB)`);
      problems.push(
        `${what} does not fit fleet ${fleetName}: ${small.map((t) => `${t} has ${gpuMemoryGiB(t).toFixed(1)} GiB per GPU`).join(', ')} ` +
          `(${GPU_MEMORY_RESERVE_GIB} GiB is kept for the CUDA context). Place it on a fleet of ${allowed.length > 0 ? allowed.join(', ') : 'no GPU instance family there is'}`,
      );
    }
  }
  for (const [key, fleetName] of Object.entries(c.placement)) {
    const f = fleetOf(`${CONTEXT_PREFIX}placement.${key}`, fleetName);
    if (!f) continue;
    if (!needs.has(key)) problems.push(`${CONTEXT_PREFIX}placement.${key}: no GPU memory need is known for it; add ${CONTEXT_PREFIX}gpuMemoryGiB.${key} or a manifest to ${CONTEXT_PREFIX}modelManifests`);
    const family = key.split('@')[0] as Family;
    check(`${CONTEXT_PREFIX}modelProfiles.${family}`, c.modelProfiles[family], fleetName, f);
  }
  const stats = fleetOf(`${CONTEXT_PREFIX}statisticsFleet`, c.statisticsFleet);
  if (stats) check(`${CONTEXT_PREFIX}statisticsProfile`, c.statisticsProfile, c.statisticsFleet, stats);
  if (c.rootVolumeIops * 0.25 < c.rootVolumeThroughputMiBps) {
    problems.push(`${CONTEXT_PREFIX}rootVolumeThroughputMiBps (${c.rootVolumeThroughputMiBps}) needs ${CONTEXT_PREFIX}rootVolumeIops of at least ${c.rootVolumeThroughputMiBps * 4} (gp3 allows 0.25 MiB/s per IOPS)`);
  }
  for (const f of Object.values(c.gpuFleets)) {
    for (const t of f.instanceTypes) if (c.instanceHourlyUsd[t] === undefined) problems.push(`${CONTEXT_PREFIX}instanceHourlyUsd has no price for ${t} (the GPU spend metric needs one per instance type)`);
  }
  if (c.finetune && c.finetuneNode.vcpus * c.finetuneNodes > c.finetuneMaxVcpus) {
    problems.push(`${CONTEXT_PREFIX}finetuneNodes (${c.finetuneNodes}) × finetuneNode.vcpus (${c.finetuneNode.vcpus}) exceeds ${CONTEXT_PREFIX}finetuneMaxVcpus (${c.finetuneMaxVcpus}): the default job could never start`);
  }
  if (problems.length > 0) throw new ConfigError(`invalid deployment parameters:\n${[...new Set(problems)].map((p) => `  - ${p}`).join('\n')}`);
  return c;
}

function readManifestFile(path: string): unknown {
  const file = isAbsolute(path) ? path : join(REPO_ROOT, path);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as unknown;
  } catch (e) {
    throw new ConfigError(`${CONTEXT_PREFIX}modelManifests: cannot read ${path} as JSON (${(e as Error).message})`);
  }
}

/** A manifest's GPU memory need at its own resolution, or a problem. */
function manifestNeed(path: string, read: ManifestReader): { key: string; gib: number; source: string } | string {
  let m: Manifest;
  try {
    m = parseManifest(read(path), path);
  } catch (e) {
    if (e instanceof ManifestError || e instanceof ConfigError) return `${CONTEXT_PREFIX}modelManifests: ${e.message}`;
    throw e;
  }
  const res = `${m.resolution.height}x${m.resolution.width}`;
  const key = `${m.family}@${res}`;
  const rec = m.gpuMemory?.[res];
  if (!rec) return `${CONTEXT_PREFIX}modelManifests: ${path} (${m.id}, ${key}) records no gpuMemory for ${res}; export it again (tools/export writes it) or add it by hand`;
  return { key, gib: rec.gib, source: rec.source };
}
