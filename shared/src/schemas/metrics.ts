/**
 * The CloudWatch metrics contract: the stack's own namespace (the BatchMetrics Lambda and the GPU
 * worker both write to it) and the names of the metrics the worker prints on its log, which the
 * stack's metric filters and alarms read (docs/worker.md "Metrics"). One home, so that writer and
 * readers cannot drift apart.
 */

/** CloudWatch namespace of the metrics this stack publishes itself. */
export const METRICS_NAMESPACE = 'CIL/Pipeline';

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
