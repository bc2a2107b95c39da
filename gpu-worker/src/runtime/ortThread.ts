/**
 * The inference thread: the ONLY module that imports onnxruntime-node. It opens one session per
 * bundle component (kept for the whole job: re-creating sessions leaks memory), checks every feed
 * against the session's input names, element types and fixed dims before running, and converts
 * float16 graph boundaries to and from float32 (fp16 I/O is unreliable in some onnxruntime-node
 * versions, so exports should prefer float32 I/O with casts inside the graph).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve } from 'node:path';
import { parentPort, threadId } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { float16ArrayToFloat32, float32ArrayToFloat16 } from '#shared/formats';
import type { BindRequest, IoMeta, OpenRequest, Request, Response, RunBoundRequest, RunRequest, WireTensor } from './protocol.ts';

interface Entry {
  readonly session: ort.InferenceSession;
  readonly inputs: readonly IoMeta[];
  readonly outputs: readonly IoMeta[];
  readonly file: string;
}

const sessions = new Map<string, Entry>();

/**
 * Whether onnxruntime-node's CUDA provider library is installed beside its binding (the GPU image
 * installs it; `npm ci` here skips it). Checked once, so 'auto' on a CPU machine never tries
 * CUDA and never logs onnxruntime's load errors.
 */
function cudaProviderInstalled(): string | null {
  try {
    const root = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    const dir = join(root, 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(join(dir, 'libonnxruntime_providers_cuda.so')) ? null : `CUDA provider not installed in ${dir}`;
  } catch (e) {
    return (e as Error).message;
  }
}
/** Why CUDA is not used, once known (set by the first failure or the install check). */
let cudaUnavailable: string | null | undefined;

class FeedError extends Error {
  override readonly name = 'FeedError';
}

function meta(list: readonly ort.InferenceSession.ValueMetadata[]): IoMeta[] {
  return list.map((m) => ({
    name: m.name,
    type: m.isTensor ? String(m.type) : 'non-tensor',
    shape: m.isTensor ? m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))) : [],
  }));
}

/**
 * Where onnxruntime's optimised graph of `file` is cached for `provider`: the name carries the
 * file's path, size and time and the onnxruntime version, so a changed model or runtime never
 * loads a stale graph (an optimised graph holds provider-specific fused nodes).
 */
function optimizedPath(dir: string, file: string, provider: string): string {
  const st = statSync(file);
  const key = createHash('sha256').update(`${resolve(file)}\0${st.size}\0${st.mtimeMs}\0${provider}\0${ort.env.versions.common}`).digest('hex').slice(0, 16);
  return join(dir, `${basename(file, '.onnx')}.${provider}.${key}.ort.onnx`);
}

async function create(file: string, base: ort.InferenceSession.SessionOptions, provider: 'tensorrt' | 'cuda' | 'cpu', cacheDir: string | undefined): Promise<{ session: ort.InferenceSession; optimizedModel?: 'written' | 'loaded'; note?: string }> {
  const eps: ort.InferenceSession.ExecutionProviderConfig[] =
    provider === 'cpu' ? ['cpu'] : provider === 'cuda' ? [{ name: 'cuda', deviceId: 0 }] : [{ name: 'tensorrt', deviceId: 0 }, { name: 'cuda', deviceId: 0 }];
  if (!cacheDir) return { session: await ort.InferenceSession.create(file, { ...base, executionProviders: eps }) };
  let cached: string;
  try {
    mkdirSync(cacheDir, { recursive: true });
    cached = optimizedPath(cacheDir, file, provider);
  } catch (e) {
    const session = await ort.InferenceSession.create(file, { ...base, executionProviders: eps });
    return { session, note: `optimised-graph cache off (${(e as Error).message})` };
  }
  if (existsSync(cached)) {
    try {
      // Already optimised: loading it with optimisation on would redo the work it saves.
      return { session: await ort.InferenceSession.create(cached, { ...base, graphOptimizationLevel: 'disabled', executionProviders: eps }), optimizedModel: 'loaded' };
    } catch (e) {
      rmSync(cached, { force: true });
      const session = await ort.InferenceSession.create(file, { ...base, executionProviders: eps });
      return { session, note: `cached optimised graph ${cached} unreadable, removed (${(e as Error).message.split('\n')[0]})` };
    }
  }
  // Written beside, then renamed: two jobs opening the same model never read half a file.
  const tmp = `${cached}.${process.pid}.${threadId}.tmp`;
  const session = await ort.InferenceSession.create(file, { ...base, optimizedModelFilePath: tmp, executionProviders: eps });
  try {
    renameSync(tmp, cached);
    return { session, optimizedModel: 'written' };
  } catch (e) {
    rmSync(tmp, { force: true });
    return { session, note: `optimised graph not cached (${(e as Error).message})` };
  }
}

