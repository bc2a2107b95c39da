/**
 * NumPy .npy read/write (format versions 1.0, 2.0 and 3.0), to and from the project's float32
 * `Tensor`.
 *
 * Why hand-written: the npm candidates do not fit. `npyjs` (1.2) loads asynchronously, pulls in
 * `cross-fetch`, parses the header with regular expressions and reports fortran order instead of
 * refusing it, and has no typed errors for truncated or hostile files; `numpy-parser` has no
 * float16 and no writer. The format is small (magic, version, header length, a Python-literal
 * dict, raw data), so a strict reader with clear errors is less code than adapting either.
 *
 * Spec: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 */
import { float16BitsToFloat32Bits } from './fp16.ts';
import { HeaderParser } from './headerParser.ts';
import type { Tensor } from '#shared/sampler';
import { formatDims, tensor } from '#shared/sampler';

/** Thrown for any .npy file this module cannot or will not read; the message names the file. */
export class NpyFormatError extends Error {
  override readonly name = 'NpyFormatError';
  /** The file or tensor name given to the reader. */
  readonly file: string;
  constructor(file: string, message: string) {
    super(`${file}: ${message}`);
    this.file = file;
  }
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
/** numpy's own default `max_header_size` for np.load; far above any legitimate header we read. */
const MAX_HEADER_BYTES = 10_000;
const MAX_NESTING = 16;

interface DtypeReader {
  readonly itemSize: number;
  /** Reads element i of the data (little-endian) into out (a float32 view / its bit view). */
  read(dv: DataView, offset: number, n: number, out: Float32Array, outBits: Uint32Array): void;
}

const READERS: Readonly<Record<string, DtypeReader>> = {
  '<f4': {
    itemSize: 4,
    read: (dv, o, n, _out, bits) => {
      // Bits, not values, so NaN payloads survive the copy.
      for (let i = 0; i < n; i++) bits[i] = dv.getUint32(o + 4 * i, true);
    },
  },
  '<f2': {
    itemSize: 2,
    read: (dv, o, n, _out, bits) => {
      for (let i = 0; i < n; i++) bits[i] = float16BitsToFloat32Bits(dv.getUint16(o + 2 * i, true));
    },
  },
  '<f8': {
    itemSize: 8,
    read: (dv, o, n, out) => {
      for (let i = 0; i < n; i++) out[i] = dv.getFloat64(o + 8 * i, true); // rounds to nearest float32
    },
  },
  '|u1': {
    itemSize: 1,
    read: (dv, o, n, out) => {
      for (let i = 0; i < n; i++) out[i] = dv.getUint8(o + i);
    },
  },
  '|i1': {
    itemSize: 1,
    read: (dv, o, n, out) => {
      for (let i = 0; i < n; i++) out[i] = dv.getInt8(o + i);
    },
  },
  '|b1': {
    itemSize: 1,
    read: (dv, o, n, out) => {
      for (let i = 0; i < n; i++) out[i] = dv.getUint8(o + i) === 0 ? 0 : 1;
    },
  },
  '<i4': {
    itemSize: 4,
    read: (dv, o, n, out) => {
      for (let i = 0; i < n; i++) out[i] = dv.getInt32(o + 4 * i, true);
    },
  },
  '<i8': {
    itemSize: 8,
    read: (dv, o, n, out) => {
      // hi·2^32 + lo is exact in float64 up to 2^53, then rounds to float32 like numpy's astype.
      for (let i = 0; i < n; i++) {
        out[i] = dv.getInt32(o + 8 * i + 4, true) * 4294967296 + dv.getUint32(o + 8 * i, true);
      }
    },
  },
};

const SUPPORTED = Object.keys(READERS).join(', ');

// ---------------------------------------------------------------------------------------------
// A parser for the Python-literal subset numpy writes in the header (dict, tuple, list, str,
// int, True/False/None). Anything else is an error: the header is never evaluated.

type PyValue = string | number | boolean | null | PyTuple | PyValue[] | Map<string, PyValue>;
interface PyTuple {
  readonly tuple: PyValue[];
}

function isTuple(v: PyValue): v is PyTuple {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Map);
}

class PyLiteralParser extends HeaderParser<PyValue> {
  parseAll(): PyValue {
    return this.only((offset) => `unexpected text at header offset ${offset}`);
  }

  protected override ws(): void {
    while (this.pos < this.text.length && /\s/.test(this.text[this.pos])) this.pos++;
  }

