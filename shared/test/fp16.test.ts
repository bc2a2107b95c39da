import { describe, expect, it } from 'vitest';
import {
  bfloat16ArrayToFloat32,
  bfloat16BitsToFloat32Bits,
  bfloat16ToFloat32,
  float16ArrayToFloat32,
  float16BitsToFloat32Bits,
  float16ToFloat32,
  float32ArrayToFloat16,
  float32BitsToFloat16Bits,
  float32ToFloat16,
} from '../src/formats/fp16.ts';

// Expected values below are worked out by hand from the IEEE 754 binary16 layout
// (1 sign, 5 exponent bits with bias 15, 10 mantissa bits).

describe('float16 → float32', () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xbc00, -1],
    [0x4000, 2],
    [0x3800, 0.5],
    [0x3555, 1365 / 4096], // exp 13 → 2^-2, mantissa 341: (1024 + 341)/1024 / 4
    [0x3bff, 1 - 2 ** -11], // largest value below 1
    [0x7bff, 65504], // largest finite
    [0xfbff, -65504],
    [0x0400, 2 ** -14], // smallest normal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  it.each(cases)('0x%s decodes exactly', (h, v) => {
    expect(float16ToFloat32(h)).toBe(v);
  });

  it('keeps the sign of zero and decodes NaN', () => {
    expect(Object.is(float16ToFloat32(0x0000), 0)).toBe(true);
    expect(Object.is(float16ToFloat32(0x8000), -0)).toBe(true);
    expect(float16ToFloat32(0x7e00)).toBeNaN();
    expect(float16ToFloat32(0xfe01)).toBeNaN();
  });

  it('produces the float32 bit patterns, NaN payloads included', () => {
    expect(float16BitsToFloat32Bits(0x3c00)).toBe(0x3f800000);
    expect(float16BitsToFloat32Bits(0x0001)).toBe(0x33800000); // 2^-24: float32 exponent 103
    expect(float16BitsToFloat32Bits(0x03ff)).toBe(0x387fc000); // 2^-15 · (1 + 1022/1024)
    expect(float16BitsToFloat32Bits(0x8000)).toBe(0x80000000);
    expect(float16BitsToFloat32Bits(0x7e00)).toBe(0x7fc00000); // quiet NaN
    expect(float16BitsToFloat32Bits(0x7c01)).toBe(0x7f802000); // signalling NaN, payload kept
    expect(float16BitsToFloat32Bits(0xfc00)).toBe(0xff800000);
  });

  it('agrees with the engine Float16Array on all 65536 patterns where available', () => {
    const F16 = (globalThis as { Float16Array?: new (b: ArrayBuffer) => ArrayLike<number> }).Float16Array;
    if (F16 === undefined) return;
    const u16 = new Uint16Array(65536).map((_, i) => i);
    const engine = new F16(u16.buffer);
    const ours = float16ArrayToFloat32(u16);
    for (let i = 0; i < 65536; i++) {
      if (!Object.is(ours[i], engine[i]) && !(Number.isNaN(ours[i]) && Number.isNaN(engine[i]))) {
        throw new Error(`0x${i.toString(16)}: ${ours[i]} vs ${engine[i]}`);
      }
    }
  });
});