async function open(r: OpenRequest): Promise<Response> {
  const base: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: r.intraOpThreads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
  };
  const t = r.tuning ?? {};
  const notes: string[] = [];
  // onnxruntime-node 1.30 passes the CUDA execution provider its device id and nothing else, so
  // CUDA graph capture (a provider option that also needs inputs bound in device memory) cannot be
  // switched on from Node: asked for, it is reported, not silently dropped.
  if (t.cudaGraph && r.provider !== 'cpu') notes.push('CUDA graph capture unavailable: onnxruntime-node 1.30 passes no CUDA provider options but the device id');
  let made: Awaited<ReturnType<typeof create>>;
  let provider: 'tensorrt' | 'cuda' | 'cpu' = 'cpu';
  if (r.provider === 'cpu') {
    made = await create(r.file, base, 'cpu', t.optimizedCacheDir);
  } else {
    if (cudaUnavailable === undefined && r.provider === 'auto') cudaUnavailable = cudaProviderInstalled();
    if (r.provider === 'auto' && cudaUnavailable) {
      notes.push(cudaUnavailable);
      made = await create(r.file, base, 'cpu', t.optimizedCacheDir);
    } else {
      const tries: ('tensorrt' | 'cuda')[] = t.tensorrtCacheDir ? ['tensorrt', 'cuda'] : ['cuda'];
      let got: Awaited<ReturnType<typeof create>> | null = null;
      for (const p of tries) {
        try {
          got = await create(r.file, base, p, t.optimizedCacheDir);
          provider = p;
          break;
        } catch (e) {
          const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
          if (p === 'tensorrt') {
            notes.push(`TensorRT unavailable (${why})`);
            continue;
          }
          if (r.provider === 'cuda') throw e;
          cudaUnavailable = why;
          notes.push(why);
        }
      }
      made = got ?? (await create(r.file, base, 'cpu', t.optimizedCacheDir));
    }
  }
  if (made.note) notes.push(made.note);
  const session = made.session;
  const entry: Entry = { session, inputs: meta(session.inputMetadata), outputs: meta(session.outputMetadata), file: r.file };
  sessions.set(r.component, entry);
  return { op: 'opened', id: r.id, provider, fallbackReason: notes.length ? notes.join('; ') : undefined, optimizedModel: made.optimizedModel, inputs: entry.inputs, outputs: entry.outputs };
}

function checkDims(component: string, spec: IoMeta, dims: readonly number[]): void {
  const where = `${component}: input '${spec.name}'`;
  if (dims.length !== spec.shape.length) {
    throw new FeedError(`${where} has rank ${spec.shape.length} (${JSON.stringify(spec.shape)}), got dims [${dims.join(', ')}]`);
  }
  spec.shape.forEach((d, i) => {
    if (typeof d === 'number' && d !== dims[i]) {
      throw new FeedError(`${where}: axis ${i} must be ${d} (shape ${JSON.stringify(spec.shape)}), got dims [${dims.join(', ')}]`);
    }
  });
}