  protected override value(depth: number): PyValue {
    if (depth > MAX_NESTING) this.fail('header nests too deeply');
    this.ws();
    const c = this.text[this.pos];
    if (c === '{') return this.dict(depth);
    if (c === '(' || c === '[') return this.sequence(depth, c);
    if (c === "'" || c === '"') return this.str(c);
    const word = /^(True|False|None|-?\d+L?)/.exec(this.text.slice(this.pos, this.pos + 32));
    if (!word) this.fail(`unexpected ${c === undefined ? 'end of header' : `'${c}'`} at header offset ${this.pos}`);
    this.pos += word[0].length;
    if (word[0] === 'True') return true;
    if (word[0] === 'False') return false;
    if (word[0] === 'None') return null;
    const n = Number(word[0].replace('L', '')); // 'L': Python 2 longs in old headers
    if (!Number.isSafeInteger(n)) this.fail(`integer ${word[0]} in header is too large`);
    return n;
  }

  private str(quote: string): string {
    let out = '';
    this.pos++;
    while (this.pos < this.text.length) {
      const c = this.text[this.pos++];
      if (c === quote) return out;
      if (c === '\\') {
        const e = this.text[this.pos++];
        if (e !== '\\' && e !== "'" && e !== '"') this.fail('unsupported escape in header string');
        out += e;
      } else {
        out += c;
      }
    }
    return this.fail('unterminated string in header');
  }

  private sequence(depth: number, open: string): PyValue {
    const close = open === '(' ? ')' : ']';
    this.pos++;
    const items: PyValue[] = [];
    let trailingComma = false;
    for (;;) {
      this.ws();
      if (this.text[this.pos] === close) {
        this.pos++;
        break;
      }
      items.push(this.value(depth + 1));
      this.ws();
      trailingComma = false;
      if (this.text[this.pos] === ',') {
        this.pos++;
        trailingComma = true;
      } else if (this.text[this.pos] !== close) {
        this.fail(`expected ',' or '${close}' at header offset ${this.pos}`);
      }
    }
    if (open === '[') return items;
    // Python: "(x)" is just x; only "()" and "(x,)" / "(x, y)" are tuples.
    if (items.length === 1 && !trailingComma) return items[0];
    return { tuple: items };
  }

  private dict(depth: number): Map<string, PyValue> {
    this.pos++;
    const out = new Map<string, PyValue>();
    for (;;) {
      this.ws();
      if (this.text[this.pos] === '}') {
        this.pos++;
        return out;
      }
      const key = this.value(depth + 1);
      if (typeof key !== 'string') this.fail('header dict keys must be strings');
      if (out.has(key)) this.fail(`duplicate key '${key}' in header`);
      this.ws();
      if (this.text[this.pos] !== ':') this.fail(`expected ':' after '${key}' in header`);
      this.pos++;
      out.set(key, this.value(depth + 1));
      this.ws();
      if (this.text[this.pos] === ',') this.pos++;
      else if (this.text[this.pos] !== '}') this.fail(`expected ',' or '}' at header offset ${this.pos}`);
    }
  }
}

function latin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

/**
 * Reads a .npy file into a float32 tensor. Supported dtypes: '<f4', '<f2', '<f8', '|u1', '|i1',
 * '|b1', '<i4', '<i8' (all converted to float32; int64 beyond 2^24 loses precision, as
 * numpy's astype(float32) does). Refused with NpyFormatError: bad magic, unknown version,
 * oversized or malformed header, fortran_order=True, big-endian or object/structured dtypes,
 * truncated data and trailing bytes. `dtype` is the descriptor as stored in the file.
 */
