import { existsSync, readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { readTorchStatistics, readTorchTensorDict, TorchFormatError, UnsafePickleError } from '../src/formats/torchPt.ts';
import { thrown } from '../../test/helpers/thrown.ts';

// ---------------------------------------------------------------------------------------------
// Fixtures: real torch.save output, with values listed independently in expected.json.

const FIXTURES = new URL('../../test/fixtures/torch-stats/', import.meta.url);
const fixture = (file: string): Uint8Array => new Uint8Array(readFileSync(new URL(file, FIXTURES)));

interface ExpectedKey {
  dtype: string;
  shape: number[];
  values?: number[];
  value?: number;
}
const expected = JSON.parse(readFileSync(new URL('expected.json', FIXTURES), 'utf8')) as Record<string, { keys: Record<string, ExpectedKey> }>;

/** Bit patterns of the expected values rounded to float32, so comparisons are bit for bit. */
function expectedBits(e: ExpectedKey): number[] {
  return [...new Uint32Array(Float32Array.from(e.values ?? [e.value as number]).buffer)];
}
function bits(a: Float32Array): number[] {
  return [...new Uint32Array(a.buffer, a.byteOffset, a.length)];
}

function checkFixture(file: string, order: string[]): void {
  const stats = readTorchStatistics(fixture(file), file);
  expect(stats.keys).toEqual(order);
  expect(stats.ignored).toEqual([]);
  for (const key of order) {
    const want = expected[file].keys[key];
    const got = stats.tensors.get(key);
    expect(got, key).toBeDefined();
    expect(got?.dtype).toBe(want.dtype);
    expect(got?.tensor.dims).toEqual(want.shape);
    expect(bits(got?.tensor.data ?? new Float32Array())).toEqual(expectedBits(want));
  }
}

describe('readTorchStatistics on real torch.save files', () => {
  // Key orders are those of the pickles' SETITEMS (read off `python -m pickletools`), not of expected.json.
  it('reads DynamiCrafter statistics saved from cuda:0', () => {
    checkFixture('dynamicrafter_initial_noise_tiny.pt', ['Expectation_X0', 'Tr_Cov_d']);
  });

  it('reads SVD float16 statistics, 0-d tensor first, converting exactly to float32', () => {
    checkFixture('svd_initial_noise_tiny.pt', ['trCov_d', 'Expectation_x_0']);
    const t = readTorchStatistics(fixture('svd_initial_noise_tiny.pt'), 'svd').tensors.get('trCov_d');
    expect(t?.tensor.data[0]).toBe(0.300048828125); // float16 0x34cd = 1229/4096, exact in float32
  });

  it('honours storage offsets and strides of views into one shared storage', () => {
    checkFixture('strided_view_tiny.pt', ['Expectation_X0', 'Tr_Cov_d']);
  });

  it('refuses the hostile pickle, naming the global, and runs nothing', () => {
    const file = 'hostile_reduce.pt';
    const u = thrown(() => readTorchStatistics(fixture(file), file), UnsafePickleError);
    expect(u.offending).toBe('posix.system');
    expect(u.offset).toBe(207); // the GLOBAL opcode's offset in data.pkl, per pickletools
    expect(u.message).toContain('posix.system');
    expect(u.message).toContain(file);
    expect(existsSync('/tmp/pwned-by-pt')).toBe(false);
  });
});

describe('malformed archives', () => {
  it('rejects a truncated file', () => {
    const bytes = fixture('dynamicrafter_initial_noise_tiny.pt');
    for (const cut of [10, bytes.length >> 1, bytes.length - 1]) {
      expect(() => readTorchStatistics(bytes.subarray(0, cut), 'cut.pt')).toThrow(TorchFormatError);
    }
  });

  it('rejects something that is not a zip', () => {
    expect(() => readTorchStatistics(new TextEncoder().encode('hello, not a zip at all, just text'), 'x.pt')).toThrow(
      /x\.pt: not a ZIP archive/,
    );
    expect(() => readTorchStatistics(new Uint8Array(0), 'empty.pt')).toThrow(TorchFormatError);
    // Legacy (non-zip) torch.save starts with a protocol-2 pickle.
    expect(() => readTorchStatistics(Uint8Array.of(0x80, 0x02, 0x8a, 0x0a), 'old.pt')).toThrow(/legacy/);
  });

  it('rejects a zip without data.pkl', () => {
    const zip = makeZip([['archive/version', ascii('3\n')]]);
    expect(() => readTorchStatistics(zip, 'nopkl.pt')).toThrow(/nopkl\.pt: no <archive>\/data\.pkl/);
  });

  it('detects a corrupted storage through its CRC', () => {
    const pkl = dictPickle([['a', tensorOps('FloatStorage', '0', 2, 0, [2], [1])]]);
    const zip = torchZip(pkl, { '0': f32Bytes([1, 2]) });
    const at = findBytes(zip, f32Bytes([1, 2]));
    zip[at] ^= 1;
    expect(() => readTorchStatistics(zip, 'crc.pt')).toThrow(/CRC-32 mismatch/);
  });

  it('rejects a storage whose byte size does not match its element count', () => {
    const pkl = dictPickle([['a', tensorOps('FloatStorage', '0', 4, 0, [4], [1])]]);
    expect(() => readTorchStatistics(torchZip(pkl, { '0': f32Bytes([1, 2]) }), 'short.pt')).toThrow(/holds 8 bytes/);
  });

  it('reads a zip64 archive and rejects a central directory that points outside the file', () => {
    const pkl = dictPickle([['a', tensorOps('FloatStorage', '0', 2, 0, [2], [1])]]);
    const z = readTorchStatistics(torchZip(pkl, { '0': f32Bytes([1.5, -3]) }, 'little', true), 'z64.pt');
    expect([...(z.tensors.get('a')?.tensor.data ?? [])]).toEqual([1.5, -3]);

    const zip = torchZip(pkl, { '0': f32Bytes([1.5, -3]) });
    new DataView(zip.buffer).setUint32(zip.length - 6, 0x7fff0000, true); // EOCD's central-directory offset
    expect(() => readTorchStatistics(zip, 'cd.pt')).toThrow(/central directory .* runs past the end/);
  });

  it('rejects a missing or malformed storage key', () => {
    const missing = dictPickle([['a', tensorOps('FloatStorage', '7', 1, 0, [], [])]]);
    expect(() => readTorchStatistics(torchZip(missing, { '0': f32Bytes([1]) }), 'k.pt')).toThrow(/bad storage key 7/);
    const traversal = dictPickle([['a', tensorOps('FloatStorage', '../0', 1, 0, [], [])]]);
    expect(() => readTorchStatistics(torchZip(traversal, { '0': f32Bytes([1]) }), 'k.pt')).toThrow(/bad storage key/);
  });

  it('rejects a view that reaches outside its storage', () => {
    // size [2, 3], stride [3, 1], offset 1 → last index 1 + 3 + 2 = 6, storage has 6 elements.
    const pkl = dictPickle([['a', tensorOps('FloatStorage', '0', 6, 1, [2, 3], [3, 1])]]);
    expect(() => readTorchStatistics(torchZip(pkl, { '0': f32Bytes([0, 1, 2, 3, 4, 5]) }), 'oob.pt')).toThrow(
      /reaches outside storage 0 of 6 elements/,
    );
  });
});

describe('restricted pickle interpreter', () => {
  const refuse = (pkl: Uint8Array): UnsafePickleError => {
    try {
      readTorchTensorDict(torchZip(pkl, {}), 'evil.pt');
    } catch (e) {
      if (e instanceof UnsafePickleError) return e;
      throw e;
    }
    throw new Error('expected UnsafePickleError');
  };

  it('refuses a disallowed opcode, naming it and its offset', () => {
    // PROTO 2, EMPTY_DICT, INST 'os\nsystem\n' — INST would import and call in Python.
    const e = refuse(Uint8Array.of(0x80, 2, 0x7d, 0x69, ...ascii('os\nsystem\n'), 0x2e));
    expect(e.offending).toBe('INST (0x69)');
    expect(e.offset).toBe(3);
    expect(e.message).toMatch(/evil\.pt: archive\/data\.pkl byte 3: opcode INST \(0x69\) is not allowed/);
    expect(refuse(Uint8Array.of(0x80, 2, 0x7d, 0x7d, 0x62, 0x2e)).offending).toBe('BUILD (0x62)');
    expect(refuse(Uint8Array.of(0x80, 2, 0xff)).offending).toBe('unknown opcode (0xff)');
  });

  it('refuses globals outside the allow-list, via GLOBAL and STACK_GLOBAL', () => {
    const g = refuse(pickleOf([0x80, 2], global('builtins', 'eval'), [0x2e]));
    expect(g.offending).toBe('builtins.eval');
    expect(g.offset).toBe(2);
    const s = refuse(pickleOf([0x80, 4], shortStr('os'), shortStr('system'), [0x93, 0x2e]));
    expect(s.offending).toBe('os.system');
  });

  it('refuses REDUCE on an allowed global that is not callable here (a storage type)', () => {
    const e = refuse(pickleOf([0x80, 2], global('torch', 'FloatStorage'), [0x29, 0x52, 0x2e]));
    expect(e.offending).toBe('torch.FloatStorage');
    expect(e.message).toMatch(/REDUCE on torch\.FloatStorage is not allowed/);
  });

  it('reports stack underflow and truncation as format errors', () => {
    expect(() => readTorchTensorDict(torchZip(Uint8Array.of(0x80, 2, 0x75, 0x2e), {}), 'u.pt')).toThrow(TorchFormatError);
    expect(() => readTorchTensorDict(torchZip(Uint8Array.of(0x80, 2, 0x58, 9, 0, 0, 0, 0x61), {}), 't.pt')).toThrow(
      /truncated pickle/,
    );
  });

  it('converts float64, bfloat16 and big-endian storages, and plain Python numbers', () => {
    const pkl = dictPickle([
      ['f64', tensorOps('DoubleStorage', '0', 3, 0, [3], [1])],
      ['bf16', tensorOps('BFloat16Storage', '1', 2, 1, [1], [1])],
      ['py', [0x47, ...f64BigEndian(0.25)]],
      ['n', [0x4a, 7, 0, 0, 0]],
      ['note', str('hello')],
    ]);
    const bf16 = Uint8Array.of(0x00, 0x00, 0xc0, 0x3f); // little-endian 0x0000, 0x3fc0 = 1.5
    const le = readTorchStatistics(torchZip(pkl, { '0': f64Bytes([0.1, -2, 3.5], true), '1': bf16 }), 'mix.pt');
    expect(le.keys).toEqual(['f64', 'bf16', 'py', 'n']);
    expect(le.ignored).toEqual(['note']);
    expect([...(le.tensors.get('f64')?.tensor.data ?? [])]).toEqual([Math.fround(0.1), -2, 3.5]);
    expect(le.tensors.get('bf16')?.dtype).toBe('bfloat16');
    expect([...(le.tensors.get('bf16')?.tensor.data ?? [])]).toEqual([1.5]);
    expect(le.tensors.get('py')).toMatchObject({ dtype: 'float64', tensor: { dims: [] } });
    expect(le.tensors.get('py')?.tensor.data[0]).toBe(0.25);
    expect(le.tensors.get('n')?.dtype).toBe('int64');

    const be = readTorchStatistics(
      torchZip(pkl, { '0': f64Bytes([0.1, -2, 3.5], false), '1': Uint8Array.of(0, 0, 0x3f, 0xc0) }, 'big'),
      'be.pt',
    );
    expect([...(be.tensors.get('f64')?.tensor.data ?? [])]).toEqual([Math.fround(0.1), -2, 3.5]);
    expect([...(be.tensors.get('bf16')?.tensor.data ?? [])]).toEqual([1.5]);
  });

  it('gathers a transposed view in row-major order', () => {
    // Storage 0..5 is a 2x3 row-major block; size [3, 2] with stride [1, 3] is its transpose: (i, j) ↦ i + 3j.
    const pkl = dictPickle([['t', tensorOps('FloatStorage', '0', 6, 0, [3, 2], [1, 3])]]);
    const t = readTorchStatistics(torchZip(pkl, { '0': f32Bytes([0, 1, 2, 3, 4, 5]) }), 'tr.pt').tensors.get('t');
    expect(t?.tensor.dims).toEqual([3, 2]);
    expect([...(t?.tensor.data ?? [])]).toEqual([0, 3, 1, 4, 2, 5]);
  });
});

// ---------------------------------------------------------------------------------------------
// Hand-built pickles and archives, written from the pickle and ZIP specifications.

function ascii(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}
function u16le(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff];
}
function u32le(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}
function str(s: string): number[] {
  const b = ascii(s);
  return [0x58, ...u32le(b.length), ...b]; // BINUNICODE
}
function shortStr(s: string): number[] {
  const b = ascii(s);
  return [0x8c, b.length, ...b]; // SHORT_BINUNICODE
}
function global(module: string, name: string): number[] {
  return [0x63, ...ascii(`${module}\n${name}\n`)];
}
function int(n: number): number[] {
  return [0x4a, ...u32le(n)]; // BININT
}
function pickleOf(...parts: number[][]): Uint8Array {
  return Uint8Array.from(parts.flat());
}
/** The opcodes torch.save emits for one tensor: _rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict()). */
function tensorOps(storageType: string, key: string, numel: number, offset: number, size: number[], stride: number[]): number[] {
  return [
    ...global('torch._utils', '_rebuild_tensor_v2'),
    0x28, // MARK (args)
    0x28, // MARK (persistent id)
    ...str('storage'),
    ...global('torch', storageType),
    ...str(key),
    ...str('cpu'),
    ...int(numel),
    0x74, // TUPLE
    0x51, // BINPERSID
    ...int(offset),
    0x28, ...size.flatMap(int), 0x74,
    0x28, ...stride.flatMap(int), 0x74,
    0x89, // NEWFALSE
    ...global('collections', 'OrderedDict'),
    0x29, 0x52, // EMPTY_TUPLE REDUCE
    0x74, 0x52, // TUPLE REDUCE
  ];
}
function dictPickle(items: Array<[string, number[]]>): Uint8Array {
  return pickleOf([0x80, 2, 0x7d, 0x28], ...items.flatMap(([k, v]) => [str(k), v]), [0x75, 0x2e]);
}
function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}
function f64Bytes(values: number[], littleEndian: boolean): Uint8Array {
  const dv = new DataView(new ArrayBuffer(8 * values.length));
  values.forEach((v, i) => dv.setFloat64(8 * i, v, littleEndian));
  return new Uint8Array(dv.buffer);
}
function f64BigEndian(v: number): number[] {
  return [...f64Bytes([v], false)];
}
function findBytes(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('needle not found');
}