/**
 * A float16 tensor over raw bits. onnxruntime-common wraps a Uint16Array as a Float16Array where
 * the engine has one (Node 24), and onnxruntime-node 1.30's binding cannot read a Float16Array
 * ("not enough space: expected N, got 0"), so the tensor's data is pinned to the bits themselves.
 */
function float16Tensor(bits: Uint16Array, dims: readonly number[]): ort.Tensor {
  const t = new ort.Tensor('float16', bits, dims);
  Object.defineProperty(t, 'data', { value: bits });
  return t;
}

/**
 * The onnxruntime tensor for a float32 or int64 buffer, converted to the graph's element type
 * where it differs (float16, int32). The conversion goes into a buffer made here, once: `refresh`
 * (when given) receives the function that redoes it after the source buffer changed.
 */
function toOrt(component: string, spec: IoMeta, dtype: WireTensor['dtype'], data: ArrayBufferLike, dims: readonly number[], refresh?: (f: () => void) => void): ort.Tensor {
  checkDims(component, spec, dims);
  const where = `${component}: input '${spec.name}'`;
  if (dtype === 'float32') {
    const f = new Float32Array(data);
    if (spec.type === 'float32') return new ort.Tensor('float32', f, dims);
    if (spec.type === 'float16') {
      const h = float32ArrayToFloat16(f);
      refresh?.(() => float32ArrayToFloat16(f, h));
      return float16Tensor(h, dims);
    }
    throw new FeedError(`${where} expects ${spec.type}, got float32`);
  }
  const b = new BigInt64Array(data);
  if (spec.type === 'int64') return new ort.Tensor('int64', b, dims);
  if (spec.type === 'int32') {
    const i32 = Int32Array.from(b, (v) => Number(v));
    refresh?.(() => {
      for (let k = 0; k < b.length; k++) i32[k] = Number(b[k]);
    });
    return new ort.Tensor('int32', i32, dims);
  }
  throw new FeedError(`${where} expects ${spec.type}, got int64`);
}

/**
 * An output for the wire. onnxruntime-node hands every output over in a fresh ArrayBuffer of its
 * own, so a float32 or int64 output is transferred as it is (no copy) when it fills its buffer.
 */
function fromOrt(component: string, name: string, t: ort.Tensor): WireTensor {
  const dims = [...t.dims];
  const own = (a: Float32Array | BigInt64Array): ArrayBuffer =>
    a.byteOffset === 0 && a.byteLength === a.buffer.byteLength && a.buffer instanceof ArrayBuffer ? a.buffer : a.slice().buffer;
  if (t.type === 'float32') return { dtype: 'float32', data: own(t.data as Float32Array), dims };
  if (t.type === 'float16') {
    const raw = t.data as unknown;
    // onnxruntime-node returns float16 as Uint16Array bits (or Float16Array where the engine has it).
    const f = raw instanceof Uint16Array ? float16ArrayToFloat32(raw) : Float32Array.from(raw as ArrayLike<number>);
    return { dtype: 'float32', data: f.buffer as ArrayBuffer, dims };
  }
  if (t.type === 'int64') return { dtype: 'int64', data: own(t.data as BigInt64Array), dims };
  throw new FeedError(`${component}: output '${name}' has unsupported type ${t.type}`);
}

function entryFor(component: string, given: readonly string[]): Entry {
  const entry = sessions.get(component);
  if (!entry) throw new FeedError(`no session open for component '${component}'`);
  const expected = entry.inputs.map((i) => i.name);
  const missing = expected.filter((n) => !given.includes(n));
  const extra = given.filter((n) => !expected.includes(n));
  if (missing.length || extra.length) {
    throw new FeedError(
      `${component} (${entry.file}): feeds [${given.join(', ')}] do not match the graph inputs [${expected.join(', ')}]` +
        (missing.length ? `; missing ${missing.join(', ')}` : '') +
        (extra.length ? `; unknown ${extra.join(', ')}` : ''),
    );
  }
  return entry;
}

