/**
 * Parity check of an exported bundle (`cil verify-bundle`, docs/models.md): the exporter
 * (tools/export) saves, in `<bundle>/parity/`, random inputs for every component and the float32
 * torch module's outputs on them. Here each component runs in onnxruntime (through the worker's own
 * OnnxSessions, CPU by default) on the same inputs, and the outputs are compared.
 *
 * Error measure, per output: max_i |onnx_i − ref_i| / max(max_i |ref_i|, 1e-6) — the largest
 * absolute difference relative to the largest reference magnitude (an elementwise relative error
 * explodes wherever the reference crosses zero; the floor keeps an all-zero reference finite).
 * A component's error is the largest over its outputs; any NaN/∞ or shape mismatch is ∞.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { readNpy } from '#shared/formats';
import { Family } from '#shared/schemas';
import { parseJsonWith, SafeRelativeKey } from '#shared/schemas';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import { checkSessionAgainstManifest, openBundle } from './bundle.ts';
import type { Bundle } from './bundle.ts';
import type { ExecutionProviderPreference } from './runtime/protocol.ts';
import { OnnxSessions } from './runtime/sessions.ts';
import type { Feed } from './runtime/sessions.ts';

export const PARITY_FORMAT = 'cil-parity/1';
/** Default tolerances when none is given: float32 graphs differ from torch by summation order only. */
export const DEFAULT_TOLERANCE_FP32 = 1e-4;
/** float16 graphs (exported with --fp16) also carry the weight rounding. */
export const DEFAULT_TOLERANCE_FP16 = 1e-2;
/** Floor of the denominator of the relative error. */
export const RELATIVE_FLOOR = 1e-6;

/** The parity files are missing, malformed or do not fit the bundle. */
export class ParityError extends Error {
  override readonly name = 'ParityError';
}

const ParityTensor = z.strictObject({
  name: z.string().min(1),
  /** Relative to the parity folder. */
  file: SafeRelativeKey,
  dtype: z.enum(['float32', 'int64']),
  dims: z.array(z.int().min(0)),
});

const ParityComponent = z.strictObject({
  fp16: z.boolean(),
  tolerance: z.number().gt(0),
  inputs: z.array(ParityTensor).min(1),
  outputs: z.array(ParityTensor).min(1),
});

export const ParityIndex = z.strictObject({
  format: z.literal(PARITY_FORMAT),
  family: Family,
  reference: z.string().optional(),
  components: z.record(z.string(), ParityComponent),
});
export type ParityIndex = z.infer<typeof ParityIndex>;

export interface ErrorStats {
  readonly maxAbsError: number;
  readonly maxAbsReference: number;
  /** maxAbsError / max(maxAbsReference, RELATIVE_FLOOR); Infinity on any non-finite value. */
  readonly relativeError: number;
}

/** The error measure of this module (see the header). */
export function relativeError(actual: Float32Array, reference: Float32Array): ErrorStats {
  if (actual.length !== reference.length) throw new ParityError(`cannot compare ${actual.length} values with ${reference.length}`);
  let maxErr = 0;
  let maxRef = 0;
  let finite = true;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const r = reference[i];
    if (!Number.isFinite(a) || !Number.isFinite(r)) {
      finite = false;
      continue;
    }
    const d = Math.abs(a - r);
    if (d > maxErr) maxErr = d;
    const m = Math.abs(r);
    if (m > maxRef) maxRef = m;
  }
  return { maxAbsError: finite ? maxErr : Infinity, maxAbsReference: maxRef, relativeError: finite ? maxErr / Math.max(maxRef, RELATIVE_FLOOR) : Infinity };
}

export interface OutputParity extends ErrorStats {
  readonly name: string;
  readonly dims: readonly number[];
  /** Set when the output could not be compared (shape mismatch, missing). */
  readonly problem?: string;
}

export interface ComponentParity {
  readonly component: string;
  readonly fp16: boolean;
  readonly tolerance: number;
  /** Largest relative error over the component's outputs. */
  readonly relativeError: number;
  readonly pass: boolean;
  readonly outputs: readonly OutputParity[];
  readonly provider: string;
  readonly ms: number;
}

export interface VerifyReport {
  readonly bundle: string;
  readonly id: string;
  readonly family: string;
  readonly parity: string;
  readonly reference: string | null;
  readonly pass: boolean;
  readonly components: readonly ComponentParity[];
}

export interface VerifyOptions {
  /** One tolerance for every component (default: each component's from index.json, which the exporter sets to DEFAULT_TOLERANCE_FP32 / _FP16). */
  readonly tolerance?: number;
  /** Parity folder (default `<bundle root>/parity`; needed for s3:// bundles). */
  readonly parityDir?: string;
  /** Execution provider (default 'cpu'). */
  readonly provider?: ExecutionProviderPreference;
  readonly threads?: number;
  readonly cacheDir?: string;
  /** Only these components (default all). */
  readonly components?: readonly string[];
}

