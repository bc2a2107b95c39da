/**
 * safetensors read/write (https://github.com/huggingface/safetensors#format): an 8-byte
 * little-endian header length N, N bytes of UTF-8 JSON, then the raw little-endian data.
 * The JSON maps tensor names to {dtype, shape, data_offsets: [begin, end)} (offsets relative to
 * the data section) plus an optional `__metadata__` string→string map.
 *
 * Why hand-written: npm has no maintained Node reader/writer (the `safetensors` package is a
 * single 0.0.1 release; `@huggingface/hub` only parses headers of remote files over fetch).
 * The format is small, and reading it safely needs checks a permissive parser skips:
 * `JSON.parse` silently keeps the last of duplicate keys, so the header is parsed by the strict
 * JSON reader of strictJson.ts, and every tensor's offsets are checked to tile the data section exactly
 * (no overlap, no gap, no bytes left over), as the reference implementation requires.
 */
import { bfloat16BitsToFloat32Bits, float16BitsToFloat32Bits } from './fp16.ts';
import type { Tensor } from '#shared/sampler';
import { formatDims, tensor } from '#shared/sampler';
import { describe, StrictJson } from './strictJson.ts';
import type { Json } from './strictJson.ts';

/** Thrown for any file this module refuses; the message names the file and, where known, the tensor. */
export class SafetensorsFormatError extends Error {
  override readonly name = 'SafetensorsFormatError';
  readonly file: string;
  /** The tensor (or `__metadata__` key) at fault, when the fault is in one entry. */
  readonly tensorName: string | undefined;
  constructor(file: string, message: string, tensorName?: string) {
    super(tensorName === undefined ? `${file}: ${message}` : `${file}: tensor "${tensorName}": ${message}`);
    this.file = file;
    this.tensorName = tensorName;
  }
}

/** The reference implementation's dtypes and their element sizes in bytes. */
const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDtype = keyof typeof DTYPE_SIZES;

/** Dtypes `tensor()` converts to float32. */
export const READABLE_DTYPES: readonly SafetensorsDtype[] = ['F32', 'F16', 'BF16', 'F64'];

/** The reference implementation's limit on the header size. */
export const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';

export interface SafetensorsEntry {
  readonly dtype: SafetensorsDtype;
  readonly dims: readonly number[];
  /** Byte range of the tensor's data, relative to the start of the data section. */
  readonly dataOffsets: readonly [number, number];
  /** Decodes the data to a new float32 tensor; throws for dtypes not in READABLE_DTYPES. */
  tensor(): Tensor;
  /**
   * Decodes the data to a new Float64Array (row-major): F64 exactly, F32/F16/BF16 widened exactly.
   * For accumulators whose state must survive a round trip bit for bit. Throws for other dtypes.
   */
  float64(): Float64Array;
}

/** A float64 array with dims: written as F64 by writeSafetensors (accumulator state, not model tensors). */
export interface Float64Tensor {
  readonly data: Float64Array;
  readonly dims: readonly number[];
}

export interface SafetensorsFile {
  /** Entries in data-offset (file) order. */
  readonly tensors: Map<string, SafetensorsEntry>;
  readonly metadata: Record<string, string>;
}

function isIndex(v: Json | undefined): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function decodeInto(
  dtype: SafetensorsDtype,
  dv: DataView,
  offset: number,
  out: Float32Array,
): void {
  const n = out.length;
  const bits = new Uint32Array(out.buffer, out.byteOffset, n);
  switch (dtype) {
    case 'F32':
      // Bits, not values, so NaN payloads survive; DataView handles any alignment.
      for (let i = 0; i < n; i++) bits[i] = dv.getUint32(offset + 4 * i, true);
      return;
    case 'F16':
      for (let i = 0; i < n; i++) bits[i] = float16BitsToFloat32Bits(dv.getUint16(offset + 2 * i, true));
      return;
    case 'BF16':
      for (let i = 0; i < n; i++) bits[i] = bfloat16BitsToFloat32Bits(dv.getUint16(offset + 2 * i, true));
      return;
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(offset + 8 * i, true); // rounds to nearest
      return;
    default:
      throw new Error(`unreachable: ${dtype}`);
  }
}

/**
 * Parses and validates a safetensors file. Tensor data is decoded lazily by each entry's
 * `tensor()` (a new Float32Array per call). Throws SafetensorsFormatError naming `name` and the
 * tensor for: a header length past the file or above 100 MB, a header that is not UTF-8 JSON
 * object, duplicate keys, unknown dtypes, bad shapes or offsets, offsets out of range,
 * overlapping or leaving gaps or trailing bytes, sizes not matching dtype × shape, and
 * `__metadata__` values that are not strings.
 */