/**
 * A stored-entry ZIP laid out per APPNOTE: local headers + data, central directory, EOCD. With
 * `zip64`, the EOCD's fields are saturated and the real ones sit in a zip64 EOCD record + locator.
 */
function makeZip(files: Array<[string, Uint8Array]>, zip64 = false): Uint8Array {
  const local: number[] = [];
  const central: number[] = [];
  for (const [name, data] of files) {
    const n = ascii(name);
    const crc = crc32(data);
    const offset = local.length;
    local.push(...u32le(0x04034b50), ...u16le(20), ...u16le(0), ...u16le(0), ...u16le(0), ...u16le(0));
    local.push(...u32le(crc), ...u32le(data.length), ...u32le(data.length), ...u16le(n.length), ...u16le(0), ...n, ...data);
    central.push(...u32le(0x02014b50), ...u16le(20), ...u16le(20), ...u16le(0), ...u16le(0), ...u16le(0), ...u16le(0));
    central.push(...u32le(crc), ...u32le(data.length), ...u32le(data.length), ...u16le(n.length), ...u16le(0), ...u16le(0));
    central.push(...u16le(0), ...u16le(0), ...u32le(0), ...u32le(offset), ...n);
  }
  const u64le = (n: number): number[] => [...u32le(n), ...u32le(0)];
  const z64: number[] = [];
  if (zip64) {
    const at = local.length + central.length;
    z64.push(...u32le(0x06064b50), ...u64le(44), ...u16le(45), ...u16le(45), ...u32le(0), ...u32le(0));
    z64.push(...u64le(files.length), ...u64le(files.length), ...u64le(central.length), ...u64le(local.length));
    z64.push(...u32le(0x07064b50), ...u32le(0), ...u64le(at), ...u32le(1));
  }
  const eocd = [
    ...u32le(0x06054b50), ...u16le(0), ...u16le(0),
    ...u16le(zip64 ? 0xffff : files.length), ...u16le(zip64 ? 0xffff : files.length),
    ...u32le(zip64 ? 0xffffffff : central.length), ...u32le(zip64 ? 0xffffffff : local.length), ...u16le(0),
  ];
  return Uint8Array.from([...local, ...central, ...z64, ...eocd]);
}
/** The PyTorch 2.x layout: data.pkl, byteorder (when given), data/<key>, version, .data/serialization_id. */
function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array>, byteorder?: string, zip64 = false): Uint8Array {
  const files: Array<[string, Uint8Array]> = [['archive/data.pkl', pkl]];
  if (byteorder !== undefined) files.push(['archive/byteorder', ascii(byteorder)]);
  for (const [key, data] of Object.entries(storages)) files.push([`archive/data/${key}`, data]);
  files.push(['archive/version', ascii('3\n')], ['archive/.data/serialization_id', ascii('1234567890')]);
  return makeZip(files, zip64);
}
