/**
 * The WebAssembly SIMD backend of the sampler's three hot loops (kernels.wat): the seeded normal
 * fill (rng.ts), guidance rescale's five sums (guidance.ts) and the fused update (sampler.ts).
 * Each does the float64 operations of its JavaScript twin in the same order, so both backends
 * give bit-identical results (shared/test/kernels.test.ts compares them); the JavaScript loops
 * stay the fallback where WebAssembly SIMD is missing (WebAssembly.validate fails, or a
 * browser's content policy forbids compiling). WebAssembly reads only its own memory, so the
 * operands are copied in and out with TypedArray.set: a memcpy each, far cheaper than the
 * scalar JavaScript they replace (README, Benchmarks).
 */
import { KERNELS_WASM } from './kernelsWasm.ts';

export type KernelBackend = 'wasm-simd' | 'js';

// The project compiles against lib es2024 without the DOM, which declares no WebAssembly values:
// the little used here, read from globalThis (absent in some runtimes: then the JavaScript loops run).
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { readonly exports: object };
  Memory: new (limits: { initial: number }) => WasmMemory;
}

interface Exports {
  normals(out: number, n: number): void;
  stats(u: number, c: number, n: number): void;
  update(x: number, b0: number, b1: number, b2: number, z: number, n: number, nb: number, hasZ: number,
    p: number, q0: number, q1: number, q2: number, s: number): void;
}

// Byte offsets, as kernels.wat documents them.
const X_NEXT_AT = 0;
const X_SCALED_AT = 1024;
const F_AT = 2048;
const R_AT = 3088;
const STATE_AT = 3104;
const SUMS_AT = 3120;
const DATA_AT = 4096;
const PAGE = 65536;
/** Larger operands (5 slots of them would pass 640 MiB) take the JavaScript loops. */
const MAX_ELEMENTS = 1 << 25;
/** Elements per kernel in the load-time warm-up: enough to spend V8's tier-up budget. */
const WARM_UP = 1 << 17;

/** The compiled kernels over one growable memory; views are renewed when it grows. */
class WasmKernels {
  private readonly memory: WasmMemory;
  private readonly k: Exports;
  private f32 = new Float32Array(0);
  private f64 = new Float64Array(0);
  private i32 = new Int32Array(0);
  /** A view of one staging range, reused while the memory and the range stay the same. */
  private out = new Float32Array(0);

  constructor(wasm: WasmApi) {
    const module = new wasm.Module(KERNELS_WASM);
    this.memory = new wasm.Memory({ initial: 1 });
    const instance = new wasm.Instance(module, { m: { mem: this.memory, exp: Math.exp, log: Math.log } });
    this.k = instance.exports as unknown as Exports;
    this.views();
  }

  /**
   * Runs every kernel once on WARM_UP scratch elements (the state and sums slots are overwritten,
   * no generator's stream is touched). V8 compiles wasm functions lazily with its baseline
   * compiler (Liftoff, ≈4× slower here) and recompiles hot ones with TurboFan in the background;
   * doing this at load time means the first sampling step already runs optimised code.
   */
  warmUp(): void {
    const n = WARM_UP;
    const stride = this.reserve(5, n);
    const at = DATA_AT + 16;
    this.i32.set([1, 2, 3, 4], STATE_AT / 4);
    this.k.normals(at, n);
    this.k.stats(at, at + stride, n);
    this.k.update(at, at + stride, at + 2 * stride, at + 3 * stride, at + 4 * stride, n, 3, 1, 1, 1, 1, 1, 1);
  }

  private views(): void {
    const b = this.memory.buffer;
    this.f32 = new Float32Array(b);
    this.f64 = new Float64Array(b);
    this.i32 = new Int32Array(b);
  }

  /**
   * Room for `slots` staging buffers of `n` floats; returns the byte distance between them. Each
   * starts 16-byte aligned with at least 4 spare bytes before it (the update kernel reads them).
   */
  private reserve(slots: number, n: number): number {
    const stride = ((4 * n + 15) & ~15) + 16;
    const need = DATA_AT + 16 + slots * stride;
    if (need > this.memory.buffer.byteLength) {
      this.memory.grow(Math.ceil((need - this.memory.buffer.byteLength) / PAGE));
      this.views();
    }
    return stride;
  }

  /** The f32 view of [at, at + n) bytes/4, cached. */
  private range(at: number, n: number): Float32Array {
    const o = this.out;
    if (o.buffer !== this.memory.buffer || o.byteOffset !== at || o.length !== n) this.out = new Float32Array(this.memory.buffer, at, n);
    return this.out;
  }

  setTables(xNext: Float64Array, xScaled: Float64Array, f: Float64Array, r: number, invR: number): void {
    this.f64.set(xNext, X_NEXT_AT / 8);
    this.f64.set(xScaled, X_SCALED_AT / 8);
    this.f64.set(f, F_AT / 8);
    this.f64[R_AT / 8] = r;
    this.f64[R_AT / 8 + 1] = invR;
  }

