/**
 * The main-thread side of inference: one worker_thread holding every onnxruntime session of a
 * job. Tensors cross as transferable buffers; the thread checks feeds against each graph.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { ExecutionProviderPreference, Opened, Request, Response, SessionTuning, WireTensor } from './protocol.ts';

export class InferenceError extends Error {
  override readonly name = 'InferenceError';
}

/** An int64 feed (timesteps, token ids, frame stride). */
export interface IntFeed {
  readonly ints: readonly number[];
  readonly dims: readonly number[];
}
export type Feed = Tensor | IntFeed;

/** An open session: what the onnxruntime thread reported when it opened (protocol.ts), for a component's file. */
export interface SessionInfo extends Omit<Opened, 'op' | 'id'> {
  readonly component: string;
  readonly file: string;
}

export interface SessionsOptions {
  /** 'auto' (default): CUDA when it loads, else CPU. From CIL_EXECUTION_PROVIDER when unset. */
  readonly provider?: ExecutionProviderPreference;
  /** Intra-op threads: all cores by default (one job per container). */
  readonly threads?: number;
  /** GPU session options (protocol.ts); from the environment when unset (`tuningFromEnv`). */
  readonly tuning?: SessionTuning;
  /**
   * A warm-up call when the UNet's feeds are bound: 'auto' (default, or $CIL_WARMUP) runs one on a
   * GPU session (CUDA's lazy initialisation and kernel selection leave the first step), none on the CPU.
   */
  readonly warmup?: boolean | 'auto';
}

/**
 * The session options the environment asks for: $CIL_ORT_CACHE_DIR (optimised graphs),
 * $CIL_TENSORRT_CACHE_DIR (TensorRT first, engines cached there), $CIL_CUDA_GRAPH=1.
 */
export function tuningFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): SessionTuning {
  return {
    optimizedCacheDir: env.CIL_ORT_CACHE_DIR || undefined,
    tensorrtCacheDir: env.CIL_TENSORRT_CACHE_DIR || undefined,
    cudaGraph: env.CIL_CUDA_GRAPH === '1',
  };
}

function warmupFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): boolean | 'auto' {
  return env.CIL_WARMUP === '1' ? true : env.CIL_WARMUP === '0' ? false : 'auto';
}

function toWire(f: Feed): { wire: WireTensor; transfer: ArrayBuffer } {
  if ('data' in f) {
    const copy = f.data.slice();
    return { wire: { dtype: 'float32', data: copy.buffer, dims: [...f.dims] }, transfer: copy.buffer };
  }
  const b = BigInt64Array.from(f.ints, (v) => BigInt(Math.round(v)));
  return { wire: { dtype: 'int64', data: b.buffer, dims: [...f.dims] }, transfer: b.buffer };
}

/** A bound feed's element type and dims (see `OnnxSessions.bind`). */
export interface BoundSpec {
  readonly dtype: 'float32' | 'int64';
  readonly dims: readonly number[];
}

/** A bound feed's buffer: write it between calls, never during one. */
export type BoundBuffer = Float32Array | BigInt64Array;

/**
 * A component's feeds in memory shared with the inference thread, for the whole job: write the
 * inputs (constants once, the rest before each call), then `OnnxSessions.runBound`.
 */
export interface Binding {
  readonly component: string;
  readonly id: number;
  readonly inputs: Readonly<Record<string, BoundBuffer>>;
}

