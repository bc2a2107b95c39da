/**
 * The restricted pickle interpreter behind `readTorchTensorDict` (torchPt.ts): it reads the
 * `data.pkl` of a `torch.save` archive without ever executing it. Unpickling is code execution in
 * Python (GLOBAL + REDUCE call any importable function), so only a whitelist of opcodes and
 * globals is accepted, REDUCE runs only the two allowed callables, and every value is inert data.
 * Anything else raises `UnsafePickleError` naming the opcode or global and its byte offset.
 * Hand-written: no npm pickle reader offers a refusing subset (they evaluate or ignore globals).
 */
import type { Tensor } from '#shared/sampler';


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

export const STORAGE_TYPES: Readonly<Record<string, TorchDtype>> = {
  'torch.FloatStorage': 'float32',
  'torch.HalfStorage': 'float16',
  'torch.DoubleStorage': 'float64',
  'torch.BFloat16Storage': 'bfloat16',
};
const REBUILD_TENSOR_V2 = 'torch._utils._rebuild_tensor_v2';
const ORDERED_DICT = 'collections.OrderedDict';
const ALLOWED_GLOBALS: readonly string[] = [REBUILD_TENSOR_V2, ORDERED_DICT, ...Object.keys(STORAGE_TYPES)];

// ---------------------------------------------------------------------------------------------
// Pickle values: inert data only.

interface PyTuple { readonly kind: 'tuple'; readonly items: readonly PyValue[] }
interface PyList { readonly kind: 'list'; readonly items: PyValue[] }
interface PyDict { readonly kind: 'dict'; readonly map: Map<string | number, PyValue> }
interface PyFloat { readonly kind: 'float'; readonly value: number }
interface PyGlobal { readonly kind: 'global'; readonly qualified: string }
export interface PyStorage { readonly kind: 'storage'; readonly key: string; readonly dtype: TorchDtype; readonly data: Float32Array }
export interface PyTensor { readonly kind: 'tensor'; readonly value: TorchTensor }
/** Python ints are plain numbers (safe integers only); floats are wrapped so int/float stay distinct. */
export type PyValue = null | boolean | number | string | PyTuple | PyList | PyDict | PyFloat | PyGlobal | PyStorage | PyTensor;

export function describe(v: PyValue): string {
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
// The restricted unpickler.

export interface UnpickleContext {
  /** e.g. `stats.pt: archive/data.pkl`, prefixed to every message. */
  readonly where: string;
  /** Resolves a persistent id (a storage tuple) to a storage; called for BINPERSID. */
  persistentLoad(pid: PyValue, offset: number): PyStorage;
  /** Budget of elements still allowed to be materialised, shared across tensors. */
  elementsLeft: number;
  /** Builds a tensor for REDUCE on `torch._utils._rebuild_tensor_v2` (the archive knows the storages). */
  rebuildTensor(args: readonly PyValue[], fail: (m: string) => never): PyTensor;
}

export function unpickle(pkl: Uint8Array, ctx: UnpickleContext): PyValue {
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
          stack.push(ctx.rebuildTensor(args.items, fail));
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

