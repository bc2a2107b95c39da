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
import type { Tensor } from '#shared/sampler';
import { openZip, ZipFormatError } from './zip.ts';
import type { ZipArchive } from './zip.ts';

/** The file is not a readable torch.save archive (not a zip, missing data.pkl, truncated, bad storage key, ...). */
export class TorchFormatError extends Error {
  override readonly name = 'TorchFormatError';
}

/** The pickle asks for something outside the allowed subset; nothing was executed. */
export class UnsafePickleError extends Error {
  override readonly name = 'UnsafePickleError';
  /** Byte offset of the offending opcode inside data.pkl. */
  readonly offset: number;
  /** The refused global (`module.name`) or opcode (`NAME (0xNN)`). */
  readonly offending: string;
  constructor(message: string, offset: number, offending: string) {
    super(message);
    this.offset = offset;
    this.offending = offending;
  }
}

/** Storage element types we can convert to float32. */
export type TorchDtype = 'float32' | 'float16' | 'bfloat16' | 'float64';

export interface TorchTensor {
  readonly tensor: Tensor;
  /** The dtype the file stored (values are converted to float32), or `float64`/`int64` for a plain Python number. */
  readonly dtype: string;
}

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

const STORAGE_TYPES: Readonly<Record<string, TorchDtype>> = {
  'torch.FloatStorage': 'float32',
  'torch.HalfStorage': 'float16',
  'torch.DoubleStorage': 'float64',
  'torch.BFloat16Storage': 'bfloat16',
};
const REBUILD_TENSOR_V2 = 'torch._utils._rebuild_tensor_v2';
const ORDERED_DICT = 'collections.OrderedDict';
const ALLOWED_GLOBALS: readonly string[] = [REBUILD_TENSOR_V2, ORDERED_DICT, ...Object.keys(STORAGE_TYPES)];

const ELEMENT_BYTES: Readonly<Record<TorchDtype, number>> = { float32: 4, float16: 2, bfloat16: 2, float64: 8 };

// ---------------------------------------------------------------------------------------------
// Pickle values: inert data only.

interface PyTuple { readonly kind: 'tuple'; readonly items: readonly PyValue[] }
interface PyList { readonly kind: 'list'; readonly items: PyValue[] }
interface PyDict { readonly kind: 'dict'; readonly map: Map<string | number, PyValue> }
interface PyFloat { readonly kind: 'float'; readonly value: number }
interface PyGlobal { readonly kind: 'global'; readonly qualified: string }
interface PyStorage { readonly kind: 'storage'; readonly key: string; readonly dtype: TorchDtype; readonly data: Float32Array }
interface PyTensor { readonly kind: 'tensor'; readonly value: TorchTensor }
/** Python ints are plain numbers (safe integers only); floats are wrapped so int/float stay distinct. */
type PyValue = null | boolean | number | string | PyTuple | PyList | PyDict | PyFloat | PyGlobal | PyStorage | PyTensor;

function describe(v: PyValue): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number') return `int ${v}`;
  if (typeof v === 'string') return 'str';
  return v.kind === 'global' ? `global ${v.qualified}` : v.kind;
}

/** Standard pickle opcode names, only so that refusals can name what they refused. */
const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x28: 'MARK', 0x2e: 'STOP', 0x30: 'POP', 0x31: 'POP_MARK', 0x32: 'DUP', 0x46: 'FLOAT', 0x49: 'INT',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4c: 'LONG', 0x4d: 'BININT2', 0x4e: 'NONE', 0x50: 'PERSID',
  0x51: 'BINPERSID', 0x52: 'REDUCE', 0x53: 'STRING', 0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE', 0x58: 'BINUNICODE', 0x61: 'APPEND', 0x62: 'BUILD', 0x63: 'GLOBAL', 0x64: 'DICT',
  0x7d: 'EMPTY_DICT', 0x65: 'APPENDS', 0x67: 'GET', 0x68: 'BINGET', 0x69: 'INST', 0x6a: 'LONG_BINGET',
  0x6c: 'LIST', 0x5d: 'EMPTY_LIST', 0x6f: 'OBJ', 0x70: 'PUT', 0x71: 'BINPUT', 0x72: 'LONG_BINPUT',
  0x73: 'SETITEM', 0x74: 'TUPLE', 0x29: 'EMPTY_TUPLE', 0x75: 'SETITEMS', 0x47: 'BINFLOAT', 0x80: 'PROTO',
  0x81: 'NEWOBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4', 0x85: 'TUPLE1', 0x86: 'TUPLE2', 0x87: 'TUPLE3',
  0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x8a: 'LONG1', 0x8b: 'LONG4', 0x42: 'BINBYTES', 0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8', 0x8e: 'BINBYTES8', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS',
  0x91: 'FROZENSET', 0x92: 'NEWOBJ_EX', 0x93: 'STACK_GLOBAL', 0x94: 'MEMOIZE', 0x95: 'FRAME',
  0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

