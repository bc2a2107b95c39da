/**
 * Why libvips (sharp) refused an image, named as the real cause where it can be found.
 *
 * libvips reports some decode failures from the far end of its pipeline: libpng stops on a bad
 * IHDR checksum, and sharp says "vips2png: unable to write to target" (Validate) or
 * "Unknown error" (the worker's raw output), which reads like a full disk. So after a failed
 * decode (never before: what libvips accepts stays accepted) a PNG's chunk list is walked here
 * and its first structural fault named: a critical chunk whose CRC does not match, a chunk cut
 * off by the end of the file, a missing IEND. Hand-written because it is a page: Node has the
 * CRC (zlib.crc32), and the npm chunk readers (png-chunks-extract …) are unmaintained and throw
 * on the first fault without saying where.
 */
import { crc32 } from 'node:zlib';

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function isPng(b: Uint8Array): boolean {
  return b.length >= 8 && PNG_SIGNATURE.every((v, i) => b[i] === v);
}

/** A chunk type is four ASCII letters (PNG spec 5.4). */
function chunkType(b: Uint8Array, p: number): string | null {
  const t = b.subarray(p, p + 4);
  if (t.length < 4 || ![...t].every((c) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a))) return null;
  return String.fromCharCode(...t);
}

/**
 * The first structural fault of a PNG file, in words ("corrupt PNG: IHDR chunk CRC mismatch …",
 * "truncated PNG: …"); null when it is not a PNG or its chunk list is sound (the fault is then
 * inside the compressed data, or elsewhere). Ancillary chunks' CRCs are not checked: libpng
 * ignores a bad one (it drops the chunk), so it is never why a decode failed.
 */
export function pngDamage(b: Uint8Array): string | null {
  if (!isPng(b)) return null;
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 8;
  for (let index = 0; ; index++) {
    if (p + 8 > b.length) {
      return index === 0 ? `truncated PNG: the file ends after ${b.length} bytes, before the IHDR chunk` : `truncated PNG: no IEND chunk (the file ends after ${b.length} bytes)`;
    }
    const len = view.getUint32(p);
    const type = chunkType(b, p + 4);
    if (type === null) return `corrupt PNG: no valid chunk type at byte ${p + 4}`;
    if (index === 0 && (type !== 'IHDR' || len !== 13)) return `corrupt PNG: the first chunk must be a 13-byte IHDR, found a ${len}-byte ${type}`;
    if (len > 0x7fffffff) return `corrupt PNG: the ${type} chunk at byte ${p} declares ${len} bytes (over 2^31 − 1)`;
    if (p + 12 + len > b.length) {
      return `truncated PNG: the ${type} chunk at byte ${p} declares ${len} bytes, but the file ends ${Math.max(0, b.length - p - 8)} bytes into it`;
    }
    const critical = type.charCodeAt(0) < 0x61;
    if (critical) {
      const stored = view.getUint32(p + 8 + len);
      const computed = crc32(b.subarray(p + 4, p + 8 + len));
      if (stored !== computed) return `corrupt PNG: ${type} chunk CRC mismatch at byte ${p} (stored 0x${hex(stored)}, computed 0x${hex(computed)})`;
    }
    if (type === 'IEND') return null;
    p += 12 + len;
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/**
 * libvips messages that describe the output side or nothing at all, never the input's fault: they
 * are replaced by what is known (that the data did not decode).
 */
const UNINFORMATIVE = [/unable to write to target/i, /^unknown error$/i, /^$/];

/**
 * The reason a decode failed: the PNG's structural fault when there is one, else libvips' first
 * message line, unless it is one of the uninformative ones. `format` (e.g. "PNG") names the data
 * in the fallback, when known.
 */
export function decodeFailureReason(bytes: Uint8Array, libvipsMessage: string, format = ''): string {
  const damage = pngDamage(bytes);
  if (damage !== null) return damage;
  const line = libvipsMessage.split('\n')[0].trim();
  const data = format === '' ? 'data' : `${format} data`;
  if (UNINFORMATIVE.some((r) => r.test(line))) return `corrupt or truncated ${data} (the decoder gave no specific reason)`;
  return `corrupt or truncated ${data} (${line})`;
}
