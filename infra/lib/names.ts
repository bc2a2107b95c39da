/**
 * Names that other parts of the project rely on: state names (local mode overrides tasks by
 * state name), the environment the worker and the Lambdas receive, event sources and detail
 * types, and the stack outputs the remote CLI discovers. Changing one is a contract change.
 */
import { PREFIX } from '#shared/schemas';

/** States of the generation workflow (one upload → one video). */
export const GENERATION_STATES = Object.freeze({
  validate: 'Validate',
  sizeForModel: 'SizeForModel',
  /** An upload (interactive queue) or a manifest line (production queue)? */
  chooseTier: 'ChooseTier',
  tierInteractive: 'TierInteractive',
  tierProduction: 'TierProduction',
  generate: 'Generate',
  /** Reads a failed Generate's job description (the .sync error's Cause) to see why it failed. */
  readGenerateFailure: 'ReadGenerateFailure',
  /** Spot had no capacity (the queue's time-limit action cancelled the job)? Then on-demand. */
  spotCapacityCheck: 'SpotCapacityCheck',
  /** Records the Spot job that was cancelled, before the resubmission. */
  recordResubmission: 'RecordResubmission',
  /** The same job, resubmitted to the on-demand queue of its GPU fleet. */
  generateOnDemand: 'GenerateOnDemand',
  postProcess: 'PostProcess',
  notifySuccess: 'NotifySuccess',
  succeeded: 'Succeeded',
  recordFailure: 'RecordFailure',
  notifyFailure: 'NotifyFailure',
  jobFailed: 'JobFailed',
  notificationFailed: 'NotificationFailed',
});

/** Pass state that records which step failed, per step (`ValidateFailed`, …). */
export function failedStateName(step: string): string {
  return `${step}Failed`;
}

/** Pass state that sets the Batch resources and queues for a family (`SizeFor-svd`, …), or a family at a resolution (`SizeFor-svd-576x1024`). */
export function sizeStateName(family: string, resolution?: string): string {
  return resolution === undefined ? `SizeFor-${family}` : `SizeFor-${family}-${resolution}`;
}

/**
 * The Batch job queues' tiers, in the order Batch serves them on a shared compute environment
 * (a higher priority is scheduled first): uploads a user waits for, then manifest production,
 * then statistics shards. `onDemand` is the queue a job is resubmitted to when Spot had no
 * capacity for it; it outranks the others, since its jobs have already waited.
 */
export const QUEUE_PRIORITIES = Object.freeze({ onDemand: 400, interactive: 300, production: 200, statistics: 100 });
export type QueueTier = keyof typeof QUEUE_PRIORITIES;

/** Which tier a generation execution's Batch job goes to: the starter's `batch` field is null for a single upload. */
export const GENERATION_TIERS = Object.freeze(['interactive', 'production'] as const);

/** States of the batch-production workflow (one manifest → many jobs). */
export const BATCH_STATES = Object.freeze({
  runManifest: 'RunManifest',
  prepareItem: 'PrepareItem',
  runJob: 'RunJob',
  summarize: 'SummarizeBatch',
  outcome: 'BatchOutcome',
  succeeded: 'BatchSucceeded',
  failed: 'BatchFailed',
  summaryFailed: 'SummaryFailed',
});

/** Label of the batch workflow's Distributed Map (its map runs and child executions are named after it). */
export const BATCH_MAP_LABEL = 'manifest';

/**
 * An execution's ARN from its state machine's: `arn:…:stateMachine:<sm>` + name →
 * `arn:…:execution:<sm>:<name>` (the execution name of a job is its job id).
 */
export function executionArnOf(stateMachineArn: string, name: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
}

/** States of the statistics workflow (shards → merge). */
export const STATISTICS_STATES = Object.freeze({
  checkInput: 'CheckInput',
  invalidInput: 'InvalidStatisticsInput',
  prepare: 'PrepareStatisticsJob',
  computeShards: 'ComputeShards',
  merge: 'MergeShards',
  publishSucceeded: 'PublishStatisticsSucceeded',
  succeeded: 'StatisticsSucceeded',
  publishFailed: 'PublishStatisticsFailed',
  failed: 'StatisticsFailed',
});

/**
 * The worker image's entrypoint is `node bin/cil.js` (gpu-worker/Dockerfile); each Batch job
 * definition gives the rest of the command. `Ref::<name>` is filled from the SubmitJob
 * parameters the workflow passes (Batch substitutes them as whole arguments, with no shell).
 */
