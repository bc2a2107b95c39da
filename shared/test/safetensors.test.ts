import { describe, expect, it } from 'vitest';
import { readSafetensors, SafetensorsFormatError, writeSafetensors } from '../src/formats/safetensors.ts';
import { tensor } from '../src/sampler/tensor.ts';
import { thrown } from '../../test/helpers/thrown.ts';

// Files are built by hand from the spec (https://github.com/huggingface/safetensors#format):
// u64 little-endian header length N, N bytes of JSON, raw little-endian data.

function u64(n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) out.push(Math.floor(n / 2 ** (8 * i)) % 256);
  return out;
}

function file(header: string, data: number[] = []): Uint8Array {
  const h = Array.from(new TextEncoder().encode(header));
  return Uint8Array.from([...u64(h.length), ...h, ...data]);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

// float32 0 … 5, little-endian, by hand (1.0 = 0x3f800000, 2.0 = 0x40000000, 3.0 = 0x40400000, …).
const F32_0_TO_5 = [0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40];

function expectStError(bytes: Uint8Array, pattern: RegExp, tensorName?: string): void {
  const e = thrown(() => readSafetensors(bytes, 'stats.safetensors'), SafetensorsFormatError);
  expect(e.file).toBe('stats.safetensors');
  expect(e.message).toMatch(/^stats\.safetensors: /);
  expect(e.message).toMatch(pattern);
  expect(e.tensorName).toBe(tensorName);
  if (tensorName !== undefined) expect(e.message).toContain(`tensor "${tensorName}"`);
}

describe('writeSafetensors matches the reference serialisation byte for byte', () => {
  // The cases of the reference implementation's own serialisation tests.
  it('a header that is already 8-byte aligned gets no padding', () => {
    const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
    expect(header.length).toBe(64);
    const out = writeSafetensors({ 'attn.0': tensor(Float32Array.of(0, 1, 2, 3, 4, 5), [1, 2, 3]) });
    expect(hex(out)).toBe(hex(file(header, F32_0_TO_5)));
  });

  it('a 65-byte header is padded with 7 spaces to 72', () => {
    const header = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
    expect(header.length).toBe(65);
    const out = writeSafetensors({ attn0: tensor(Float32Array.of(0, 1, 2, 3, 4, 5), [1, 1, 2, 3]) });
    expect(hex(out)).toBe(hex(file(header + ' '.repeat(7), F32_0_TO_5)));
  });

  it('no tensors, with and without metadata', () => {
    expect(hex(writeSafetensors({}))).toBe(hex(file('{}      ')));
    const header = '{"__metadata__":{"framework":"pt"}}';
    expect(header.length).toBe(35);
    expect(hex(writeSafetensors({}, { framework: 'pt' }))).toBe(hex(file(header + '     ')));
  });

  it('sorts tensors and metadata keys, metadata first', () => {
    const out = writeSafetensors(
      { b: tensor(Float32Array.of(2), []), a: tensor(Float32Array.of(1), [1]) },
      { z: '1', y: '2' },
    );
    const header =
      '{"__metadata__":{"y":"2","z":"1"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}';
    expect(header.length).toBe(34 + 53 + 52); // 139 → 144 with 5 spaces
    expect(hex(out)).toBe(hex(file(header + '     ', [0, 0, 0x80, 0x3f, 0, 0, 0, 0x40])));
  });

  it('refuses non-string metadata values and a tensor named __metadata__', () => {
    expect(() => writeSafetensors({}, { n: 3 as unknown as string })).toThrow(/__metadata__ value for "n" must be a string/);
    expect(() => writeSafetensors({ __metadata__: tensor(Float32Array.of(1), []) })).toThrow(/cannot be a tensor name/);
  });
});

describe('readSafetensors', () => {
  it('reads a hand-built file with F16, BF16 and F64 tensors at unaligned offsets', () => {
    const header =
      '{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},' +
      '"c":{"dtype":"F64","shape":[],"data_offsets":[8,16]},' +
      '"b":{"dtype":"BF16","shape":[2,1],"data_offsets":[4,8]},' +
      '"__metadata__":{"format":"cil-stats/1","note":"é"}}';
    const data = [
      0x00, 0x3c, 0x00, 0xc0, // F16: 0x3c00 = 1, 0xc000 = -2
      0x80, 0x3f, 0x49, 0x40, // BF16: 0x3f80 = 1, 0x4049 = 3.140625
      0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f, // F64: 0.1
    ];
    const st = readSafetensors(file(header, data), 'hand.safetensors');
    expect([...st.tensors.keys()]).toEqual(['a', 'b', 'c']); // data order
    expect(st.metadata).toEqual({ format: 'cil-stats/1', note: 'é' });
    const a = st.tensors.get('a')!;
    expect(a.dtype).toBe('F16');
    expect(a.dims).toEqual([2]);
    expect(a.dataOffsets).toEqual([0, 4]);
    expect(Array.from(a.tensor().data)).toEqual([1, -2]);
    const b = st.tensors.get('b')!.tensor();
    expect(b.dims).toEqual([2, 1]);
    expect(Array.from(b.data)).toEqual([1, 3.140625]);
    const c = st.tensors.get('c')!.tensor();
    expect(c.dims).toEqual([]);
    expect(c.data[0]).toBe(Math.fround(0.1));
  });

  it('lists dtypes it cannot convert but refuses to decode them', () => {
    const st = readSafetensors(file('{"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}', new Array<number>(8).fill(0)), 'f');
    expect(st.tensors.get('i')!.dtype).toBe('I64');
    expect(() => st.tensors.get('i')!.tensor()).toThrow(SafetensorsFormatError);
    expect(() => st.tensors.get('i')!.tensor()).toThrow(/tensor "i": dtype I64 cannot be read as float32/);
  });

  it('accepts a null __metadata__ and zero-size tensors', () => {
    const st = readSafetensors(
      file('{"__metadata__":null,"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"x":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}', [0, 0, 0x80, 0x3f]),
      'f',
    );
    expect(st.metadata).toEqual({});
    expect(st.tensors.get('e')!.tensor().data.length).toBe(0);
    expect(Array.from(st.tensors.get('x')!.tensor().data)).toEqual([1]);
  });

  it('reads from a Node Buffer slice of a larger pool', () => {
    const bytes = writeSafetensors({ x: tensor(Float32Array.of(5, 6), [2]) });
    const pool = Buffer.alloc(bytes.length + 3);
    pool.set(bytes, 3);
    expect(Array.from(readSafetensors(pool.subarray(3), 'p').tensors.get('x')!.tensor().data)).toEqual([5, 6]);
  });
});

describe('round trip', () => {
  it('keeps names, dims, metadata and every float32 bit pattern', () => {
    const bits = Uint32Array.of(0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00001, 0x00000001);
    const weird = new Float32Array(bits.buffer);
    const tensors = {
      expectation_x0: tensor(Float32Array.from({ length: 24 }, (_, i) => i / 7 - 1), [2, 3, 4]),
      tr_cov_d: tensor(Float32Array.of(0.8125), []),
      weird: tensor(weird, [3, 2]),
      'ünïcode/name': tensor(Float32Array.of(1), [1]),
    };
    const meta = { family: 'dynamicrafter', latentShape: '[2,3,4]', quote: 'a "b"\n' };
    const bytes = writeSafetensors(tensors, meta);
    const headerLen = new DataView(bytes.buffer).getUint32(0, true);
    expect((8 + headerLen) % 8).toBe(0);
    const st = readSafetensors(bytes, 'rt');
    expect(st.metadata).toEqual(meta);
    expect([...st.tensors.keys()].sort()).toEqual(Object.keys(tensors).sort());
    for (const [k, t] of Object.entries(tensors)) {
      const back = st.tensors.get(k)!;
      expect(back.dtype).toBe('F32');
      expect(back.dims).toEqual(t.dims);
      expect(Array.from(new Uint32Array(back.tensor().data.buffer))).toEqual(Array.from(new Uint32Array(t.data.buffer)));
    }
  });
});

describe('rejections', () => {
  const one = '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';

  it('a file shorter than the length prefix', () => {
    expectStError(Uint8Array.of(1, 0, 0), /too short/);
  });

  it('a header length larger than the file', () => {
    const bytes = file(one, [0, 0, 0, 0]);
    bytes[0] += 10;
    expectStError(bytes, /header length \d+ runs past the end of the file/);
  });

  it('a header length above 100 MB, including lengths that need the high word', () => {
    expectStError(Uint8Array.from([...u64(100_000_001), 0x7b]), /exceeds the 100000000-byte limit/);
    expectStError(Uint8Array.from([...u64(2 ** 40), 0x7b]), /exceeds the 100000000-byte limit/);
  });

  it('a header that is not UTF-8', () => {
    expectStError(Uint8Array.from([...u64(3), 0x7b, 0xff, 0x7d]), /not valid UTF-8/);
  });

  it('a header that is not a JSON object', () => {
    expectStError(file('[1,2]'), /starting with '\{'/);
    expectStError(file('{"t":'), /not valid JSON/);
    expectStError(file('{"t":{"dtype":"F32",}}'), /not valid JSON/);
    expectStError(file("{'t':1}"), /not valid JSON/);
    expectStError(file('{} x'), /not valid JSON: unexpected text/);
    expectStError(file(`{"a":${'['.repeat(100)}${']'.repeat(100)}}`), /nesting too deep/);
  });

  it('duplicate tensor keys', () => {
    const header = '{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    expectStError(file(header, new Array<number>(8).fill(0)), /duplicate key "t"/);
  });

  it('duplicate metadata keys and duplicate fields inside an entry', () => {
    expectStError(file('{"__metadata__":{"a":"1","a":"2"}}'), /duplicate key "a"/);
    expectStError(file('{"t":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /duplicate key "dtype"/);
  });

  it('metadata values that are not strings', () => {
    expectStError(file('{"__metadata__":{"frames":16}}'), /__metadata__ value for "frames" must be a string, got number 16/);
    expectStError(file('{"__metadata__":["a"]}'), /__metadata__ must be an object of strings/);
  });

  it('unknown dtypes', () => {
    expectStError(file('{"t":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', new Array<number>(16).fill(0)), /unknown dtype string "F128"/, 't');
  });

  it('bad shapes and offsets fields', () => {
    expectStError(file('{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /shape must be an array of non-negative integers/, 't');
    expectStError(file('{"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /shape must be/, 't');
    expectStError(file('{"t":{"dtype":"F32","shape":[1]}}', [0, 0, 0, 0]), /data_offsets must be \[begin, end\]/, 't');
    expectStError(file('{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}', [0, 0, 0, 0]), /data_offsets must be/, 't');
    expectStError(file('{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}', [0, 0, 0, 0]), /end before they begin/, 't');
    expectStError(file('{"t":[1]}'), /entry must be an object/, 't');
  });

  it('offsets out of range of the data section', () => {
    expectStError(file('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', [0, 0, 0, 0]), /data_offsets \[0, 8\] are out of range of the 4-byte data section/, 't');
  });

  it('a size that does not match dtype × shape', () => {
    expectStError(file('{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', [0, 0, 0, 0]), /4 bytes .* do not match F32 × \[2\] = 8 bytes/, 't');
    expectStError(
      file('{"t":{"dtype":"F16","shape":[1000000000,1000000000],"data_offsets":[0,4]}}', [0, 0, 0, 0]),
      /do not match F16/,
      't',
    );
  });

  it('overlapping offsets', () => {
    const header = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    expectStError(file(header, new Array<number>(8).fill(0)), /overlap those of tensor "a"/, 'b');
  });

  it('offsets that leave a gap', () => {
    const header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}';
    expectStError(file(header, new Array<number>(12).fill(0)), /data bytes \[4, 8\) before this tensor belong to no tensor/, 'b');
  });

  it('data bytes after the last tensor', () => {
    expectStError(file(one, [0, 0, 0, 0, 9]), /data section has 5 bytes but the tensors cover only 4/);
  });
});
