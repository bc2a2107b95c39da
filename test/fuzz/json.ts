/**
 * Hostile request documents for Validate's sidecar / metadata path: random JSON of every type,
 * nesting and size, valid requests with fields swapped for hostile values, prototype-pollution
 * keys, and text-level damage (invalid UTF-8, truncation, non-JSON literals, deep nesting).
 */
import { JOB_REQUEST_FIELDS } from '#shared/schemas';
import type { FuzzRng } from './rng.ts';

/** Keys that would pollute or shadow Object.prototype if a parser merged them naively. */
export const POLLUTION_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__'];

/** The value a polluting document tries to plant; the test checks it never shows up on `{}`. */
export const POLLUTION_MARK = 'cilFuzzPolluted';

const STRINGS = [
  '',
  ' ',
  'tiny',
  'tiny-svd',
  'demo',
  '../../etc/passwd',
  '/etc/passwd',
  'statistics/../../jobs/x',
  '%2e%2e/%2e%2e',
  'a\\b',
  '\u0000',
  'nul\u0000byte',
  '\u202eevil', // right-to-left override
  '\u200b', // zero-width space
  '\ufeff', // BOM
  '\ud800', // lone high surrogate
  '\udc00x', // lone low surrogate
  '😀'.repeat(3),
  'ｔｉｎｙ', // full-width lookalike of 'tiny'
  'mp4',
  'gif',
  'webp',
  'png-frames',
  'latent-npy',
  'paper',
  'reference',
  'NaN',
  'Infinity',
  '1e999',
  'true',
  'null',
  '{"model":"tiny"}',
  '<script>alert(1)</script>',
];

const NUMBERS = [0, -0, 1, -1, 0.5, 1.5, 7.5, 25, 50, 64, 255, 256, 940, 999.5, 1000, 1001, 2 ** 31, 2 ** 48, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, -(2 ** 63), 1e308, -1e308, 5e-324, 1e-7];

export function randomString(rng: FuzzRng): string {
  switch (rng.int(6)) {
    case 0: {
      // Random code units, surrogates and controls included.
      const n = rng.skewedLength(200);
      let s = '';
      for (let i = 0; i < n; i++) s += String.fromCharCode(rng.chance(0.7) ? rng.range(0x20, 0x7e) : rng.int(0x10000));
      return s;
    }
    case 1:
      // Huge: past the prompt limit, sometimes far past it.
      return rng.pick(['p', 'é', '😀', '\u0000', 'a"b\\']).repeat(rng.chance(0.8) ? rng.range(1990, 2010) : rng.range(10_000, 300_000));
    default:
      return rng.pick(STRINGS);
  }
}

function randomNumber(rng: FuzzRng): number {
  return rng.chance(0.6) ? rng.pick(NUMBERS) : (rng.u32() - 2 ** 31) / rng.pick([1, 1, 3, 1000, 2 ** 20]);
}

function randomKey(rng: FuzzRng): string {
  const r = rng.int(10);
  if (r < 5) return rng.pick(JOB_REQUEST_FIELDS);
  if (r < 7) return rng.pick(POLLUTION_KEYS);
  return randomString(rng).slice(0, 64);
}

