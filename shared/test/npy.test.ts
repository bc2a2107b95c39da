import { describe, expect, it } from 'vitest';
import { NpyFormatError, readNpy, writeNpy } from '../src/formats/npy.ts';
import { tensor } from '../src/sampler/tensor.ts';
import { thrown } from '../../test/helpers/thrown.ts';

// Files are built byte by byte from the format spec
// (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html), independently of
// the writer: magic "\x93NUMPY", version, little-endian header length, header text, data.

function ascii(s: string): number[] {
  return Array.from(s, (c) => c.charCodeAt(0));
}

const MAGIC = [0x93, ...ascii('NUMPY')];

/** Version 1.0 file: 2-byte header length. */
function npyV1(header: string, data: number[]): Uint8Array {
  return Uint8Array.from([...MAGIC, 1, 0, header.length & 0xff, header.length >> 8, ...ascii(header), ...data]);
}

/** Version 2.0/3.0 file: 4-byte header length. */
function npyV2(major: number, headerBytes: number[], data: number[]): Uint8Array {
  const n = headerBytes.length;
  return Uint8Array.from([...MAGIC, major, 0, n & 0xff, (n >> 8) & 0xff, 0, 0, ...headerBytes, ...data]);
}

/** Header padded with spaces and a final newline so magic + length + header is a multiple of 64. */
function padded(dict: string, prefix = 10): string {
  let total = prefix + dict.length + 1;
  total = Math.ceil(total / 64) * 64;
  return dict + ' '.repeat(total - prefix - dict.length - 1) + '\n';
}

function expectNpyError(bytes: Uint8Array, pattern: RegExp): void {
  const e = thrown(() => readNpy(bytes, 'noise.npy'), NpyFormatError);
  expect(e.file).toBe('noise.npy');
  expect(e.message).toMatch(/^noise\.npy: /);
  expect(e.message).toMatch(pattern);
}

// float32 little-endian byte patterns, by hand: 1.0 = 0x3f800000, 2.0 = 0x40000000, …
const F32 = {
  zero: [0, 0, 0, 0],
  one: [0, 0, 0x80, 0x3f],
  two: [0, 0, 0, 0x40],
  three: [0, 0, 0x40, 0x40],
  four: [0, 0, 0x80, 0x40],
  five: [0, 0, 0xa0, 0x40],
  oneAndHalf: [0, 0, 0xc0, 0x3f],
  minusOneAndHalf: [0, 0, 0xc0, 0xbf],
};

describe('writeNpy', () => {
  it('writes a (2, 3) float32 array byte for byte as np.save does', () => {
    const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    // 10 + 59 + 1 = 70 → padded to 128: 58 spaces, header length 118 = 0x76.
    const header = dict + ' '.repeat(58) + '\n';
    expect(header.length).toBe(118);
    const expected = npyV1(header, [...F32.zero, ...F32.one, ...F32.two, ...F32.three, ...F32.four, ...F32.minusOneAndHalf]);
    expect(expected.length).toBe(128 + 24);
    const got = writeNpy(tensor(Float32Array.of(0, 1, 2, 3, 4, -1.5), [2, 3]));
    expect(Buffer.from(got).toString('hex')).toBe(Buffer.from(expected).toString('hex'));
  });

  it('writes a 0-d array with shape ()', () => {
    const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
    const expected = npyV1(padded(dict), F32.oneAndHalf);
    expect(expected.length).toBe(132);
    expect(Array.from(writeNpy(tensor(Float32Array.of(1.5), []))).join()).toBe(Array.from(expected).join());
  });

  it("writes a 1-d shape as '(n,)'", () => {
    const out = writeNpy(tensor(new Float32Array(5), [5]));
    const text = new TextDecoder().decode(out.subarray(10, 10 + out[8]));
    expect(text.startsWith("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }")).toBe(true);
  });

  it("keeps numpy's spare growth spaces (21 − digits of shape[0]) before padding", () => {
    // A 16-d shape of ones: the dict is 101 characters. Without the 20 growth spaces the header
    // would fit in 128 bytes; with them it is 10 + 101 + 20 + 1 = 132 → 192 bytes, length 182.
    const dims = new Array<number>(16).fill(1);
    const out = writeNpy(tensor(Float32Array.of(7), dims));
    expect(out[8] + 256 * out[9]).toBe(182);
    expect(out.length).toBe(192 + 4);
    expect(out[191]).toBe(0x0a);
  });

  it('starts the data on a 64-byte boundary for any rank', () => {
    for (let rank = 0; rank <= 8; rank++) {
      const dims = Array.from({ length: rank }, (_, i) => i + 2);
      const n = dims.reduce((a, b) => a * b, 1);
      const out = writeNpy(tensor(new Float32Array(n), dims));
      const headerEnd = 10 + out[8] + 256 * out[9];
      expect(headerEnd % 64).toBe(0);
      expect(out[headerEnd - 1]).toBe(0x0a);
      expect(out.length - headerEnd).toBe(4 * n);
    }
  });
});

