/**
 * The main-thread side of inference: one worker_thread holding every onnxruntime session of a
 * job. Tensors cross as transferable buffers; the thread checks feeds against each graph.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { ExecutionProviderPreference, Opened, Request, Response, WireTensor } from './protocol.ts';

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
}

function toWire(f: Feed): { wire: WireTensor; transfer: ArrayBuffer } {
  if ('data' in f) {
    const copy = f.data.slice();
    return { wire: { dtype: 'float32', data: copy.buffer, dims: [...f.dims] }, transfer: copy.buffer };
  }
  const b = BigInt64Array.from(f.ints, (v) => BigInt(Math.round(v)));
  return { wire: { dtype: 'int64', data: b.buffer, dims: [...f.dims] }, transfer: b.buffer };
}

export class OnnxSessions {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (r: Response) => void; reject: (e: Error) => void }>();
  readonly #info = new Map<string, SessionInfo>();
  readonly #provider: ExecutionProviderPreference;
  readonly #threads: number;
  #next = 1;
  #dead: Error | null = null;
  /** Network time (ms) per component, summed over the job. */
  readonly runMs = new Map<string, number>();
  readonly runCalls = new Map<string, number>();

  constructor(o: SessionsOptions = {}) {
    const env = process.env.CIL_EXECUTION_PROVIDER;
    this.#provider = o.provider ?? (env === 'cpu' || env === 'cuda' ? env : 'auto');
    this.#threads = o.threads ?? availableParallelism();
    this.#worker = new Worker(new URL('./ortThread.ts', import.meta.url));
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
    const r = await this.#call({ op: 'open', id: this.#next++, component, file, provider: this.#provider, intraOpThreads: this.#threads });
    if (r.op === 'error') throw new InferenceError(`${component}: cannot open ${file}: ${r.message}`);
    const o = r as Opened;
    const info: SessionInfo = { component, file, provider: o.provider, fallbackReason: o.fallbackReason, inputs: o.inputs, outputs: o.outputs };
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
    // An abort does not wait for the graph to finish: the caller checkpoints and exits at once,
    // and the late result is dropped.
    const call = this.#call({ op: 'run', id: this.#next++, component, feeds: wire }, transfer);
    const r = signal
      ? await Promise.race([
          call,
          new Promise<never>((_, reject) => {
            if (signal.aborted) reject(signal.reason as Error);
            signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
          }),
        ])
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
