/**
 * Hostile upload keys: path traversal in every spelling (plain, percent-encoded once and twice,
 * overlong UTF-8, backslashes, Unicode lookalikes of '.' and '/', NUL), absolute keys, empty and
 * hidden segments, other prefixes, and random compositions of those pieces.
 */
import type { FuzzRng } from './rng.ts';

/** Hand-picked tricks: each must be refused (the test asserts every one, not a sample). */
export const PATH_TRICKS: readonly string[] = [
  'inputs/../jobs/x.png',
  'inputs/../../etc/passwd.png',
  'inputs/a/../../outputs/x.png',
  'inputs/./x.png',
  'inputs/.hidden.png',
  'inputs//x.png',
  'inputs/x.png/',
  '/inputs/x.png',
  'inputs/',
  'inputs/.png',
  'inputs/..png/../x.png',
  '../inputs/x.png',
  'jobs/j-000000000000000000000000/input.png',
  'outputs/x.png',
  'failures/x.png',
  'models/tiny/x.png',
  'INPUTS/x.png',
  'inputs\\..\\jobs\\x.png',
  'inputs/..\\x.png',
  'inputs/%2e%2e/jobs/x.png',
  'inputs/%2E%2E/x.png',
  'inputs/%2e%2e%2fjobs%2fx.png',
  'inputs%2f..%2fjobs%2fx.png',
  '%2finputs/x.png',
  'inputs/%252e%252e/x.png',
  'inputs/%c0%ae%c0%ae/x.png',
  'inputs/%c0%af/x.png',
  'inputs/%e0%80%ae/x.png',
  'inputs/%00.png',
  'inputs/x.png%00.jpg',
  'inputs/x\u0000.png',
  'inputs/x.png\u0000',
  'inputs/\u2024\u2024/x.png', // ONE DOT LEADER
  'inputs/\uff0e\uff0e/x.png', // FULLWIDTH FULL STOP
  'inputs/..\u2215x.png', // DIVISION SLASH
  'inputs/..\uff0fx.png', // FULLWIDTH SOLIDUS
  'inputs/x\u202egnp.exe', // right-to-left override
  'inputs/\u0130.png', // dotted capital I (case-folding tricks)
  'inputs/x.png\r\n',
  'inputs/x .png',
  'inputs/+..+/x.png',
  'inputs/%',
  'inputs/%zz.png',
  'inputs/%e2%80%ae.png',
  'inputs/x.PNG/..',
  'inputs/x.exe',
  'inputs/x.png.json',
  'inputs/x.svg',
  's3://bucket/inputs/x.png',
  'file:///etc/passwd.png',
  'inputs/' + 'a/'.repeat(600) + 'x.png',
  'inputs/' + 'a'.repeat(5000) + '.png',
];

const PIECES = [
  'inputs/',
  'batches/',
  'jobs/',
  'outputs/',
  '/',
  '//',
  '\\',
  '.',
  '..',
  '...',
  '%2e',
  '%2E',
  '%2f',
  '%2F',
  '%5c',
  '%25',
  '%00',
  '%c0%ae',
  '+',
  ' ',
  '\u0000',
  '\u2024',
  '\uff0e',
  '\u2215',
  '\uff0f',
  '\u00a0',
  'a',
  'cat',
  'x-1_2',
  'Z9',
  '.png',
  '.jpg',
  '.jpeg',
  '.webp',
  '.PNG',
  '.json',
];

/** A random composition of path pieces, usually under inputs/ and ending like an image. */
export function randomKey(rng: FuzzRng): string {
  if (rng.chance(0.03)) {
    // Safe segments around S3's 1024-byte key limit.
    const total = rng.range(1015, 1040);
    const prefix = rng.pick(['inputs/', 'batches/']);
    return `${prefix}${'a'.repeat(total - prefix.length - 4)}.png`;
  }
  if (rng.chance(0.25)) {
    // Mostly safe: the accepting side of the rule gets exercised too.
    let k = rng.pick(['inputs/', 'inputs/', 'batches/']);
    const n = rng.range(1, 4);
    for (let i = 0; i < n; i++) k += `${rng.pick(['a', 'cat', 'x-1_2', 'Z9', 'a.b', '0'])}${i < n - 1 ? '/' : ''}`;
    return k + rng.pick(['.png', '.jpg', '.webp', '.jpeg', '.PNG', '.Jpg', '.gif', '']);
  }
  let k = rng.chance(0.8) ? rng.pick(['inputs/', 'inputs/', 'batches/']) : '';
  const n = rng.range(1, 8);
  for (let i = 0; i < n; i++) k += rng.pick(PIECES);
  if (rng.chance(0.7)) k += rng.pick(['.png', '.jpg', '.webp', '.jpeg', '.PNG']);
  return k;
}

/** The same key encoded as S3 notifications do (`encodeURIComponent`, '/' kept, space as '+'), sometimes twice. */
export function encodeLikeS3(rng: FuzzRng, key: string): string {
  const once = (s: string): string => s.split('/').map((seg) => encodeURIComponent(seg).replace(/%20/g, '+')).join('/');
  let out: string;
  try {
    out = once(key);
    if (rng.chance(0.2)) out = once(out);
  } catch {
    // encodeURIComponent refuses lone surrogates: keep the raw key.
    out = key;
  }
  return out;
}