export function readSafetensors(bytes: Uint8Array, name: string): SafetensorsFile {
  const fail: (msg: string, tensorName?: string) => never = (msg, tensorName) => {
    throw new SafetensorsFormatError(name, msg, tensorName);
  };
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8) fail(`file is ${bytes.length} bytes, too short for the 8-byte header length`);
  const lo = dv.getUint32(0, true);
  const hi = dv.getUint32(4, true);
  const n = hi * 4294967296 + lo; // exact below 2^53; anything that large fails the limit below
  if (n > MAX_HEADER_BYTES) fail(`header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (8 + n > bytes.length) fail(`header length ${n} runs past the end of the file (${bytes.length} bytes)`);

  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    return fail('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) fail("header must be a JSON object starting with '{'");
  const root = new StrictJson(text, (m) => fail(m)).parse();
  if (!(root instanceof Map)) return fail('header is not a JSON object');

  const dataStart = 8 + n;
  const dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  interface Raw {
    key: string;
    dtype: SafetensorsDtype;
    dims: number[];
    begin: number;
    end: number;
  }
  const raws: Raw[] = [];

  for (const [key, value] of root) {
    if (key === METADATA_KEY) {
      if (value === null) continue; // serde reads null as "no metadata"
      if (!(value instanceof Map)) return fail(`__metadata__ must be an object of strings, got ${describe(value)}`);
      for (const [mk, mv] of value) {
        if (typeof mv !== 'string') fail(`__metadata__ value for "${mk}" must be a string, got ${describe(mv)}`);
        metadata[mk] = mv;
      }
      continue;
    }
    if (!(value instanceof Map)) return fail(`entry must be an object, got ${describe(value)}`, key);
    const dtype = value.get('dtype');
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_SIZES, dtype)) {
      return fail(`unknown dtype ${describe(dtype)} (known: ${Object.keys(DTYPE_SIZES).join(', ')})`, key);
    }
    const shape = value.get('shape');
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      return fail(`shape must be an array of non-negative integers, got ${describe(shape)}`, key);
    }
    const offsets = value.get('data_offsets');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !isIndex(offsets[0]) || !isIndex(offsets[1])) {
      return fail(`data_offsets must be [begin, end] non-negative integers, got ${describe(offsets)}`, key);
    }
    const [begin, end] = offsets;
    const dims = shape;
    const dt = dtype as SafetensorsDtype;
    if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`, key);
    if (end > dataLen) {
      fail(`data_offsets [${begin}, ${end}] are out of range of the ${dataLen}-byte data section`, key);
    }
    let count = 1;
    for (const d of dims) count *= d;
    const expected = count * DTYPE_SIZES[dt];
    if (end - begin !== expected) {
      fail(
        `${end - begin} bytes at data_offsets [${begin}, ${end}] do not match ${dt} × ${formatDims(dims)} = ${expected} bytes`,
        key,
      );
    }
    raws.push({ key, dtype: dt, dims, begin, end });
  }

  // The reference requires the tensors to tile the data section exactly, in offset order.
  raws.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let prev: string | undefined;
  for (const r of raws) {
    if (r.begin < cursor) {
      fail(`data_offsets [${r.begin}, ${r.end}] overlap those of tensor "${prev}" (which end at ${cursor})`, r.key);
    }
    if (r.begin > cursor) {
      fail(`data bytes [${cursor}, ${r.begin}) before this tensor belong to no tensor (gap)`, r.key);
    }
    cursor = r.end;
    prev = r.key;
  }
  if (cursor !== dataLen) {
    fail(`data section has ${dataLen} bytes but the tensors cover only ${cursor} (trailing bytes)`);
  }

  const tensors = new Map<string, SafetensorsEntry>();
  for (const r of raws) {
    const dims = Object.freeze([...r.dims]);
    tensors.set(r.key, {
      dtype: r.dtype,
      dims,
      dataOffsets: Object.freeze([r.begin, r.end] as [number, number]),
      tensor: () => {
        if (!READABLE_DTYPES.includes(r.dtype)) {
          fail(`dtype ${r.dtype} cannot be read as float32 (readable: ${READABLE_DTYPES.join(', ')})`, r.key);
        }
        let count = 1;
        for (const d of dims) count *= d;
        const out = new Float32Array(count);
        decodeInto(r.dtype, dv, dataStart + r.begin, out);
        return tensor(out, dims, `${name}: ${r.key}`);
      },
      float64: () => {
        if (!READABLE_DTYPES.includes(r.dtype)) {
          fail(`dtype ${r.dtype} cannot be read as float64 (readable: ${READABLE_DTYPES.join(', ')})`, r.key);
        }
        const count = (r.end - r.begin) / DTYPE_SIZES[r.dtype];
        const out = new Float64Array(count);
        const at = dataStart + r.begin;
        if (r.dtype === 'F64') {
          for (let i = 0; i < count; i++) out[i] = dv.getFloat64(at + 8 * i, true);
        } else {
          // float32 → float64 is exact, so widen the float32 decoding.
          const f = new Float32Array(count);
          decodeInto(r.dtype, dv, at, f);
          for (let i = 0; i < count; i++) out[i] = f[i];
        }
        return out;
      },
    });
  }
  return { tensors, metadata: { ...metadata } };
}