export class OnnxSessions {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (r: Response) => void; reject: (e: Error) => void }>();
  readonly #info = new Map<string, SessionInfo>();
  readonly #provider: ExecutionProviderPreference;
  readonly #threads: number;
  readonly #tuning: SessionTuning;
  readonly #warmup: boolean | 'auto';
  #next = 1;
  #dead: Error | null = null;
  /** Network time (ms) per component, summed over the job. */
  readonly runMs = new Map<string, number>();
  readonly runCalls = new Map<string, number>();
  /** Warm-up call time (ms) per component, where one ran (not in runMs). */
  readonly warmupMs = new Map<string, number>();

  constructor(o: SessionsOptions = {}) {
    const env = process.env.CIL_EXECUTION_PROVIDER;
    this.#provider = o.provider ?? (env === 'cpu' || env === 'cuda' ? env : 'auto');
    this.#threads = o.threads ?? availableParallelism();
    this.#tuning = o.tuning ?? tuningFromEnv();
    this.#warmup = o.warmup ?? warmupFromEnv();
    const trt = this.#tuning.tensorrtCacheDir;
    if (trt && this.#provider !== 'cpu') {
      // The TensorRT provider reads its engine cache and precision from the process environment
      // (onnxruntime-node passes it no provider options); set before the inference thread starts.
      process.env.ORT_TENSORRT_ENGINE_CACHE_ENABLE = '1';
      process.env.ORT_TENSORRT_CACHE_PATH = trt;
      process.env.ORT_TENSORRT_FP16_ENABLE ??= '1';
    }
    // From the CLI's bundle (bin/bundle.js) the thread is its own entry, ortThread.js, beside the chunk.
    this.#worker = new Worker(new URL(import.meta.url.endsWith('.ts') ? './ortThread.ts' : './ortThread.js', import.meta.url));
    this.#worker.on('message', (r: Response) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      p.resolve(r);
    });
    const die = (e: Error): void => {
      this.#dead = e;
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    };
    this.#worker.on('error', (e: Error) => die(new InferenceError(`inference thread failed: ${e.message}`)));
    this.#worker.on('exit', (code) => die(new InferenceError(`inference thread exited (code ${code})`)));
  }

  #call(r: Request, transfer: ArrayBuffer[] = []): Promise<Response> {
    if (this.#dead) return Promise.reject(this.#dead);
    return new Promise((resolve, reject) => {
      this.#pending.set(r.id, { resolve, reject });
      this.#worker.postMessage(r, transfer);
    });
  }

  /** Opens a component's session (once per job). */
  async open(component: string, file: string): Promise<SessionInfo> {
    const r = await this.#call({ op: 'open', id: this.#next++, component, file, provider: this.#provider, intraOpThreads: this.#threads, tuning: this.#tuning });
    if (r.op === 'error') throw new InferenceError(`${component}: cannot open ${file}: ${r.message}`);
    const o = r as Opened;
    const info: SessionInfo = { component, file, provider: o.provider, fallbackReason: o.fallbackReason, optimizedModel: o.optimizedModel, inputs: o.inputs, outputs: o.outputs };
    this.#info.set(component, info);
    return info;
  }

  info(component: string): SessionInfo {
    const i = this.#info.get(component);
    if (!i) throw new InferenceError(`component '${component}' is not open`);
    return i;
  }

  /** Runs a component; float outputs come back as float32 tensors. */
  async run(component: string, feeds: Readonly<Record<string, Feed>>, signal?: AbortSignal): Promise<Record<string, Tensor>> {
    signal?.throwIfAborted();
    const wire: Record<string, WireTensor> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [k, f] of Object.entries(feeds)) {
      const w = toWire(f);
      wire[k] = w.wire;
      transfer.push(w.transfer);
    }
    return this.#result(component, this.#call({ op: 'run', id: this.#next++, component, feeds: wire }, transfer), signal);
  }

  /**
   * Binds a component's feeds to shared memory for the rest of the job (the UNet's per-step call):
   * the returned buffers are checked against the graph once, here, and each `runBound` runs on
   * what they hold then. No feed is copied or allocated per call.
   */
  async bind(component: string, specs: Readonly<Record<string, BoundSpec>>): Promise<Binding> {
    const warm = this.#warmup === 'auto' ? this.info(component).provider !== 'cpu' : this.#warmup;
    const feeds: Record<string, { dtype: BoundSpec['dtype']; data: SharedArrayBuffer; dims: readonly number[] }> = {};
    const inputs: Record<string, BoundBuffer> = {};
    for (const [name, sp] of Object.entries(specs)) {
      const n = sp.dims.reduce((a, b) => a * b, 1);
      const data = new SharedArrayBuffer(n * (sp.dtype === 'float32' ? 4 : 8));
      feeds[name] = { dtype: sp.dtype, data, dims: [...sp.dims] };
      inputs[name] = sp.dtype === 'float32' ? new Float32Array(data) : new BigInt64Array(data);
    }
    const id = this.#next++;
    const r = await this.#call({ op: 'bind', id, component, binding: id, feeds, warmup: warm });
    if (r.op === 'error') throw new InferenceError(r.message);
    if (r.op === 'bound' && r.warmupMs !== undefined) this.warmupMs.set(component, r.warmupMs);
    return { component, id, inputs };
  }

  /** Runs a bound component on what its buffers hold now; outputs as `run`'s. */
  runBound(b: Binding, signal?: AbortSignal): Promise<Record<string, Tensor>> {
    signal?.throwIfAborted();
    return this.#result(b.component, this.#call({ op: 'runBound', id: this.#next++, binding: b.id }), signal);
  }

  async #result(component: string, call: Promise<Response>, signal?: AbortSignal): Promise<Record<string, Tensor>> {
    // An abort does not wait for the graph to finish: the caller checkpoints and exits at once,
    // and the late result is dropped.
    let onAbort: (() => void) | undefined;
    const r = signal
      ? await Promise.race([
          call,
          new Promise<never>((_, reject) => {
            onAbort = () => reject(signal.reason as Error);
            if (signal.aborted) onAbort();
            signal.addEventListener('abort', onAbort, { once: true });
          }),
        ]).finally(() => signal.removeEventListener('abort', onAbort!))
      : await call;
    if (r.op === 'error') throw new InferenceError(r.message);
    if (r.op !== 'result') throw new InferenceError(`unexpected reply '${r.op}' to run`);
    this.runMs.set(component, (this.runMs.get(component) ?? 0) + r.ms);
    this.runCalls.set(component, (this.runCalls.get(component) ?? 0) + 1);
    const out: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(r.outputs)) {
      if (t.dtype !== 'float32') throw new InferenceError(`${component}: output '${k}' is ${t.dtype}; float outputs expected`);
      out[k] = tensor(new Float32Array(t.data), t.dims, `${component}.${k}`);
    }
    return out;
  }

  async close(): Promise<void> {
    if (!this.#dead) {
      try {
        await this.#call({ op: 'close', id: this.#next++ });
      } catch {
        // already gone
      }
    }
    await this.#worker.terminate();
  }
}
