/**
 * Messages between the job (main thread) and the inference thread. `session.run` blocks its
 * thread for the whole UNet call, so inference runs on a worker_thread and the main thread keeps
 * progress output, heartbeats and signal handling alive.
 */

/** A tensor on the wire: float32 or int64 values in a transferable buffer. */
export interface WireTensor {
  readonly dtype: 'float32' | 'int64';
  /** Float32Array or BigInt64Array bytes. */
  readonly data: ArrayBuffer;
  readonly dims: readonly number[];
}

export interface IoMeta {
  readonly name: string;
  /** ONNX element type as onnxruntime reports it ('float32', 'float16', 'int64', …). */
  readonly type: string;
  /** Fixed sizes as numbers, symbolic axes as strings. */
  readonly shape: readonly (number | string)[];
}

export type ExecutionProviderPreference = 'auto' | 'cuda' | 'cpu';

/** GPU session options (docs/worker.md, "Session options"); each one falls back and says why. */
export interface SessionTuning {
  /**
   * onnxruntime's optimised graph, cached in this folder per model file, execution provider and
   * onnxruntime version: written on the first open, loaded (graph optimisation off) on the next.
   */
  readonly optimizedCacheDir?: string;
  /** Try the TensorRT execution provider first (engines cached in this folder), then CUDA, then the CPU. */
  readonly tensorrtCacheDir?: string;
  /** CUDA graph capture of the UNet's call (opt-in). */
  readonly cudaGraph?: boolean;
}

export interface OpenRequest {
  readonly op: 'open';
  readonly id: number;
  readonly component: string;
  readonly file: string;
  readonly provider: ExecutionProviderPreference;
  readonly intraOpThreads: number;
  readonly tuning?: SessionTuning;
}

export interface RunRequest {
  readonly op: 'run';
  readonly id: number;
  readonly component: string;
  readonly feeds: Readonly<Record<string, WireTensor>>;
}

/**
 * Binds a component's feeds to shared memory for the rest of the job (the UNet's per-step call):
 * the thread wraps each buffer as an onnxruntime tensor once, and every later `runBound` reads
 * whatever the main thread has written there since. Nothing is copied or allocated per call on
 * the way in.
 */
export interface BindRequest {
  readonly op: 'bind';
  readonly id: number;
  readonly component: string;
  /** Names this binding in `runBound` (unique per OnnxSessions). */
  readonly binding: number;
  readonly feeds: Readonly<Record<string, SharedTensor>>;
  /** Run once on the bound buffers right away (CUDA's lazy initialisation, kernel selection). */
  readonly warmup?: boolean;
}

/** A feed in shared memory: float32 or int64 values, written by the main thread between calls. */
export interface SharedTensor {
  readonly dtype: 'float32' | 'int64';
  readonly data: SharedArrayBuffer;
  readonly dims: readonly number[];
}

export interface RunBoundRequest {
  readonly op: 'runBound';
  readonly id: number;
  readonly binding: number;
}

export interface CloseRequest {
  readonly op: 'close';
  readonly id: number;
}

export type Request = OpenRequest | RunRequest | BindRequest | RunBoundRequest | CloseRequest;

export interface Opened {
  readonly op: 'opened';
  readonly id: number;
  /** The execution provider the session actually uses. */
  readonly provider: 'tensorrt' | 'cuda' | 'cpu';
  /** Why CUDA (or TensorRT, or a tuning option) was not used, when it was asked for or auto-detected. */
  readonly fallbackReason?: string;
  /** The optimised-graph cache: 'written' on a first open, 'loaded' after; absent when off or it failed (see fallbackReason). */
  readonly optimizedModel?: 'written' | 'loaded';
  readonly inputs: readonly IoMeta[];
  readonly outputs: readonly IoMeta[];
}

export interface Result {
  readonly op: 'result';
  readonly id: number;
  readonly outputs: Readonly<Record<string, WireTensor>>;
  readonly ms: number;
}

export interface Bound {
  readonly op: 'bound';
  readonly id: number;
  /** The warm-up call's time, when one ran. */
  readonly warmupMs?: number;
}

export interface Closed {
  readonly op: 'closed';
  readonly id: number;
}

export interface Failure {
  readonly op: 'error';
  readonly id: number;
  readonly name: string;
  readonly message: string;
}

export type Response = Opened | Result | Bound | Closed | Failure;
