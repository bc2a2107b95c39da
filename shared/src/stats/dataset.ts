/**
 * Which videos a statistics run uses, and where in each video its clip starts: sorted ids, the
 * dataset hash, deterministic sharding and clip placement, and the record of skipped videos.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

// ---------------------------------------------------------------------------------------------
// Sharding and clip placement.

/** Sorts ids by Unicode code point (the order is part of the run: shards and resume depend on it). */
export function sortIds(ids: Iterable<string>): string[] {
  return [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** SHA-256 (hex) of the sorted id list: shards and resumes must see the same listing. */
export function datasetHash(sortedIds: readonly string[]): string {
  const h = createHash('sha256');
  for (const id of sortedIds) h.update(id).update('\u0000');
  return h.digest('hex');
}

/** The ids shard `index` of `count` processes: every count-th of the sorted list (balanced, disjoint, covering). */
export function shardIds(sortedIds: readonly string[], index: number, count: number): string[] {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
    throw new RangeError(`shard ${index}/${count}: need an integer count ≥ 1 and 0 ≤ index < count`);
  }
  const out: string[] = [];
  for (let i = index; i < sortedIds.length; i += count) out.push(sortedIds[i]);
  return out;
}

/** A uniform number in [0, 1) from (seed, video id): every shard and rerun places a video's clip alike. */
export function clipFraction(seed: number, id: string): number {
  const b = createHash('sha256').update(`cil-stats-clip/1\u0000${seed}\u0000${id}`).digest();
  return b.readUIntBE(0, 6) / 2 ** 48;
}

/** First frame (on the model-fps grid) of a `frames`-long clip in a video with `available` such frames. */
export function clipStartIndex(seed: number, id: string, available: number, frames: number): number {
  if (available < frames) throw new RangeError(`clip of ${frames} frames does not fit in ${available}`);
  return Math.floor(clipFraction(seed, id) * (available - frames + 1));
}

// ---------------------------------------------------------------------------------------------
// Skips.

/** Why a video was not counted. */
export const SKIP_KINDS = {
  'no-decode': 'do not decode',
  'no-video': 'have no video stream',
  'zero-size': 'have zero-size frames',
  'too-short': 'are shorter than the clip',
  'few-frames': 'decoded fewer frames than the clip',
  'non-finite': 'encode to non-finite latents',
} as const;
export type SkipKind = keyof typeof SKIP_KINDS;
export const SkipRecord = z.strictObject({
  id: z.string().min(1),
  kind: z.enum(Object.keys(SKIP_KINDS) as [SkipKind, ...SkipKind[]]),
  reason: z.string(),
});
export type SkipRecord = z.infer<typeof SkipRecord>;

/** `N used, K skipped: 2 are shorter than the clip, 1 does not decode`. */
export function usageSummary(used: number, skipped: readonly SkipRecord[]): string {
  if (skipped.length === 0) return `${used} used, 0 skipped`;
  const counts = new Map<SkipKind, number>();
  for (const s of skipped) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  const parts = [...counts.entries()]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([k, c]) => `${c} ${c === 1 ? singular(SKIP_KINDS[k]) : SKIP_KINDS[k]}`);
  return `${used} used, ${skipped.length} skipped: ${parts.join(', ')}`;
}

function singular(phrase: string): string {
  return phrase.replace(/^do not/, 'does not').replace(/^have/, 'has').replace(/^are/, 'is').replace(/^encode/, 'encodes').replace(/^decoded/, 'decoded');
}
