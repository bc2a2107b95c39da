/**
 * IEEE 754 binary16 (float16) and bfloat16 conversions at the bit level.
 *
 * Why hand-written: Node 24's V8 does ship `Float16Array` and `Math.f16round`, but the project's
 * TypeScript lib (es2024) does not type them, they canonicalise NaN payloads, and they only give
 * values, not the bit patterns the file readers/writers need. The integer code below is small,
 * bit-exact in both directions (round-to-nearest-even on the way down, subnormals, ±0, ±inf, NaN
 * payloads kept where they fit) and works on any engine. The tests use `Math.f16round` as an
 * independent oracle where the engine has it.
 *
 * Scalar functions take and return bit patterns as plain numbers (0 … 0xffff for 16-bit values).
 * The array functions write float32 *bits* into the destination, so NaN payloads survive.
 */

// Module-level scratch so the scalar functions allocate nothing per call.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float16 bits → float32 bits (exact: every float16 value is a float32 value). */
export function float16BitsToFloat32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  let exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) {
    // inf (mant 0) or NaN: widen the payload into the top of the float32 mantissa.
    return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  }
  if (exp === 0) {
    if (mant === 0) return sign >>> 0; // ±0
    // Subnormal m·2^-24: normalise so the leading 1 moves to bit 10; each shift lowers the exponent.
    exp = 1;
    while ((mant & 0x400) === 0) {
      mant <<= 1;
      exp--;
    }
    mant &= 0x3ff;
  }
  // Rebias: float16 bias 15 → float32 bias 127.
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

/**
 * float32 bits → float16 bits, rounding to nearest, ties to even (IEEE default, as numpy's
 * `astype(np.float16)`). Overflow gives ±inf, underflow gives ±0 or a subnormal; NaN stays NaN
 * (the payload's top 10 bits are kept; if they are all zero the result is the quiet NaN 0x7e00).
 */
export function float32BitsToFloat16Bits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  const frac = f & 0x7fffff;
  if (exp === 0xff) {
    if (frac === 0) return sign | 0x7c00; // ±inf
    const payload = frac >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  if (exp >= 143) return sign | 0x7c00; // ≥ 2^16 overflows (65504 is the largest float16)
  if (exp >= 113) {
    // Normal float16 range [2^-14, 2^16): keep 10 mantissa bits, round the 13 dropped ones.
    // A carry out of the mantissa correctly bumps the exponent (and 0x7bff+1 = 0x7c00 = inf).
    let h = ((exp - 112) << 10) | (frac >>> 13);
    const rest = frac & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
    return sign | h;
  }
  // Below 2^-14: float16 subnormal q·2^-24 with q = round(mant24 · 2^(exp-150+24)).
  // float32 subnormals (exp 0) and values below 2^-26 (shift > 25) round to ±0 outright.
  const shift = 126 - exp;
  if (exp === 0 || shift > 25) return sign;
  const mant = frac | 0x800000;
  let q = mant >>> shift;
  const rest = mant & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rest > half || (rest === half && (q & 1) === 1)) q++;
  return sign | q; // q = 0x400 (rounded up to the smallest normal) is encoded correctly too
}

/** float16 bits → the float32 value (as a JS number). */
export function float16ToFloat32(h: number): number {
  scratchU32[0] = float16BitsToFloat32Bits(h);
  return scratchF32[0];
}

/** A number → float16 bits: first rounded to float32 (Math.fround), then to float16 (RNE). */
export function float32ToFloat16(x: number): number {
  scratchF32[0] = x;
  return float32BitsToFloat16Bits(scratchU32[0]);
}

/** bfloat16 bits → float32 bits: bfloat16 is the top half of a float32, so this is exact. */
export function bfloat16BitsToFloat32Bits(b: number): number {
  return ((b & 0xffff) << 16) >>> 0;
}

/** bfloat16 bits → the float32 value (as a JS number). */
export function bfloat16ToFloat32(b: number): number {
  scratchU32[0] = bfloat16BitsToFloat32Bits(b);
  return scratchF32[0];
}

function outBits(n: number, out: Float32Array | undefined, what: string): { dst: Float32Array; bits: Uint32Array } {
  const dst = out ?? new Float32Array(n);
  if (dst.length !== n) {
    throw new RangeError(`${what}: destination has ${dst.length} elements, source has ${n}`);
  }
  return { dst, bits: new Uint32Array(dst.buffer, dst.byteOffset, n) };
}

/** Converts float16 bit patterns to float32 (bit-exact; NaN payloads kept). */
export function float16ArrayToFloat32(src: Uint16Array, out?: Float32Array): Float32Array {
  const { dst, bits } = outBits(src.length, out, 'float16ArrayToFloat32');
  for (let i = 0; i < src.length; i++) bits[i] = float16BitsToFloat32Bits(src[i]);
  return dst;
}

/** Converts bfloat16 bit patterns to float32 (bit-exact). */
export function bfloat16ArrayToFloat32(src: Uint16Array, out?: Float32Array): Float32Array {
  const { dst, bits } = outBits(src.length, out, 'bfloat16ArrayToFloat32');
  for (let i = 0; i < src.length; i++) bits[i] = (src[i] << 16) >>> 0;
  return dst;
}

/** Converts float32 values to float16 bit patterns (round to nearest even). */
export function float32ArrayToFloat16(src: Float32Array, out?: Uint16Array): Uint16Array {
  const dst = out ?? new Uint16Array(src.length);
  if (dst.length !== src.length) {
    throw new RangeError(`float32ArrayToFloat16: destination has ${dst.length} elements, source has ${src.length}`);
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) dst[i] = float32BitsToFloat16Bits(bits[i]);
  return dst;
}
