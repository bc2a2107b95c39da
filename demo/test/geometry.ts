/** The default demo model's geometry, as its tests use it (pixels, latent, path set). */
import { DEMO_DEFAULTS } from '../src/bundle.ts';
import { DOWNSAMPLE } from '../src/graphs.ts';
import { LATENT_CHANNELS } from '../src/paths.ts';

export const H = DEMO_DEFAULTS.height;
export const W = DEMO_DEFAULTS.width;
export const F = DEMO_DEFAULTS.frames;
export const h = H / DOWNSAMPLE;
export const w = W / DOWNSAMPLE;
export const C = LATENT_CHANNELS;
export const HW = h * w;
/** Elements of one video latent [C, F, h, w]. */
export const N = C * F * HW;
export const SPEEDS = DEMO_DEFAULTS.speeds;
export const GEOM = { h, w, frames: F, paths: DEMO_DEFAULTS.paths, speeds: SPEEDS };
