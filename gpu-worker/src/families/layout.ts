/**
 * The axis order of a family's latent: DynamiCrafter and VideoCrafter1 sample [1, C, F, h, w]
 * (channels first), SVD [1, F, C, h, w] (frames first). Generation, decoding, statistics and their
 * import all place a (channel, frame) plane through this, so the layout is worked out once.
 */
export interface LatentAxes {
  readonly channels: number;
  readonly frames: number;
  readonly h: number;
  readonly w: number;
}

export interface LatentLayout {
  /** The axis names without the batch axis, in order. */
  readonly axisNames: readonly string[];
  /** The latent's dims with a batch axis of 1. */
  dims(a: LatentAxes): number[];
  /** The axes of dims [C|F, F|C, h, w] with or without a leading batch axis of 1; null for any other rank. */
  axes(dims: readonly number[]): LatentAxes | null;
  /** Index of the (channel c, frame f) plane of h·w values, counted in planes. */
  plane(c: number, f: number, a: Pick<LatentAxes, 'channels' | 'frames'>): number;
}

function batchFree(dims: readonly number[]): readonly number[] | null {
  const r = dims.length;
  return r === 4 || (r === 5 && dims[0] === 1) ? dims.slice(r - 4) : null;
}

export const CHANNELS_FIRST: LatentLayout = Object.freeze({
  axisNames: ['C', 'F', 'h', 'w'],
  dims: (a: LatentAxes) => [1, a.channels, a.frames, a.h, a.w],
  axes: (dims: readonly number[]) => {
    const d = batchFree(dims);
    return d ? { channels: d[0], frames: d[1], h: d[2], w: d[3] } : null;
  },
  plane: (c: number, f: number, a: Pick<LatentAxes, 'channels' | 'frames'>) => c * a.frames + f,
});

export const FRAMES_FIRST: LatentLayout = Object.freeze({
  axisNames: ['F', 'C', 'h', 'w'],
  dims: (a: LatentAxes) => [1, a.frames, a.channels, a.h, a.w],
  axes: (dims: readonly number[]) => {
    const d = batchFree(dims);
    return d ? { frames: d[0], channels: d[1], h: d[2], w: d[3] } : null;
  },
  plane: (c: number, f: number, a: Pick<LatentAxes, 'channels' | 'frames'>) => f * a.channels + c,
});