describe('readNpy', () => {
  it('reads the hand-built (2, 3) float32 file', () => {
    const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    const bytes = npyV1(padded(dict), [...F32.zero, ...F32.one, ...F32.two, ...F32.three, ...F32.four, ...F32.five]);
    const { tensor: t, dtype } = readNpy(bytes, 'a.npy');
    expect(dtype).toBe('<f4');
    expect(t.dims).toEqual([2, 3]);
    expect(Array.from(t.data)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('reads a 0-d array', () => {
    const dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (), }";
    const { tensor: t } = readNpy(npyV1(padded(dict), F32.oneAndHalf), 's.npy');
    expect(t.dims).toEqual([]);
    expect(Array.from(t.data)).toEqual([1.5]);
  });

  it('reads an empty array (a zero in the shape)', () => {
    const { tensor: t } = readNpy(npyV1(padded("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }"), []), 'e');
    expect(t.dims).toEqual([0, 3]);
    expect(t.data.length).toBe(0);
  });

  it('reads format 2.0 and 3.0 headers (4-byte length, any key order, unpadded)', () => {
    const dict = "{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}\n";
    for (const major of [2, 3]) {
      const { tensor: t } = readNpy(npyV2(major, ascii(dict), [...F32.one, ...F32.two]), 'v.npy');
      expect(Array.from(t.data)).toEqual([1, 2]);
    }
  });

  it('refuses a 3.0 header that is not valid UTF-8', () => {
    const bad = [...ascii("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"), 0xff, 0x0a];
    expectNpyError(npyV2(3, bad, F32.one), /UTF-8/);
  });

  it("converts '<f2' (float16) to float32", () => {
    const dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (4,), }";
    // 0x3c00 = 1, 0xc000 = -2, 0x7c00 = inf, 0x0001 = 2^-24
    const bytes = npyV1(padded(dict), [0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x01, 0x00]);
    const { tensor: t, dtype } = readNpy(bytes, 'h.npy');
    expect(dtype).toBe('<f2');
    expect(Array.from(t.data)).toEqual([1, -2, Infinity, 2 ** -24]);
  });

  it("converts '<f8' (float64) to float32 by rounding", () => {
    const dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
    // 1.0 = 0x3ff0000000000000; 0.1 = 0x3fb999999999999a
    const bytes = npyV1(padded(dict), [0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f]);
    const { tensor: t } = readNpy(bytes, 'd.npy');
    expect(t.data[0]).toBe(1);
    expect(t.data[1]).toBe(Math.fround(0.1));
  });

  it("converts '|u1', '<i4' and '<i8' integers", () => {
    const u1 = readNpy(npyV1(padded("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }"), [0, 7, 255]), 'u');
    expect(Array.from(u1.tensor.data)).toEqual([0, 7, 255]);
    const i4 = readNpy(npyV1(padded("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }"), [0xfb, 0xff, 0xff, 0xff, 0x10, 0x27, 0, 0]), 'i');
    expect(Array.from(i4.tensor.data)).toEqual([-5, 10000]);
    // -5 and 2^40 as little-endian int64
    const i8 = readNpy(
      npyV1(padded("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }"), [0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]),
      'l',
    );
    expect(Array.from(i8.tensor.data)).toEqual([-5, 2 ** 40]);
  });

  it('reads from a Node Buffer that is a slice of a larger pool', () => {
    const file = writeNpy(tensor(Float32Array.of(3, 4), [2]));
    const pool = Buffer.alloc(file.length + 13);
    pool.set(file, 13);
    const { tensor: t } = readNpy(pool.subarray(13), 'pooled.npy');
    expect(Array.from(t.data)).toEqual([3, 4]);
  });
});

describe('round trips', () => {
  it('keep dims and every float32 bit pattern (−0, ±inf, NaN payloads)', () => {
    const bits = Uint32Array.of(0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 0x00000001, 0x3eaaaaab, 0xc2f6e979);
    const src = new Float32Array(bits.buffer);
    for (const dims of [[8], [2, 4], [2, 2, 2], [1, 8, 1]]) {
      const back = readNpy(writeNpy(tensor(src, dims)), 'rt.npy').tensor;
      expect(back.dims).toEqual(dims);
      expect(Array.from(new Uint32Array(back.data.buffer))).toEqual(Array.from(bits));
    }
  });

  it('work for 0-d and empty tensors', () => {
    expect(Array.from(readNpy(writeNpy(tensor(Float32Array.of(-2.5), [])), 's').tensor.data)).toEqual([-2.5]);
    expect(readNpy(writeNpy(tensor(new Float32Array(0), [3, 0])), 'e').tensor.dims).toEqual([3, 0]);
  });
});

describe('rejections', () => {
  const f4 = (shape: string): string => `{'descr': '<f4', 'fortran_order': False, 'shape': ${shape}, }`;

  it('bad magic', () => {
    const bytes = npyV1(padded(f4('(1,)')), F32.one);
    bytes[1] = 0x4d; // "MUMPY"
    expectNpyError(bytes, /not a \.npy file/);
    expectNpyError(Uint8Array.of(1, 2, 3), /not a \.npy file/);
  });

  it('unknown format version', () => {
    const bytes = npyV1(padded(f4('(1,)')), F32.one);
    bytes[6] = 4;
    expectNpyError(bytes, /version 4\.0/);
  });

  it('fortran_order=True', () => {
    const dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }";
    expectNpyError(npyV1(padded(dict), new Array<number>(16).fill(0)), /fortran_order=True/);
  });

  it('big-endian dtypes', () => {
    const dict = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }";
    expectNpyError(npyV1(padded(dict), [0x3f, 0x80, 0, 0]), /big-endian dtype '>f4'/);
  });

  it('object dtypes', () => {
    const dict = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }";
    expectNpyError(npyV1(padded(dict), new Array<number>(8).fill(0)), /object arrays/);
  });

  it('structured dtypes', () => {
    const dict = "{'descr': [('a', '<f4'), ('b', '<i4')], 'fortran_order': False, 'shape': (1,), }";
    expectNpyError(npyV1(padded(dict), new Array<number>(8).fill(0)), /structured/);
  });

  it('other unsupported dtypes, listing the supported ones', () => {
    const dict = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
    expectNpyError(npyV1(padded(dict), new Array<number>(8).fill(0)), /unsupported dtype '<c8' \(supported: .*'?<f4/);
  });

  it('truncated data', () => {
    expectNpyError(npyV1(padded(f4('(2, 3)')), [...F32.one, ...F32.two]), /truncated data: shape \[2, 3\] of '<f4' needs 24 bytes, file has 8/);
  });

  it('a shape far larger than the file, without allocating it', () => {
    expectNpyError(npyV1(padded(f4('(1000000000000, 1000000)')), F32.one), /truncated data/);
  });

  it('trailing bytes after the data', () => {
    expectNpyError(npyV1(padded(f4('(1,)')), [...F32.one, 0]), /1 unexpected bytes/);
  });

  it('a header length past the end of the file', () => {
    const bytes = npyV1(padded(f4('(1,)')), []);
    bytes[8] = 0xff;
    expectNpyError(bytes, /runs past the end/);
  });

  it('an oversized header', () => {
    expectNpyError(npyV2(2, ascii(padded(f4('(1,)')) + ' '.repeat(20_000)), F32.one), /exceeds the 10000-byte limit/);
  });

  it('headers that are not the three-key dict', () => {
    expectNpyError(npyV1(padded("{'descr': '<f4', 'shape': (1,), }"), F32.one), /header keys must be exactly/);
    expectNpyError(npyV1(padded("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }"), F32.one), /header keys/);
    expectNpyError(npyV1(padded("['descr', '<f4']"), F32.one), /not a dict/);
    expectNpyError(npyV1(padded("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"), F32.one), /duplicate key/);
  });

  it('shapes that are not tuples of non-negative integers', () => {
    expectNpyError(npyV1(padded(f4('(3)')), F32.one), /'shape' must be a tuple/); // "(3)" is just 3 in Python
    expectNpyError(npyV1(padded(f4('[1]')), F32.one), /'shape' must be a tuple/);
    expectNpyError(npyV1(padded(f4('(-1,)')), F32.one), /non-negative/);
    expectNpyError(npyV1(padded(f4("('a',)")), F32.one), /non-negative/);
  });

  it('anything that is not a plain literal (the header is never evaluated)', () => {
    expectNpyError(npyV1(padded("{'descr': __import__('os').system('x'), 'fortran_order': False, 'shape': (1,), }"), F32.one), /malformed header/);
    expectNpyError(npyV1(padded("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }"), F32.one), /malformed header/);
    expectNpyError(npyV1(padded("{'descr': '<f4"), F32.one), /malformed header: unterminated string/);
    expectNpyError(npyV1(padded('(((((((((((((((((((((((((1)))))))))))))))))))))))))'), F32.one), /nests too deeply/);
  });
});
