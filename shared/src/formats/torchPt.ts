/**
 * Reads the authors' dataset-statistics files — `torch.save` output of a dict of tensors — in
 * plain TypeScript, without Python and without ever evaluating the pickle.
 *
 * A `.pt` file is a ZIP archive: `<archive>/data.pkl` (a pickle describing the object, with
 * tensor storages referenced through persistent ids) and `<archive>/data/<key>` (the raw storage
 * bytes). Unpickling is code execution in Python (GLOBAL + REDUCE call any importable function),
 * so this module runs a *restricted* interpreter: a whitelist of opcodes, a whitelist of globals,
 * REDUCE only on the two allowed callables, and values built as inert data. Anything outside
 * that subset raises `UnsafePickleError` naming the opcode or global and its byte offset.
 * See docs/torch-import.md for the accepted subset and why the rest is refused.
 */
import { bfloat16BitsToFloat32Bits, float16BitsToFloat32Bits } from './fp16.ts';
import { tensor } from '#shared/sampler';
import { describe, STORAGE_TYPES, TorchFormatError, unpickle } from './torchPickle.ts';
import type { PyStorage, PyTensor, PyValue, TorchDtype, TorchTensor, UnpickleContext } from './torchPickle.ts';
import { openZip, ZipFormatError } from './zip.ts';
import type { ZipArchive } from './zip.ts';

export { TorchFormatError, UnsafePickleError } from './torchPickle.ts';
export type { TorchDtype, TorchTensor } from './torchPickle.ts';

export interface TorchStatistics {
  /** Every tensor (and plain Python number, as a 0-d tensor) of the top-level dict, in file order. */
  readonly tensors: Map<string, TorchTensor>;
  /** The keys of `tensors`, in the file's order. */
  readonly keys: string[];
  /** Top-level keys whose values are neither tensors nor numbers (strings, None, lists, ...), skipped. */
  readonly ignored: string[];
}

/** Largest tensor we will materialise (float32 elements, 512 MiB); statistics are far smaller. */
const MAX_ELEMENTS = 1 << 27;

const ELEMENT_BYTES: Readonly<Record<TorchDtype, number>> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };

// ---------------------------------------------------------------------------------------------
// Storage decoding and tensor rebuilding.

const hostLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function decodeStorage(bytes: Uint8Array, dtype: TorchDtype, littleEndian: boolean): Float32Array {
  const n = bytes.byteLength / ELEMENT_BYTES[dtype];
  if (dtype === 'float32' && littleEndian === hostLittleEndian) {
    // Copy the raw bits into a fresh aligned buffer, so float32 values stay bit-exact, NaNs included.
    // (Not bytes.slice().buffer: for a Node Buffer, slice() is a view of the whole shared pool.)
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    return new Float32Array(copy.buffer);
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  if (dtype === 'float32') {
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, littleEndian);
  } else if (dtype === 'float64') {
    for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, littleEndian);
  } else {
    // Half types widen exactly; writing float32 bits keeps NaN payloads too.
    const bits = new Uint32Array(out.buffer);
    const widen = dtype === 'float16' ? float16BitsToFloat32Bits : bfloat16BitsToFloat32Bits;
    for (let i = 0; i < n; i++) bits[i] = widen(dv.getUint16(2 * i, littleEndian));
  }
  return out;
}

/** Gathers the strided view (offset, size, stride) of `src` into a contiguous row-major array. */
function gather(src: Float32Array, offset: number, size: readonly number[], stride: readonly number[], count: number): Float32Array {
  const out = new Float32Array(count);
  if (count === 0) return out;
  const nd = size.length;
  let contiguous = true;
  for (let d = nd - 1, expect = 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expect) contiguous = false;
    expect *= size[d];
  }
  if (contiguous) {
    out.set(src.subarray(offset, offset + count));
    return out;
  }
  const index = new Array<number>(nd).fill(0);
  let pos = offset;
  for (let i = 0; i < count; i++) {
    out[i] = src[pos];
    for (let d = nd - 1; d >= 0; d--) {
      index[d]++;
      pos += stride[d];
      if (index[d] < size[d]) break;
      pos -= stride[d] * size[d];
      index[d] = 0;
    }
  }
  return out;
}

function asIntTuple(v: PyValue, what: string, fail: (m: string) => never): number[] {
  if (typeof v !== 'object' || v === null || v.kind !== 'tuple') return fail(`${what} must be a tuple of ints, got ${describe(v)}`);
  return v.items.map((x, i) => {
    if (typeof x !== 'number' || x < 0) return fail(`${what}[${i}] must be a non-negative int, got ${describe(x)}`);
    return x;
  });
}