export const WORKER_COMMANDS = Object.freeze({
  /**
   * docs/worker.md: the JobSpec comes from $CIL_JOB_SPEC_URI; the workflow's placement (queue,
   * capacity, Spot cancellations) from the `placement` parameter (default `none`), for metadata.json.
   */
  generate: ['worker', '--placement', 'Ref::placement'],
  /** One shard of a Batch array job (`--shards n` takes the index from AWS_BATCH_JOB_ARRAY_INDEX). */
  statisticsShard: ['stats', 'compute', '--videos', 'Ref::videos', '--model', 'Ref::model', '--out', 'Ref::partials', '--shards', 'Ref::shards', '--progress', 'json'],
  statisticsMerge: ['stats', 'merge', 'Ref::partials', '--out', 'Ref::out'],
});

/** Environment the worker container receives (docs/worker.md). */
export const WORKER_ENV = Object.freeze({
  /**
   * The job spec's s3:// URI (`jobs/<jobId>/request.json`, written by Validate); the only value the
   * Generate state overrides per job (a container override is capped at 8,192 characters).
   */
  jobSpecUri: 'CIL_JOB_SPEC_URI',
  /** The job spec as JSON: for a worker run by hand only (`cil worker`); the workflow never sets it. */
  jobSpec: 'CIL_JOB_SPEC',
  /** EventBridge bus for per-step progress events. */
  progressBus: 'CIL_PROGRESS_BUS',
  /** Model-bundle cache (the host volume, shared by the jobs on one instance). */
  modelCache: 'CIL_MODEL_CACHE',
  /** Free space (GiB) the model cache keeps on the instance's cache volume (least recently used bundles are evicted). */
  modelCacheMinFreeGiB: 'CIL_MODEL_CACHE_MIN_FREE_GIB',
  /**
   * Root of the instance's cache volume in the container: the NVMe instance store where the
   * instance type has one, else the gp3 root volume (the launch template mounts it; see
   * `cacheStorageMarker` for which). Shared by the jobs on one instance.
   */
  cacheDir: 'CIL_CACHE_DIR',
  /** ONNX Runtime execution provider: `cuda` in every Batch GPU job (fail fast off-GPU), `auto` locally. */
  executionProvider: 'CIL_EXECUTION_PROVIDER',
});

/** Environment the Lambda functions receive (owned by the functions, which read it). */
export { LAMBDA_ENV } from '../../functions/src/env.ts';

/** Container paths inside the worker (the Dockerfile creates them for the worker user). */
export const WORKER_PATHS = Object.freeze({
  /** The instance's cache volume in the container ($CIL_CACHE_DIR). */
  cacheRoot: '/var/cache/cil',
  modelCache: '/var/cache/cil/models',
  scratch: '/scratch',
  /** Host mount point of the cache volume: the NVMe instance store when there is one (launch template). */
  hostCacheRoot: '/var/lib/cil',
  /** Host directory that keeps downloaded model bundles across jobs on one instance. */
  hostModelCache: '/var/lib/cil/models',
  /** File in the cache root naming what backs it: `instance-store` or `ebs` (written at boot). */
  cacheStorageMarker: '.storage',
  /** File in the cache root where the host copies EC2's Spot instance-action notice (the worker watches it). */
  spotNotice: '.spot-instance-action',
});

/** The worker image's user (gpu-worker/Dockerfile); the host cache directory is chowned to it. */
export const WORKER_UID = 10001;

/** Worker exit codes Batch's retry strategy reads (docs/worker.md); anything else non-zero is retried. */
export const WORKER_EXIT = Object.freeze({
  /** The input was refused (bundle, image, statistics, request): retrying cannot help. */
  refused: 3,
  /** SIGTERM (Spot reclaim): checkpoint written, the next attempt resumes. */
  interrupted: 143,
  /**
   * Asked for CUDA (CIL_EXECUTION_PROVIDER=cuda) and could not get it (GpuUnavailable: driver,
   * CUDA or cuDNN mismatch, no GPU). 78 is sysexits' EX_CONFIG: the instance or image is wrong, so
   * Batch does not retry it on the same kind of host; the workflow records the failure and the
   * ExecutionProviderFallback / system-failure alarms fire. gpu-worker/src/worker.ts exits with it.
   */
  gpuUnavailable: 78,
});