export function readNpy(bytes: Uint8Array, name: string): { tensor: Tensor; dtype: string } {
  const fail: (msg: string) => never = (msg) => {
    throw new NpyFormatError(name, msg);
  };
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    fail('not a .npy file (missing the "\\x93NUMPY" magic)');
  }
  const major = bytes[6];
  const minor = bytes[7];
  if (minor !== 0 || major < 1 || major > 3) {
    fail(`unsupported .npy format version ${major}.${minor} (supported: 1.0, 2.0, 3.0)`);
  }
  let headerStart: number;
  let headerLen: number;
  if (major === 1) {
    headerStart = 10;
    headerLen = dv.getUint16(8, true);
  } else {
    if (bytes.length < 12) fail('file ends inside the header length');
    headerStart = 12;
    headerLen = dv.getUint32(8, true);
  }
  if (headerLen > MAX_HEADER_BYTES) {
    fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) {
    fail(`header length ${headerLen} runs past the end of the file (${bytes.length} bytes)`);
  }
  const headerBytes = bytes.subarray(headerStart, dataStart);
  let text: string;
  if (major === 3) {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      return fail('header is not valid UTF-8');
    }
  } else {
    text = latin1(headerBytes);
  }

  const header = new PyLiteralParser(text, (m) => fail(`malformed header: ${m}`)).parseAll();
  if (!(header instanceof Map)) return fail('header is not a dict');
  const keys = [...header.keys()].sort();
  if (keys.join(',') !== 'descr,fortran_order,shape') {
    fail(`header keys must be exactly 'descr', 'fortran_order', 'shape'; got ${keys.map((k) => `'${k}'`).join(', ')}`);
  }
  const descr = header.get('descr');
  const fortran = header.get('fortran_order');
  const shape = header.get('shape');

  if (typeof descr !== 'string') {
    return fail('structured (record) dtypes are not supported; save a plain float array');
  }
  if (typeof fortran !== 'boolean') return fail("'fortran_order' must be True or False");
  if (fortran) {
    fail('fortran_order=True is not supported; save with np.ascontiguousarray(a) (C order)');
  }
  if (shape === undefined || !isTuple(shape)) return fail("'shape' must be a tuple of integers");
  const dims: number[] = [];
  for (const d of shape.tuple) {
    if (typeof d !== 'number' || d < 0) return fail("'shape' must be a tuple of non-negative integers");
    dims.push(d);
  }

  const reader = READERS[descr];
  if (reader === undefined) {
    if (descr.startsWith('>')) {
      fail(`big-endian dtype '${descr}' is not supported; save with a.astype('<${descr.slice(1)}')`);
    }
    if (/^[|<>=]?O\d*$/.test(descr)) fail(`object arrays ('${descr}') are refused: they need pickle`);
    fail(`unsupported dtype '${descr}' (supported: ${SUPPORTED})`);
  }

  let count = 1;
  for (const d of dims) count *= d; // float64: exact while it matters (checked against bytes below)
  const available = bytes.length - dataStart;
  const needed = count * reader.itemSize;
  if (needed > available) {
    fail(`truncated data: shape ${formatDims(dims)} of '${descr}' needs ${needed} bytes, file has ${available}`);
  }
  if (needed < available) {
    fail(`${available - needed} unexpected bytes after the data of shape ${formatDims(dims)} '${descr}'`);
  }
  const out = new Float32Array(count);
  reader.read(dv, dataStart, count, out, new Uint32Array(out.buffer));
  return { tensor: tensor(out, dims, name), dtype: descr };
}

function pyShape(dims: readonly number[]): string {
  if (dims.length === 1) return `(${dims[0]},)`;
  return `(${dims.join(', ')})`;
}

/**
 * Writes a tensor as a .npy file exactly as `np.save` does for a C-ordered float32 array:
 * descr '<f4', version 1.0 (2.0 only if the header would not fit), the header dict in numpy's
 * key order with its spare "growth" spaces, padded with spaces and a final '\n' so the data
 * starts on a 64-byte boundary.
 */
export function writeNpy(t: Tensor): Uint8Array {
  let dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${pyShape(t.dims)}, }`;
  // numpy ≥ 1.24 leaves room to grow the first axis in place: 21 − len(repr(shape[0])) spaces.
  if (t.dims.length > 0) dict += ' '.repeat(Math.max(0, 21 - String(t.dims[0]).length));
  let prefix = 10;
  let pad = 64 - ((prefix + dict.length + 1) % 64);
  let major = 1;
  if (dict.length + 1 + pad > 0xffff) {
    major = 2;
    prefix = 12;
    pad = 64 - ((prefix + dict.length + 1) % 64);
  }
  const headerLen = dict.length + pad + 1;
  const dataStart = prefix + headerLen;
  const out = new Uint8Array(dataStart + 4 * t.data.length);
  const dv = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[6] = major;
  out[7] = 0;
  if (major === 1) dv.setUint16(8, headerLen, true);
  else dv.setUint32(8, headerLen, true);
  for (let i = 0; i < dict.length; i++) out[prefix + i] = dict.charCodeAt(i); // ASCII only
  out.fill(0x20, prefix + dict.length, dataStart - 1);
  out[dataStart - 1] = 0x0a;
  const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
  for (let i = 0; i < bits.length; i++) dv.setUint32(dataStart + 4 * i, bits[i], true);
  return out;
}