/** `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])`. */
function rebuildTensor(args: readonly PyValue[], ctx: UnpickleContext, fail: (m: string) => never): PyTensor {
  if (args.length !== 6 && args.length !== 7) return fail(`_rebuild_tensor_v2 takes 6 or 7 arguments, got ${args.length}`);
  const [storage, offset, sizeV, strideV, requiresGrad, hooks, metadata] = args;
  if (typeof storage !== 'object' || storage === null || storage.kind !== 'storage') {
    return fail(`_rebuild_tensor_v2: first argument must be a storage, got ${describe(storage)}`);
  }
  if (typeof offset !== 'number' || offset < 0) return fail(`_rebuild_tensor_v2: storage_offset must be a non-negative int, got ${describe(offset)}`);
  const size = asIntTuple(sizeV, '_rebuild_tensor_v2: size', fail);
  const stride = asIntTuple(strideV, '_rebuild_tensor_v2: stride', fail);
  if (size.length !== stride.length) return fail(`_rebuild_tensor_v2: size has ${size.length} dims but stride has ${stride.length}`);
  if (typeof requiresGrad !== 'boolean') return fail(`_rebuild_tensor_v2: requires_grad must be a bool, got ${describe(requiresGrad)}`);
  if (typeof hooks !== 'object' || hooks === null || hooks.kind !== 'dict') return fail(`_rebuild_tensor_v2: backward_hooks must be a dict, got ${describe(hooks)}`);
  if (metadata !== undefined && metadata !== null && (typeof metadata !== 'object' || metadata.kind !== 'dict')) {
    return fail(`_rebuild_tensor_v2: metadata must be a dict or None, got ${describe(metadata)}`);
  }
  let count = 1;
  let last = offset; // index of the view's last element
  for (let d = 0; d < size.length; d++) {
    count *= size[d];
    last += (size[d] - 1) * stride[d];
  }
  if (count > ctx.elementsLeft) {
    return fail(`tensor of size [${size.join(', ')}] exceeds the ${MAX_ELEMENTS}-element limit for statistics files`);
  }
  const storageNumel = storage.data.length;
  if (count === 0 ? offset > storageNumel : !(Number.isSafeInteger(last) && last < storageNumel)) {
    return fail(
      `tensor view (offset ${offset}, size [${size.join(', ')}], stride [${stride.join(', ')}]) reaches outside ` +
        `storage ${storage.key} of ${storageNumel} elements`,
    );
  }
  ctx.elementsLeft -= count;
  const data = gather(storage.data, offset, size, stride, count);
  return { kind: 'tensor', value: { tensor: tensor(data, size, `${ctx.where} storage ${storage.key}`), dtype: storage.dtype } };
}

/** Runs the restricted interpreter over `pkl` and returns the top-level value. */

// ---------------------------------------------------------------------------------------------
// The archive.

function findArchivePrefix(zip: ZipArchive, name: string): string {
  const candidates = zip.entries.map((e) => /^([^/]+)\/data\.pkl$/.exec(e.name)?.[1]).filter((p) => p !== undefined);
  if (candidates.length === 0) {
    throw new TorchFormatError(`${name}: no <archive>/data.pkl entry; this zip is not a torch.save file`);
  }
  if (candidates.length > 1) {
    throw new TorchFormatError(`${name}: several data.pkl entries (${candidates.join(', ')}); expected exactly one`);
  }
  return candidates[0];
}

function readByteOrder(zip: ZipArchive, prefix: string, name: string): boolean {
  const entry = `${prefix}/byteorder`;
  if (!zip.has(entry)) return true; // PyTorch < 2.1 wrote no byteorder entry: little-endian
  const text = new TextDecoder().decode(zip.read(entry)).trim();
  if (text === 'little') return true;
  if (text === 'big') return false;
  throw new TorchFormatError(`${name}: ${entry} says "${text.slice(0, 40)}"; expected "little" or "big"`);
}

/**
 * Reads the top-level dict of a `torch.save` file as tensors (converted to float32), in the
 * file's key order. Plain Python numbers become 0-d tensors (dtype `float64` or `int64`); other
 * non-tensor values are listed in `ignored`. Throws TorchFormatError or UnsafePickleError.
 */