function opcodeLabel(op: number): string {
  return `${OPCODE_NAMES[op] ?? 'unknown opcode'} (0x${op.toString(16).padStart(2, '0')})`;
}

const ALLOWED_OPCODES_TEXT =
  'PROTO FRAME STOP MARK EMPTY_DICT EMPTY_LIST EMPTY_TUPLE TUPLE TUPLE1-3 BINUNICODE SHORT_BINUNICODE ' +
  'BININT BININT1 BININT2 LONG1 BINFLOAT NONE NEWTRUE NEWFALSE GLOBAL STACK_GLOBAL BINPERSID REDUCE ' +
  'SETITEM SETITEMS APPEND APPENDS BINPUT LONG_BINPUT BINGET LONG_BINGET MEMOIZE';

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

// ---------------------------------------------------------------------------------------------
// The restricted unpickler.

interface UnpickleContext {
  /** e.g. `stats.pt: archive/data.pkl`, prefixed to every message. */
  readonly where: string;
  /** Resolves a persistent id (a storage tuple) to a storage; called for BINPERSID. */
  persistentLoad(pid: PyValue, offset: number): PyStorage;
  /** Budget of elements still allowed to be materialised, shared across tensors. */
  elementsLeft: number;
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
function unpickle(pkl: Uint8Array, ctx: UnpickleContext): PyValue {
  const dv = new DataView(pkl.buffer, pkl.byteOffset, pkl.byteLength);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;
  let opAt = 0;

  const fail = (message: string): never => {
    throw new TorchFormatError(`${ctx.where} byte ${opAt}: ${message}`);
  };
  const need = (n: number): number => {
    if (pos + n > pkl.byteLength) fail(`truncated pickle (need ${n} more bytes, ${pkl.byteLength - pos} left)`);
    const at = pos;
    pos += n;
    return at;
  };
  const floor = (): number => (marks.length > 0 ? marks[marks.length - 1] : 0);
  const pop = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack.pop() as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length <= floor()) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) return fail('no MARK on the stack');
    return stack.splice(m);
  };
  const readString = (n: number): string => {
    const at = need(n);
    try {
      return utf8.decode(pkl.subarray(at, at + n));
    } catch {
      return fail('string is not valid UTF-8');
    }
  };
  const readLine = (): string => {
    // GLOBAL's module and name: short printable-ASCII lines.
    const start = pos;
    while (pos < pkl.byteLength && pkl[pos] !== 0x0a) {
      if (pkl[pos] < 0x20 || pkl[pos] > 0x7e || pos - start > 256) fail('malformed GLOBAL name');
      pos++;
    }
    if (pos >= pkl.byteLength) fail('truncated GLOBAL name');
    const line = String.fromCharCode(...pkl.subarray(start, pos));
    pos++;
    return line;
  };
  const resolveGlobal = (module: string, name: string): PyGlobal => {
    const qualified = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.includes(qualified)) {
      throw new UnsafePickleError(
        `${ctx.where} byte ${opAt}: global ${qualified} is not allowed; refusing the file, nothing was executed ` +
          `(allowed globals: ${ALLOWED_GLOBALS.join(', ')})`,
        opAt,
        qualified,
      );
    }
    return { kind: 'global', qualified };
  };
  const dictKey = (k: PyValue): string | number => {
    if (typeof k === 'string' || typeof k === 'number') return k;
    return fail(`dict keys must be str or int, got ${describe(k)}`);
  };
  const targetDict = (): PyDict => {
    const d = top();
    if (typeof d !== 'object' || d === null || d.kind !== 'dict') return fail(`SETITEM(S) target is ${describe(d)}, not a dict`);
    return d;
  };
  const targetList = (): PyList => {
    const l = top();
    if (typeof l !== 'object' || l === null || l.kind !== 'list') return fail(`APPEND(S) target is ${describe(l)}, not a list`);
    return l;
  };

  while (true) {
    opAt = pos;
    const op = pkl[need(1)];
    switch (op) {
      case 0x80: { // PROTO
        const v = pkl[need(1)];
        if (v < 2 || v > 5) fail(`pickle protocol ${v} is not supported (2 to 5)`);
        break;
      }
      case 0x95: { // FRAME: framing only, the opcodes inside are read as usual
        const n = dv.getBigUint64(need(8), true);
        if (n > BigInt(pkl.byteLength - pos)) fail(`FRAME of ${n} bytes runs past the end of the pickle`);
        break;
      }
      case 0x2e: // STOP
        if (marks.length !== 0 || stack.length !== 1) fail(`STOP with ${stack.length} values and ${marks.length} marks on the stack`);
        if (pos !== pkl.byteLength) fail(`${pkl.byteLength - pos} trailing bytes after STOP`);
        return stack[0];
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push({ kind: 'dict', map: new Map() });
        break;
      case 0x5d: // EMPTY_LIST
        stack.push({ kind: 'list', items: [] });
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push({ kind: 'tuple', items: [] });
        break;
      case 0x74: // TUPLE
        stack.push({ kind: 'tuple', items: popMark() });
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: { // TUPLE3
        const items: PyValue[] = [];
        for (let i = op - 0x84; i > 0; i--) items.unshift(pop());
        stack.push({ kind: 'tuple', items });
        break;
      }
      case 0x58: // BINUNICODE
        stack.push(readString(dv.getUint32(need(4), true)));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(readString(pkl[need(1)]));
        break;
      case 0x4b: // BININT1
        stack.push(pkl[need(1)]);
        break;
      case 0x4d: // BININT2
        stack.push(dv.getUint16(need(2), true));
        break;
      case 0x4a: // BININT
        stack.push(dv.getInt32(need(4), true));
        break;
      case 0x8a: { // LONG1: little-endian two's complement of n bytes
        const n = pkl[need(1)];
        if (n > 8) fail(`LONG1 of ${n} bytes is too large`);
        const at = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(pkl[at + i]);
        if (n > 0 && pkl[at + n - 1] >= 0x80) v -= 1n << BigInt(8 * n);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail(`integer ${v} is out of range`);
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian double)
        stack.push({ kind: 'float', value: dv.getFloat64(need(8), false) });
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x63: { // GLOBAL
        const module = readLine();
        const name = readLine();
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') return fail('STACK_GLOBAL needs two strings');
        stack.push(resolveGlobal(module, name));
        break;
      }
      case 0x51: // BINPERSID
        stack.push(ctx.persistentLoad(pop(), opAt));
        break;
      case 0x52: { // REDUCE: only the allow-listed callables, implemented here as data builders
        const args = pop();
        const callable = pop();
        if (typeof callable !== 'object' || callable === null || callable.kind !== 'global') {
          throw new UnsafePickleError(`${ctx.where} byte ${opAt}: REDUCE on ${describe(callable)} is not allowed`, opAt, `REDUCE on ${describe(callable)}`);
        }
        if (typeof args !== 'object' || args === null || args.kind !== 'tuple') return fail(`REDUCE arguments must be a tuple, got ${describe(args)}`);
        if (callable.qualified === ORDERED_DICT) {
          if (args.items.length !== 0) fail('only OrderedDict() with no arguments is supported');
          stack.push({ kind: 'dict', map: new Map() });
        } else if (callable.qualified === REBUILD_TENSOR_V2) {
          stack.push(rebuildTensor(args.items, ctx, fail));
        } else {
          // Storage types are allowed only inside persistent ids, never called.
          throw new UnsafePickleError(
            `${ctx.where} byte ${opAt}: REDUCE on ${callable.qualified} is not allowed (only ${REBUILD_TENSOR_V2} and ${ORDERED_DICT} may be called)`,
            opAt,
            callable.qualified,
          );
        }
        break;
      }
      case 0x73: { // SETITEM
        const value = pop();
        const key = dictKey(pop());
        targetDict().map.set(key, value);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2 !== 0) fail('SETITEMS with an odd number of items');
        const d = targetDict();
        for (let i = 0; i < items.length; i += 2) d.map.set(dictKey(items[i]), items[i + 1]);
        break;
      }
      case 0x61: { // APPEND
        const value = pop();
        targetList().items.push(value);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        targetList().items.push(...items);
        break;
      }
      case 0x71: // BINPUT
        memo.set(pkl[need(1)], top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(dv.getUint32(need(4), true), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const i = op === 0x68 ? pkl[need(1)] : dv.getUint32(need(4), true);
        if (!memo.has(i)) fail(`memo entry ${i} was never stored`);
        stack.push(memo.get(i) as PyValue);
        break;
      }
      default:
        throw new UnsafePickleError(
          `${ctx.where} byte ${opAt}: opcode ${opcodeLabel(op)} is not allowed; refusing the file, nothing was executed ` +
            `(allowed opcodes: ${ALLOWED_OPCODES_TEXT})`,
          opAt,
          opcodeLabel(op),
        );
    }
  }
}

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
