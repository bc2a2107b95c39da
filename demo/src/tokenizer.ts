/**
 * The demo model's text side: a tiny word-level vocabulary, its tokenizer.json (Hugging Face
 * `tokenizers` format) and the text encoder's embedding table.
 *
 * The tokenizer is a WordPiece model whose vocabulary has no `##` continuation pieces, which makes
 * it word-level: a known word is one token, anything else is [UNK]. WordPiece rather than the
 * `WordLevel` model type because @huggingface/tokenizers (the JS port the worker uses) has no
 * WordLevel model and would fall back to a model that ignores the tokenizer's own unk_token;
 * WordPiece behaves the same in the Rust library and the JS port. Lower-case normaliser,
 * whitespace/punctuation pre-tokenizer, no special tokens added; `padding` and `truncation` say
 * "exactly 77 ids, [PAD] = 0" (the Rust library applies them; the JS port does not, and the
 * worker's loadTokenizer pads with padding.pad_id to the manifest's tokenizer.maxLength).
 */
import { NormalGenerator } from '#shared/sampler';
import { TEXT_LENGTH } from '#shared/schemas';
import { MOTION_WORDS } from './paths.ts';
import type { MotionWord } from './paths.ts';

/** Text (and image) embedding width. */
export const EMBED_DIM = 16;
/** Embedding dims ≥ IDENTITY_DIM carry a fixed pseudo-random word identity; below it, motion words. */
export const IDENTITY_DIM = 8;
export const PAD_TOKEN = '[PAD]';
export const UNK_TOKEN = '[UNK]';
export const PAD_ID = 0;
export const UNK_ID = 1;

/**
 * Words that put weight on the motion dims (MOTION_WORDS): synonyms share a vector. "pan" and
 * "zoom" spread half a word over their directions, so "pan left" and "zoom in" name one direction
 * more strongly than "left" or "in" alone. The demo has one turning motion, the orbit, so
 * rotate and spin name it too.
 */
const MOTION_SYNONYMS: Readonly<Record<string, Readonly<Partial<Record<MotionWord, number>>>>> = {
  left: { left: 1 },
  leftward: { left: 1 },
  leftwards: { left: 1 },
  right: { right: 1 },
  rightward: { right: 1 },
  rightwards: { right: 1 },
  up: { up: 1 },
  upward: { up: 1 },
  upwards: { up: 1 },
  down: { down: 1 },
  downward: { down: 1 },
  downwards: { down: 1 },
  in: { in: 1 },
  out: { out: 1 },
  pan: { left: 0.5, right: 0.5, up: 0.5, down: 0.5 },
  pans: { left: 0.5, right: 0.5, up: 0.5, down: 0.5 },
  panning: { left: 0.5, right: 0.5, up: 0.5, down: 0.5 },
  tilt: { up: 0.5, down: 0.5 },
  tilts: { up: 0.5, down: 0.5 },
  tilting: { up: 0.5, down: 0.5 },
  zoom: { in: 0.5, out: 0.5 },
  zooms: { in: 0.5, out: 0.5 },
  zooming: { in: 0.5, out: 0.5 },
  orbit: { orbit: 1 },
  orbits: { orbit: 1 },
  orbiting: { orbit: 1 },
  arc: { orbit: 1 },
  around: { orbit: 1 },
  circle: { orbit: 1 },
  circles: { orbit: 1 },
  circling: { orbit: 1 },
  rotate: { orbit: 1 },
  rotates: { orbit: 1 },
  rotating: { orbit: 1 },
  spin: { orbit: 1 },
  spins: { orbit: 1 },
  spinning: { orbit: 1 },
};

const OTHER_WORDS = [
  'move', 'moves', 'moving', 'camera', 'slow', 'slowly', 'fast', 'quickly', 'still', 'static',
  'a', 'an', 'the', 'of', 'and', 'with', 'on', 'at', 'to', 'from', 'is', 'are', 'over', 'under', 'through', 'across', 'toward', 'towards', 'by',
  'cat', 'dog', 'bird', 'horse', 'fish', 'person', 'man', 'woman', 'child', 'people', 'car', 'boat', 'train', 'tree', 'trees', 'flower',
  'flowers', 'grass', 'sky', 'cloud', 'clouds', 'sun', 'moon', 'stars', 'water', 'sea', 'ocean', 'river', 'lake', 'waves', 'beach',
  'mountain', 'mountains', 'forest', 'city', 'street', 'road', 'building', 'house', 'field', 'snow', 'rain', 'fire', 'smoke', 'light',
  'night', 'day', 'sunset', 'red', 'green', 'blue', 'yellow', 'white', 'black', 'small', 'big', 'beautiful', 'bright', 'dark',
];

/** The vocabulary in id order: [PAD], [UNK], motion words, other words. */
export const VOCAB: readonly string[] = Object.freeze([PAD_TOKEN, UNK_TOKEN, ...Object.keys(MOTION_SYNONYMS), ...OTHER_WORDS]);

/** Seed of the word-identity embeddings (any fixed value; changing it changes the bundle bytes). */
const EMBED_SEED = 20240917;
const IDENTITY_SCALE = 0.5;

/**
 * The text encoder's table [VOCAB.length, EMBED_DIM]: [PAD] is all zeros (an empty prompt embeds
 * to zeros); a motion word has its MOTION_SYNONYMS vector in the motion dims (MOTION_WORDS order); every other token has a
 * fixed pseudo-random identity in dims IDENTITY_DIM…EMBED_DIM−1.
 */
export function embeddingTable(): Float32Array {
  const V = VOCAB.length;
  const table = new Float32Array(V * EMBED_DIM);
  const gen = NormalGenerator.fromSeed(EMBED_SEED);
  const ident = new Float32Array(EMBED_DIM - IDENTITY_DIM);
  for (let id = 0; id < V; id++) {
    gen.fill(ident);
    if (id === PAD_ID) continue;
    for (let j = 0; j < ident.length; j++) table[id * EMBED_DIM + IDENTITY_DIM + j] = IDENTITY_SCALE * ident[j];
    const motion = MOTION_SYNONYMS[VOCAB[id]];
    if (motion !== undefined) for (const [dim, v] of Object.entries(motion)) table[id * EMBED_DIM + MOTION_WORDS.indexOf(dim as MotionWord)] = v;
  }
  return table;
}

/** tokenizer.json (Hugging Face `tokenizers` format) as a plain object. */
export function tokenizerJson(): Record<string, unknown> {
  const special = (id: number, content: string): Record<string, unknown> => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const vocab: Record<string, number> = {};
  VOCAB.forEach((w, i) => {
    vocab[w] = i;
  });
  return {
    version: '1.0',
    truncation: { direction: 'Right', max_length: TEXT_LENGTH, strategy: 'LongestFirst', stride: 0 },
    padding: { strategy: { Fixed: TEXT_LENGTH }, direction: 'Right', pad_to_multiple_of: null, pad_id: PAD_ID, pad_type_id: 0, pad_token: PAD_TOKEN },
    added_tokens: [special(PAD_ID, PAD_TOKEN), special(UNK_ID, UNK_TOKEN)],
    normalizer: { type: 'Lowercase' },
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: UNK_TOKEN, continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab },
  };
}