/** EventBridge `source` values on the project's event bus. */
export const EVENT_SOURCES = Object.freeze({ worker: 'cil.worker', pipeline: 'cil.pipeline' });

/** EventBridge detail types on the project's event bus. */
export const EVENT_DETAIL_TYPES = Object.freeze({
  progress: 'Job Progress',
  succeeded: 'Job Succeeded',
  failed: 'Job Failed',
});

/** The metrics the BatchMetrics function and the worker write (the dashboard, the alarms and the worker log's metric filters read them). */
export { METRIC_NAMES, METRICS_NAMESPACE, METRICS_SERVICE, WORKER_METRICS } from '#shared/schemas';

/** CloudFormation outputs (the remote CLI reads them with DescribeStacks). */
export const OUTPUTS = Object.freeze({
  bucket: 'DataBucketName',
  generationStateMachine: 'GenerationStateMachineArn',
  batchStateMachine: 'BatchStateMachineArn',
  statisticsStateMachine: 'StatisticsStateMachineArn',
  jobQueue: 'JobQueueArn',
  eventBus: 'EventBusName',
  notificationTopic: 'NotificationTopicArn',
  dashboard: 'DashboardName',
});

/** The stack name `cdk deploy` uses unless `-c cil:stackName=…` (also the remote CLI's default: it finds the stack by it, then reads OUTPUTS). */
export const DEFAULT_STACK_NAME = 'CilVideo';

/** CloudFormation metadata key on each state machine naming its workflow (local mode finds them by it). */
export const WORKFLOW_METADATA_KEY = 'cil:workflow';
export type WorkflowName = 'generation' | 'batch' | 'statistics';

/** S3 object tag the worker puts on checkpoint objects; a lifecycle rule expires them. */
export const CHECKPOINT_TAG = Object.freeze({ key: 'cil-kind', value: 'checkpoint' });

/** Where statistics datasets (the videos) live, and where shard partials go. */
export const STATISTICS_DATASETS_PREFIX = `${PREFIX.statistics}datasets/`;
export const STATISTICS_PARTIALS_PREFIX = `${PREFIX.statistics}partials/`;

/** States of the fine-tuning workflow (fine-tune → export → statistics → publish; docs/finetuning.md). */
export const FINETUNE_STATES = Object.freeze({
  applyDefaults: 'ApplyFinetuneDefaults',
  mergeDefaults: 'MergeFinetuneDefaults',
  checkInput: 'CheckFinetuneInput',
  invalidInput: 'InvalidFinetuneInput',
  prepare: 'PrepareRun',
  buildSpec: 'BuildRunSpec',
  train: 'FineTune',
  export: 'ExportBundle',
  hasStatistics: 'StatisticsRequested',
  statistics: 'ComputeStatistics',
  publish: 'PublishModel',
  notifySucceeded: 'NotifyFinetuneSucceeded',
  succeeded: 'FinetuneSucceeded',
  notifyFailed: 'NotifyFinetuneFailed',
  failed: 'FinetuneFailed',
});

/**
 * The fine-tuning image (tools/finetune/Dockerfile) runs `python3 -m tools.finetune.batch <step>`;
 * each job reads the run's spec from CIL_FINETUNE_SPEC (tools/finetune/spec.py parse_spec).
 */
export const FINETUNE_COMMANDS = Object.freeze({ train: ['train'], export: ['export'], publish: ['publish'] });
export const FINETUNE_ENV = Object.freeze({ spec: 'CIL_FINETUNE_SPEC', scratch: 'CIL_SCRATCH' });

/**
 * S3 prefixes of fine-tuning (tools/finetune/spec.py uses the same): the user's inputs, the runs'
 * checkpoints and exports, and the staging areas of a bundle and its statistics before publication.
 * `_staging` can be neither a model id nor a statistics id (ids start with a letter or digit), so
 * no job request can reach a bundle before it is published.
 */
export const FINETUNE_PREFIXES = Object.freeze({
  inputs: 'finetune/inputs/',
  runs: 'finetune/runs/',
  stagingModels: `${PREFIX.models}_staging/`,
  stagingStatistics: `${PREFIX.statistics}_staging/`,
});

/** Stack output with the fine-tuning state machine (only when `finetune` is on). */
export const FINETUNE_OUTPUT = 'FinetuneStateMachineArn';
