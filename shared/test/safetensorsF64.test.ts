import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from '../src/formats/safetensors.ts';
import { tensor } from '../src/sampler/tensor.ts';

// F64 writing, checked against bytes built by hand from the spec: u64 LE header length, JSON,
// then little-endian data. The reference orders tensors by dtype, descending (F64 before F32),
// then by name, and pads the header with spaces to a multiple of 8.

function u64(n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < 8; i++) out.push(Math.floor(n / 2 ** (8 * i)) % 256);
  return out;
}

function padded(header: string): number[] {
  const h = Array.from(new TextEncoder().encode(header));
  while (h.length % 8 !== 0) h.push(0x20);
  return [...u64(h.length), ...h];
}

// 1.5 = 0x3FF8000000000000, -2 = 0xC000000000000000 (float64, little-endian)
const F64_1_5 = [0, 0, 0, 0, 0, 0, 0xf8, 0x3f];
const F64_M2 = [0, 0, 0, 0, 0, 0, 0, 0xc0];
// 1.0f = 0x3F800000
const F32_1 = [0, 0, 0x80, 0x3f];

describe('writeSafetensors with Float64Array tensors', () => {
  it('writes F64 data and puts F64 tensors before F32 ones, whatever the names', () => {
    const out = writeSafetensors({
      a_f32: tensor(Float32Array.of(1), [1]),
      z_f64: { data: Float64Array.of(1.5, -2), dims: [2] },
    });
    const header = '{"z_f64":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"a_f32":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}';
    expect(Buffer.from(out).toString('hex')).toBe(Buffer.from([...padded(header), ...F64_1_5, ...F64_M2, ...F32_1]).toString('hex'));
  });

  it('round-trips every float64 bit pattern exactly through float64(), and float64() widens F32 exactly', () => {
    const vals = Float64Array.of(0.1, -0, 1e-308, 5e-324, Number.MAX_VALUE, 1 / 3, -123456.789012345, 2 ** 53 + 2);
    const f = readSafetensors(writeSafetensors({ m: { data: vals, dims: [2, 4] }, s: tensor(Float32Array.of(0.1), []) }, { k: 'v' }), 'x');
    const m = f.tensors.get('m')!;
    expect(m.dtype).toBe('F64');
    expect(m.dims).toEqual([2, 4]);
    const back = m.float64();
    expect(Buffer.from(back.buffer).equals(Buffer.from(vals.buffer))).toBe(true);
    // tensor() still converts to float32 (nearest)
    expect(Array.from(m.tensor().data)).toEqual(Array.from(Float32Array.from(vals)));
    expect(f.tensors.get('s')!.float64()[0]).toBe(Math.fround(0.1));
    expect(f.metadata).toEqual({ k: 'v' });
  });

  it('refuses data whose length does not fill the dims', () => {
    expect(() => writeSafetensors({ m: { data: new Float64Array(3), dims: [2, 2] } })).toThrow(/tensor "m" has 3 elements but dims \[2, 2\] need 4/);
  });
});