/** Orders strings by Unicode code point, i.e. by their UTF-8 bytes, as Rust's String ordering. */
function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; ) {
    const ca = a.codePointAt(i) ?? 0;
    const cb = b.codePointAt(i) ?? 0;
    if (ca !== cb) return ca - cb;
    i += ca > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/**
 * Serialises tensors as the reference implementation does: a `Tensor` (Float32Array) is written as
 * F32, a `Float64Tensor` (Float64Array) as F64. Tensors are ordered by dtype, larger first (the
 * reference's descending dtype order puts F64 before F32, so every F64 tensor stays 8-byte aligned),
 * then by name; compact JSON with `__metadata__` first (its keys sorted, for reproducible bytes),
 * then spaces so the data starts 8-byte aligned. `metadata` omitted → no `__metadata__` key.
 */
export function writeSafetensors(tensors: Record<string, Tensor | Float64Tensor>, metadata?: Record<string, string>): Uint8Array {
  const isF64 = (t: Tensor | Float64Tensor): t is Float64Tensor => t.data instanceof Float64Array;
  const names = Object.keys(tensors).sort((a, b) => {
    const da = isF64(tensors[a]) ? 0 : 1;
    const db = isF64(tensors[b]) ? 0 : 1;
    return da - db || compareCodePoints(a, b);
  });
  const parts: string[] = [];
  if (metadata !== undefined) {
    const entries = Object.keys(metadata)
      .sort(compareCodePoints)
      .map((k) => {
        const v: unknown = metadata[k];
        if (typeof v !== 'string') {
          throw new TypeError(`writeSafetensors: __metadata__ value for "${k}" must be a string, got ${typeof v}`);
        }
        return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
      });
    parts.push(`"${METADATA_KEY}":{${entries.join(',')}}`);
  }
  let offset = 0;
  for (const k of names) {
    if (k === METADATA_KEY) throw new TypeError(`writeSafetensors: "${METADATA_KEY}" cannot be a tensor name`);
    const t = tensors[k];
    const f64 = isF64(t);
    if (!(f64 || t.data instanceof Float32Array)) {
      throw new TypeError(`writeSafetensors: tensor "${k}" must hold a Float32Array or a Float64Array`);
    }
    let count = 1;
    for (const d of t.dims) {
      if (!Number.isSafeInteger(d) || d < 0) throw new TypeError(`writeSafetensors: tensor "${k}" has invalid dims [${t.dims.join(', ')}]`);
      count *= d;
    }
    if (count !== t.data.length) {
      throw new TypeError(`writeSafetensors: tensor "${k}" has ${t.data.length} elements but dims [${t.dims.join(', ')}] need ${count}`);
    }
    const end = offset + (f64 ? 8 : 4) * t.data.length;
    parts.push(`${JSON.stringify(k)}:{"dtype":"${f64 ? 'F64' : 'F32'}","shape":[${t.dims.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const headerLen = json.length + ((8 - (json.length % 8)) % 8);
  if (headerLen > MAX_HEADER_BYTES) {
    throw new RangeError(`writeSafetensors: header of ${headerLen} bytes exceeds ${MAX_HEADER_BYTES}`);
  }
  const out = new Uint8Array(8 + headerLen + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, headerLen, true); // high word stays 0
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const k of names) {
    const t = tensors[k];
    if (isF64(t)) {
      const d = t.data;
      for (let i = 0; i < d.length; i++) dv.setFloat64(pos + 8 * i, d[i], true);
      pos += 8 * d.length;
    } else {
      const d = t.data;
      const bits = new Uint32Array(d.buffer, d.byteOffset, d.length);
      for (let i = 0; i < bits.length; i++) dv.setUint32(pos + 4 * i, bits[i], true);
      pos += 4 * d.length;
    }
  }
  return out;
}