describe('float32 → float16 (round to nearest, ties to even)', () => {
  const cases: [string, number, number][] = [
    ['1', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['1/3', 1 / 3, 0x3555],
    ['0.1', 0.1, 0x2e66], // 0.0999755859375
    ['65504', 65504, 0x7bff],
    ['65519 (below the midpoint to 65536)', 65519, 0x7bff],
    ['65520 (tie; 0x7bff is odd → up to inf)', 65520, 0x7c00],
    ['1e6', 1e6, 0x7c00],
    ['-1e6', -1e6, 0xfc00],
    ['1 + 2^-11 (tie → even 1)', 1 + 2 ** -11, 0x3c00],
    ['1 + 3·2^-11 (tie → even 0x3c02)', 1 + 3 * 2 ** -11, 0x3c02],
    ['1 + 2^-11 + 2^-20 (above the tie)', 1 + 2 ** -11 + 2 ** -20, 0x3c01],
    ['2^-14', 2 ** -14, 0x0400],
    ['2^-24', 2 ** -24, 0x0001],
    ['2^-25 (tie → even 0)', 2 ** -25, 0x0000],
    ['2^-25 + 2^-35 (above the tie)', 2 ** -25 + 2 ** -35, 0x0001],
    ['3·2^-25 (tie → even 2)', 3 * 2 ** -25, 0x0002],
    ['1023.5·2^-24 (tie → carries into the smallest normal)', 1023.5 * 2 ** -24, 0x0400],
    ['-3·2^-24 (negative subnormal)', -3 * 2 ** -24, 0x8003],
    ['1e-10 (underflow)', 1e-10, 0x0000],
    ['-1e-10 (underflow keeps the sign)', -1e-10, 0x8000],
    ['float32 subnormal', 2 ** -140, 0x0000],
    ['Infinity', Infinity, 0x7c00],
    ['-0', -0, 0x8000],
  ];
  it.each(cases)('%s', (_label, x, h) => {
    expect(float32ToFloat16(x)).toBe(h);
  });

  it('keeps NaN a NaN, with its top payload bits', () => {
    expect(float32ToFloat16(NaN) & 0x7e00).toBe(0x7e00);
    expect(float32BitsToFloat16Bits(0x7fc00000)).toBe(0x7e00);
    expect(float32BitsToFloat16Bits(0xff802000)).toBe(0xfc01); // payload 1 in the top bits
    expect(float32BitsToFloat16Bits(0x7f800001)).toBe(0x7e00); // payload lost below: quiet NaN, not inf
  });

  it('round-trips every non-NaN float16 pattern', () => {
    for (let h = 0; h < 65536; h++) {
      if ((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0) continue;
      const back = float32BitsToFloat16Bits(float16BitsToFloat32Bits(h));
      if (back !== h) throw new Error(`0x${h.toString(16)} came back as 0x${back.toString(16)}`);
    }
  });

  it('agrees with Math.f16round on 200k seeded random float32 patterns where available', () => {
    const f16round = (Math as { f16round?: (x: number) => number }).f16round;
    if (f16round === undefined) return;
    let s = 12345;
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    for (let i = 0; i < 200_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0; // LCG, fixed seed
      // Concentrate half the samples in float16's exponent range so rounding is exercised.
      bits[0] = i % 2 === 0 ? s : (s & 0x807fffff) | ((((s >>> 23) % 40) + 98) << 23);
      const want = f16round(f[0]);
      const got = float16ToFloat32(float32BitsToFloat16Bits(bits[0]));
      if (!Object.is(got, want) && !(Number.isNaN(got) && Number.isNaN(want))) {
        throw new Error(`bits 0x${bits[0].toString(16)} (${f[0]}): ${got} vs ${want}`);
      }
    }
  });
});

describe('bfloat16 → float32', () => {
  it('is the top half of the float32 pattern', () => {
    expect(bfloat16ToFloat32(0x3f80)).toBe(1);
    expect(bfloat16ToFloat32(0xc000)).toBe(-2);
    expect(bfloat16ToFloat32(0x3e80)).toBe(0.25);
    expect(bfloat16ToFloat32(0x4049)).toBe(3.140625); // 2 · (1 + 73/128)
    expect(bfloat16ToFloat32(0x7f80)).toBe(Infinity);
    expect(bfloat16ToFloat32(0x0001)).toBe(2 ** -133); // float32 subnormal 0x00010000
    expect(bfloat16ToFloat32(0x7fc0)).toBeNaN();
    expect(bfloat16BitsToFloat32Bits(0xffc1)).toBe(0xffc10000);
  });
});

describe('array conversions', () => {
  it('convert element-wise and keep NaN payloads', () => {
    const out = float16ArrayToFloat32(Uint16Array.of(0x3c00, 0x7c01, 0x8000));
    expect(out[0]).toBe(1);
    expect(new Uint32Array(out.buffer)[1]).toBe(0x7f802000);
    expect(Object.is(out[2], -0)).toBe(true);
    expect(Array.from(bfloat16ArrayToFloat32(Uint16Array.of(0x3f80, 0xc000)))).toEqual([1, -2]);
    expect(Array.from(float32ArrayToFloat16(Float32Array.of(1, -2, 65520)))).toEqual([0x3c00, 0xc000, 0x7c00]);
  });

  it('write into a given destination and refuse a wrong-length one', () => {
    const dst = new Float32Array(2);
    expect(float16ArrayToFloat32(Uint16Array.of(0x4000, 0x3800), dst)).toBe(dst);
    expect(Array.from(dst)).toEqual([2, 0.5]);
    expect(() => float16ArrayToFloat32(Uint16Array.of(1), dst)).toThrow(RangeError);
    expect(() => float32ArrayToFloat16(Float32Array.of(1), new Uint16Array(2))).toThrow(RangeError);
  });
});