  /** rng.ts fillNormals; false (nothing done) when the range is too large for the kernels. */
  fillNormals(st: Int32Array, out: Float32Array, start: number, end: number): boolean {
    const n = end - start;
    if (n > MAX_ELEMENTS) return false;
    if (n === 0) return true;
    this.reserve(1, n);
    this.i32.set(st, STATE_AT / 4);
    const at = DATA_AT + 16;
    this.k.normals(at, n);
    for (let i = 0; i < 4; i++) st[i] = this.i32[STATE_AT / 4 + i];
    out.set(this.range(at, n), start);
    return true;
  }

  /** Σu, Σc, Σu², Σc², Σuc over [from, to) into sums[0..5), each summed in element order; false when too large. */
  cfgSums(u: Float32Array, c: Float32Array, from: number, to: number, sums: Float64Array): boolean {
    const n = to - from;
    if (n > MAX_ELEMENTS) return false;
    const stride = this.reserve(2, n);
    const whole = from === 0 && to === u.length;
    const uAt = DATA_AT + 16;
    this.f32.set(whole ? u : u.subarray(from, to), uAt / 4);
    this.f32.set(whole ? c : c.subarray(from, to), (uAt + stride) / 4);
    this.k.stats(uAt, uAt + stride, n);
    const r = SUMS_AT / 8;
    const f = this.f64;
    sums[0] = f[r];
    sums[1] = f[r + 1];
    sums[2] = f[r + 2];
    sums[3] = f[r + 3];
    sums[4] = f[r + 4];
    return true;
  }

  /**
   * sampler.ts fusedUpdate for 1–3 branches: copies x, the branches and z in, runs the kernel
   * per segment with that segment's weights (already multiplied by outCoef), copies x out.
   * False (nothing done) for other branch counts or operands too large for the kernels.
   */
  update(x: Float32Array, branches: readonly Float32Array[], z: Float32Array | null, L: number,
    p: number, q: (b: number, s: number) => number, sigma: number): boolean {
    const n = x.length;
    const nb = branches.length;
    if (nb < 1 || nb > 3 || n > MAX_ELEMENTS) return false;
    const stride = this.reserve(5, n);
    const at = (slot: number): number => DATA_AT + 16 + slot * stride;
    this.f32.set(x, at(0) / 4);
    for (let b = 0; b < nb; b++) this.f32.set(branches[b], at(1 + b) / 4);
    if (z) this.f32.set(z, at(4) / 4);
    for (let s = 0, from = 0; from < n; s++, from += L) {
      const o = 4 * from;
      this.k.update(at(0) + o, at(1) + o, at(2) + o, at(3) + o, at(4) + o, L, nb, z ? 1 : 0, p,
        q(0, s), nb > 1 ? q(1, s) : 0, nb > 2 ? q(2, s) : 0, sigma);
    }
    x.set(this.range(at(0), n));
    return true;
  }
}

function compile(): WasmKernels | null {
  try {
    const wasm = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;
    // validate is false where the engine lacks SIMD: the module uses it throughout.
    if (typeof wasm !== 'object' || !wasm.validate(KERNELS_WASM)) return null;
    return new WasmKernels(wasm);
  } catch {
    // Compiling can be forbidden (a browser's content security policy): the JavaScript loops run.
    return null;
  }
}

const compiled = compile();
let active: WasmKernels | null = compiled;

/** The backend in use: 'wasm-simd' where WebAssembly SIMD is available, else 'js'. */
export function kernelBackend(): KernelBackend {
  return active ? 'wasm-simd' : 'js';
}

/** The backends this runtime can use ('js' always). */
export function kernelBackends(): KernelBackend[] {
  return compiled ? ['wasm-simd', 'js'] : ['js'];
}

/**
 * Selects the backend (tests and benchmarks compare them; both give the same bits). Throws a
 * RangeError for a backend this runtime lacks.
 */
export function setKernelBackend(backend: KernelBackend): void {
  if (backend === 'js') active = null;
  else if (backend === 'wasm-simd' && compiled) active = compiled;
  else throw new RangeError(`kernel backend '${String(backend)}' is not available here; available: ${kernelBackends().join(', ')}`);
}

/** rng.ts hands its Ziggurat tables over once (one source for both backends); then the warm-up runs. */
export function setZigguratTables(xNext: Float64Array, xScaled: Float64Array, f: Float64Array, r: number, invR: number): void {
  compiled?.setTables(xNext, xScaled, f, r, invR);
  compiled?.warmUp();
}

/** The WebAssembly kernels when they are the active backend (internal to the sampler). */
export function wasmKernels(): WasmKernels | null {
  return active;
}