/** Any JSON value, nesting up to `depth`. */
export function randomJson(rng: FuzzRng, depth = 4): unknown {
  const r = rng.int(depth > 0 ? 10 : 6);
  switch (r) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
    case 3:
      return randomNumber(rng);
    case 4:
    case 5:
      return randomString(rng);
    case 6:
    case 7: {
      const n = rng.skewedLength(12);
      return Array.from({ length: n }, () => randomJson(rng, depth - 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      const n = rng.skewedLength(12);
      // defineProperty: `o[k] = v` with k '__proto__' would set the prototype instead of a key.
      for (let i = 0; i < n; i++) Object.defineProperty(o, randomKey(rng), { value: randomJson(rng, depth - 1), enumerable: true, writable: true, configurable: true });
      return o;
    }
  }
}

/** A plausible value for a request field: often valid, often at or just past an edge. */
function fieldValue(rng: FuzzRng, field: string): unknown {
  if (rng.chance(0.3)) return randomJson(rng, 2);
  switch (field) {
    case 'model':
      return rng.pick(['tiny', 'tiny-svd', 'tiny', 'demo', 'missing', 'TINY', '..', 'tiny/../x', '']);
    case 'prompt':
      return rng.chance(0.7) ? rng.pick(['', 'a cat', 'a cat\u0000 dog', '\u202e', 'p'.repeat(2000)]) : randomString(rng);
    case 'outputs':
      return rng.chance(0.5)
        ? ['mp4', 'gif', 'webp', 'png-frames', 'latent-npy'].filter(() => rng.chance(0.5))
        : rng.pick([[], ['mp4', 'mp4'], 'mp4', [null], ['MP4']]);
    case 'compat':
      return rng.pick(['paper', 'reference', 'Paper', null]);
    case 'analyticInit':
      return rng.pick([true, false, null, 'true', 0]);
    case 'statistics':
      return rng.pick(['tiny-stats', 'tiny-stats.safetensors', 'sub/dir/x', '../x', '/abs', '%2e%2e', 'a\\b', null, '']);
    default:
      return rng.chance(0.7) ? randomNumber(rng) : rng.pick([null, true, '5']);
  }
}

/** A request object: random fields, or a valid one with a few fields swapped for hostile values. */
export function randomRequest(rng: FuzzRng): unknown {
  const r = rng.int(10);
  if (r < 2) return randomJson(rng, 5);
  const o: Record<string, unknown> = r < 6 ? { model: rng.pick(['tiny', 'tiny-svd']) } : {};
  const n = rng.range(0, 5);
  for (let i = 0; i < n; i++) {
    const field = rng.chance(0.9) ? rng.pick(JOB_REQUEST_FIELDS) : rng.pick(POLLUTION_KEYS);
    const v = field === '__proto__' ? { [POLLUTION_MARK]: true, model: 'evil' } : fieldValue(rng, field);
    Object.defineProperty(o, field, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return o;
}

/** Deeply nested text, far past any recursive parser's stack. */
function deepText(rng: FuzzRng): string {
  const depth = rng.range(1000, 200_000);
  return rng.chance(0.5) ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"model":'.repeat(depth)}1${'}'.repeat(depth)}`;
}

/** Text-level damage to a JSON text. */
function damage(rng: FuzzRng, text: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  switch (rng.int(7)) {
    case 0:
      return b.subarray(0, rng.int(b.length + 1));
    case 1: {
      // Invalid UTF-8: overlong '.', a lone continuation byte, 0xFF.
      const bad = rng.pick([Buffer.from([0xc0, 0xae]), Buffer.from([0x80]), Buffer.from([0xff]), Buffer.from([0xed, 0xa0, 0x80])]);
      const at = rng.int(b.length + 1);
      return Buffer.concat([b.subarray(0, at), bad, b.subarray(at)]);
    }
    case 2:
      return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), b]); // BOM
    case 3: {
      const c = Buffer.from(b);
      for (let i = 0; i < 4 && c.length > 0; i++) c[rng.int(c.length)] = rng.pick([0x22, 0x5c, 0x7b, 0x7d, 0x2c, 0x00, 0x20]);
      return c;
    }
    case 4:
      return Buffer.from(rng.pick(['{"steps": NaN}', '{"steps": Infinity}', '{"model":"tiny",}', "{'model':'tiny'}", '{"model":"tiny"} // c', '{"model":"tiny"}{"model":"x"}', '{"model":"tiny","model":"tiny-svd"}', '']));
    case 5:
      return Buffer.from(`${text}${' '.repeat(rng.range(0, 3))}\n`.repeat(rng.range(1, 3)));
    default:
      return Buffer.from(`{"model":"tiny","__proto__":{"${POLLUTION_MARK}":true},"constructor":{"prototype":{"${POLLUTION_MARK}":true}}}`);
  }
}

/** Sidecar bytes: JSON of a random request, damaged text, deep nesting, or something over 1 MiB. */
export function randomSidecar(rng: FuzzRng): { bytes: Buffer; what: string } {
  const r = rng.int(100);
  if (r < 3) return { bytes: Buffer.from(deepText(rng)), what: 'deep nesting' };
  if (r < 5) return { bytes: Buffer.alloc(1024 * 1024 + rng.range(1, 4096), 0x20), what: 'over 1 MiB' };
  const text = JSON.stringify(randomRequest(rng)) ?? 'null';
  if (r < 25) return { bytes: damage(rng, text), what: 'damaged text' };
  return { bytes: Buffer.from(text, 'utf8'), what: 'json' };
}
