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

/** The layout whose outer axis (after the batch axis) is channels ('C') or frames ('F'). */
function layout(outer: 'C' | 'F'): LatentLayout {
  const cf = outer === 'C';
  return Object.freeze({
    axisNames: cf ? ['C', 'F', 'h', 'w'] : ['F', 'C', 'h', 'w'],
    dims: (a: LatentAxes) => (cf ? [1, a.channels, a.frames, a.h, a.w] : [1, a.frames, a.channels, a.h, a.w]),
    axes: (dims: readonly number[]): LatentAxes | null => {
      const r = dims.length;
      if (!(r === 4 || (r === 5 && dims[0] === 1))) return null;
      const [a, b, h, w] = dims.slice(r - 4);
      return cf ? { channels: a, frames: b, h, w } : { channels: b, frames: a, h, w };
    },
    plane: (c: number, f: number, a: Pick<LatentAxes, 'channels' | 'frames'>) => (cf ? c * a.frames + f : f * a.channels + c),
  });
}

export const CHANNELS_FIRST: LatentLayout = layout('C');
export const FRAMES_FIRST: LatentLayout = layout('F');
