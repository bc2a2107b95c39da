/**
 * The CloudWatch metrics contract: the stack's own namespace (the BatchMetrics Lambda and the GPU
 * worker both write to it), the names of the metrics the Lambda writes and of those the worker
 * prints on its log (docs/worker.md "Metrics"), which the stack's dashboard, metric filters and
 * alarms read. One home, so that writers and readers cannot drift apart.
 */

/** CloudWatch namespace of the metrics this stack publishes itself. */
export const METRICS_NAMESPACE = 'CIL/Pipeline';

/** The `service` dimension (Powertools Metrics' service name) of the metrics the BatchMetrics function writes. */
export const METRICS_SERVICE = 'cil-pipeline';

/** The metrics the BatchMetrics function writes (functions/src/batchMetrics/core.ts), with the `service` dimension. */
export const METRIC_NAMES = Object.freeze({
  gpuMinutes: 'GpuMinutes',
  /** US dollars, an estimate: instance-hours × the on-demand price of the job's fleet. */
  gpuSpendUsd: 'EstimatedGpuSpendUsd',
  batchJobsSucceeded: 'BatchJobsSucceeded',
  batchJobsFailed: 'BatchJobsFailed',
  runnableJobs: 'RunnableJobs',
  oldestRunnableSeconds: 'OldestRunnableSeconds',
  /** Executions that failed because of the user's input (counted, not alarmed on). */
  userFailures: 'UserFailures',
  /** Every other failed, timed-out or aborted execution (alarmed on). */
  systemFailures: 'SystemFailures',
});

/** The worker's metrics (gpu-worker/src/metrics.ts writes them as Embedded Metric Format fields). */
export const WORKER_METRICS = Object.freeze({
  /** 1 when a session fell back to the CPU (provider `auto` without a usable GPU), else 0. Alarmed on. */
  executionProviderFallback: 'ExecutionProviderFallback',
  /** 1 when CUDA was required and could not be had (exit 78), else absent. */
  gpuUnavailable: 'GpuUnavailable',
  /** Mean seconds per denoising step of the attempt. */
  stepSeconds: 'StepSeconds',
  /** Opening the bundle: download and checks, or a cache hit. */
  downloadSeconds: 'ModelDownloadSeconds',
  /** Opening every ONNX session. */
  sessionOpenSeconds: 'SessionOpenSeconds',
});