async function readIndex(dir: string): Promise<ParityIndex> {
  const where = join(dir, 'index.json');
  let text: string;
  try {
    text = await readFile(where, 'utf8');
  } catch {
    throw new ParityError(`no ${where}: export the bundle with tools/export (it writes parity/ beside the ONNX files), or pass --parity <dir>`);
  }
  return parseJsonWith(ParityIndex, text, where, (m) => new ParityError(m), (issues) => `not a ${PARITY_FORMAT} index (${issues})`);
}

async function readParityTensor(dir: string, t: z.infer<typeof ParityTensor>, where: string): Promise<Tensor> {
  const file = join(dir, t.file);
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch {
    throw new ParityError(`${where}: ${file} is missing`);
  }
  const { tensor: x } = readNpy(bytes, file);
  if (x.dims.length !== t.dims.length || x.dims.some((d, i) => d !== t.dims[i])) {
    throw new ParityError(`${where}: ${file} has dims [${x.dims.join(', ')}], index.json says [${t.dims.join(', ')}]`);
  }
  return x;
}

async function verifyComponent(bundle: Bundle, sessions: OnnxSessions, dir: string, name: string, p: z.infer<typeof ParityComponent>, tolerance: number): Promise<ComponentParity> {
  const spec = bundle.manifest.components[name];
  const info = await sessions.open(name, join(bundle.root, spec.file));
  checkSessionAgainstManifest(bundle.manifest, name, info.file, info.inputs, info.outputs);
  const feeds: Record<string, Feed> = {};
  for (const s of spec.inputs) {
    const pt = p.inputs.find((t) => t.name === s.name);
    if (!pt) throw new ParityError(`parity/${name}: no saved input '${s.name}' (has ${p.inputs.map((t) => t.name).join(', ')})`);
    const x = await readParityTensor(dir, pt, `parity/${name}`);
    if (s.dtype === 'int64' || s.dtype === 'int32') {
      const ints = Array.from(x.data);
      if (ints.some((v) => !Number.isInteger(v))) throw new ParityError(`parity/${name}: input '${s.name}' is ${s.dtype} in the graph but ${pt.file} holds non-integers`);
      feeds[s.name] = { ints, dims: x.dims };
    } else {
      feeds[s.name] = tensor(x.data, x.dims, `${name}.${s.name}`);
    }
  }
  const t0 = performance.now();
  const out = await sessions.run(name, feeds);
  const ms = performance.now() - t0;
  const outputs: OutputParity[] = [];
  for (const pt of p.outputs) {
    const ref = await readParityTensor(dir, pt, `parity/${name}`);
    const got = out[pt.name];
    if (!got) {
      outputs.push({ name: pt.name, dims: [], maxAbsError: Infinity, maxAbsReference: 0, relativeError: Infinity, problem: `the graph has no output '${pt.name}'` });
      continue;
    }
    if (got.dims.length !== ref.dims.length || got.dims.some((d, i) => d !== ref.dims[i])) {
      outputs.push({ name: pt.name, dims: got.dims, maxAbsError: Infinity, maxAbsReference: 0, relativeError: Infinity, problem: `dims [${got.dims.join(', ')}], the torch reference has [${ref.dims.join(', ')}]` });
      continue;
    }
    outputs.push({ name: pt.name, dims: got.dims, ...relativeError(got.data, ref.data) });
  }
  const rel = Math.max(...outputs.map((o) => o.relativeError));
  return { component: name, fp16: p.fp16, tolerance, relativeError: rel, pass: rel <= tolerance, outputs, provider: info.provider, ms };
}

/** Runs every component of the bundle on its saved parity inputs; never throws for a mismatch (see `pass`). */
export async function verifyBundle(source: string, o: VerifyOptions = {}): Promise<VerifyReport> {
  const bundle = await openBundle(source, { cacheDir: o.cacheDir });
  const m = bundle.manifest;
  const dir = o.parityDir ?? join(bundle.root, 'parity');
  const index = await readIndex(dir);
  if (index.family !== m.family) throw new ParityError(`${dir}/index.json is for a ${index.family} bundle, ${source} is ${m.family}`);
  const names = o.components ?? Object.keys(m.components);
  const missing = names.filter((n) => !index.components[n]);
  if (missing.length) throw new ParityError(`${dir}/index.json has no parity data for ${missing.join(', ')} (has ${Object.keys(index.components).join(', ')})`);
  const unknown = names.filter((n) => !m.components[n]);
  if (unknown.length) throw new ParityError(`${source}: no component ${unknown.join(', ')} (has ${Object.keys(m.components).join(', ')})`);
  const sessions = new OnnxSessions({ provider: o.provider ?? 'cpu', threads: o.threads });
  const components: ComponentParity[] = [];
  try {
    for (const n of names) {
      const p = index.components[n];
      const tol = o.tolerance ?? p.tolerance;
      components.push(await verifyComponent(bundle, sessions, dir, n, p, tol));
    }
  } finally {
    await sessions.close();
    await bundle.release?.();
  }
  return { bundle: source, id: m.id, family: m.family, parity: dir, reference: index.reference ?? null, pass: components.every((c) => c.pass), components };
}