async function runSession(id: number, component: string, entry: Entry, feeds: Record<string, ort.Tensor>): Promise<Response> {
  const t0 = performance.now();
  const out = await entry.session.run(feeds);
  const ms = performance.now() - t0;
  const outputs: Record<string, WireTensor> = {};
  for (const [name, t] of Object.entries(out)) outputs[name] = fromOrt(component, name, t);
  return { op: 'result', id, outputs, ms };
}

async function run(r: RunRequest): Promise<Response> {
  const entry = entryFor(r.component, Object.keys(r.feeds));
  const feeds: Record<string, ort.Tensor> = {};
  for (const spec of entry.inputs) {
    const t = r.feeds[spec.name];
    feeds[spec.name] = toOrt(r.component, spec, t.dtype, t.data, t.dims);
  }
  return runSession(r.id, r.component, entry, feeds);
}

interface Binding {
  readonly component: string;
  readonly entry: Entry;
  readonly feeds: Record<string, ort.Tensor>;
  /** Type conversions to redo before each call (float16 or int32 graph inputs). */
  readonly refresh: (() => void)[];
}

const bindings = new Map<number, Binding>();

async function bind(r: BindRequest): Promise<Response> {
  const entry = entryFor(r.component, Object.keys(r.feeds));
  const refresh: (() => void)[] = [];
  const feeds: Record<string, ort.Tensor> = {};
  for (const spec of entry.inputs) {
    const t = r.feeds[spec.name];
    feeds[spec.name] = toOrt(r.component, spec, t.dtype, t.data, t.dims, (f) => refresh.push(f));
  }
  bindings.set(r.binding, { component: r.component, entry, feeds, refresh });
  if (!r.warmup) return { op: 'bound', id: r.id };
  for (const f of refresh) f();
  const t0 = performance.now();
  await entry.session.run(feeds);
  return { op: 'bound', id: r.id, warmupMs: performance.now() - t0 };
}

function runBound(r: RunBoundRequest): Promise<Response> {
  const b = bindings.get(r.binding);
  if (!b) throw new FeedError(`no binding ${r.binding}`);
  for (const f of b.refresh) f();
  return runSession(r.id, b.component, b.entry, b.feeds);
}

async function handle(r: Request): Promise<Response> {
  if (r.op === 'open') return open(r);
  if (r.op === 'run') return run(r);
  if (r.op === 'bind') return bind(r);
  if (r.op === 'runBound') return runBound(r);
  bindings.clear();
  for (const e of sessions.values()) await e.session.release();
  sessions.clear();
  return { op: 'closed', id: r.id };
}

const port = parentPort;
if (!port) throw new Error('ortThread.ts must run in a worker_thread');
// Requests are handled one at a time, in order: one job drives one set of sessions.
let chain: Promise<void> = Promise.resolve();
port.on('message', (r: Request) => {
  chain = chain.then(async () => {
    let res: Response;
    try {
      res = await handle(r);
    } catch (e) {
      res = { op: 'error', id: r.id, name: e instanceof Error ? e.name : 'Error', message: e instanceof Error ? e.message : String(e) };
    }
    const transfer: ArrayBuffer[] = res.op === 'result' ? Object.values(res.outputs).map((t) => t.data) : [];
    try {
      port.postMessage(res, transfer);
    } catch (e) {
      // A buffer onnxruntime cannot give away (not detachable): send copies instead.
      if (res.op !== 'result' || (e as Error).name !== 'DataCloneError') throw e;
      const outputs = Object.fromEntries(Object.entries(res.outputs).map(([k, t]) => [k, { ...t, data: t.data.slice(0) }]));
      port.postMessage({ ...res, outputs }, Object.values(outputs).map((t) => t.data));
    }
  });
});