export function readTorchTensorDict(bytes: Uint8Array, name: string): { tensors: Map<string, TorchTensor>; ignored: string[] } {
  if (bytes.byteLength >= 2 && bytes[0] === 0x80 && bytes[1] === 0x02) {
    throw new TorchFormatError(
      `${name}: this is a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current PyTorch (zip serialization)`,
    );
  }
  let zip: ZipArchive;
  try {
    zip = openZip(bytes, name);
  } catch (e) {
    if (e instanceof ZipFormatError) throw new TorchFormatError(e.message, { cause: e });
    throw e;
  }
  const readEntry = (entry: string): Uint8Array => {
    try {
      return zip.read(entry);
    } catch (e) {
      if (e instanceof ZipFormatError) throw new TorchFormatError(e.message, { cause: e });
      throw e;
    }
  };

  const prefix = findArchivePrefix(zip, name);
  const littleEndian = readByteOrder(zip, prefix, name);
  const pklName = `${prefix}/data.pkl`;
  const storages = new Map<string, PyStorage>();

  const ctx: UnpickleContext = {
    where: `${name}: ${pklName}`,
    elementsLeft: MAX_ELEMENTS,
    rebuildTensor(args, fail) {
      return rebuildTensor(args, ctx, fail);
    },
    persistentLoad(pid, offset) {
      const fail = (m: string): never => {
        throw new TorchFormatError(`${name}: ${pklName} byte ${offset}: ${m}`);
      };
      // ('storage', storage_type, key, location, numel); the location (e.g. 'cuda:0') is irrelevant on load.
      if (typeof pid !== 'object' || pid === null || pid.kind !== 'tuple' || pid.items.length !== 5 || pid.items[0] !== 'storage') {
        return fail(`persistent id must be ('storage', type, key, location, numel), got ${describe(pid)}`);
      }
      const [, type, key, location, numel] = pid.items;
      if (typeof type !== 'object' || type === null || type.kind !== 'global' || !(type.qualified in STORAGE_TYPES)) {
        return fail(`storage type must be one of ${Object.keys(STORAGE_TYPES).join(', ')}, got ${describe(type)}`);
      }
      if (typeof key !== 'string' || !/^\w{1,64}$/.test(key)) return fail(`bad storage key ${JSON.stringify(key)}`);
      if (typeof location !== 'string') return fail(`storage location must be a str, got ${describe(location)}`);
      if (typeof numel !== 'number' || numel < 0) return fail(`storage size must be a non-negative int, got ${describe(numel)}`);
      const dtype = STORAGE_TYPES[type.qualified];
      const cached = storages.get(key);
      if (cached !== undefined) {
        if (cached.dtype !== dtype || cached.data.length !== numel) {
          return fail(`storage ${key} is referenced as ${dtype}[${numel}] and as ${cached.dtype}[${cached.data.length}]`);
        }
        return cached;
      }
      const entry = `${prefix}/data/${key}`;
      if (!zip.has(entry)) return fail(`bad storage key ${key}: the archive has no ${entry}`);
      const raw = readEntry(entry);
      if (raw.byteLength !== numel * ELEMENT_BYTES[dtype]) {
        return fail(`${entry} holds ${raw.byteLength} bytes but ${dtype} storage of ${numel} elements needs ${numel * ELEMENT_BYTES[dtype]}`);
      }
      const storage: PyStorage = { kind: 'storage', key, dtype, data: decodeStorage(raw, dtype, littleEndian) };
      storages.set(key, storage);
      return storage;
    },
  };

  const root = unpickle(readEntry(pklName), ctx);
  if (typeof root !== 'object' || root === null || root.kind !== 'dict') {
    throw new TorchFormatError(`${name}: top-level object is ${describe(root)}; expected a dict of tensors`);
  }
  const tensors = new Map<string, TorchTensor>();
  const ignored: string[] = [];
  for (const [key, value] of root.map) {
    if (typeof key !== 'string') throw new TorchFormatError(`${name}: top-level key ${key} is not a str`);
    if (typeof value === 'number') {
      tensors.set(key, { tensor: tensor(Float32Array.of(value), [], key), dtype: 'int64' });
    } else if (typeof value === 'object' && value !== null && value.kind === 'float') {
      tensors.set(key, { tensor: tensor(Float32Array.of(value.value), [], key), dtype: 'float64' });
    } else if (typeof value === 'object' && value !== null && value.kind === 'tensor') {
      tensors.set(key, value.value);
    } else {
      ignored.push(key);
    }
  }
  return { tensors, ignored };
}

/**
 * Reads a dataset-statistics `.pt` file (e.g. `Expectation_X0`/`Tr_Cov_d`, or SVD's
 * `Expectation_x_0`/`trCov_d`): every tensor of its top-level dict, in the file's key order.
 */
export function readTorchStatistics(bytes: Uint8Array, name: string): TorchStatistics {
  const { tensors, ignored } = readTorchTensorDict(bytes, name);
  return { tensors, keys: [...tensors.keys()], ignored };
}