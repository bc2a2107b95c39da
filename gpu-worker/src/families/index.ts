/**
 * The family table: each model family's adapter (families/adapter.ts). A fourth family is one
 * adapter file (or, for another VP model, options to `vpFamily`) and a row here, next to its row
 * in the defaults table of #shared/sampler.
 */
import type { FamilyName } from '#shared/sampler';
import type { FamilyAdapter } from './adapter.ts';
import { SVD } from './svd.ts';
import { vpFamily } from './vp.ts';

export const FAMILY_ADAPTERS: Readonly<Record<FamilyName, FamilyAdapter>> = Object.freeze({
  dynamicrafter: vpFamily({ name: 'dynamicrafter', concatImageLatent: true, rateInput: 'fs', twoScaleGuidance: true }),
  videocrafter: vpFamily({ name: 'videocrafter', concatImageLatent: false, rateInput: 'fps', twoScaleGuidance: false }),
  svd: SVD,
});

export function familyAdapter(family: FamilyName): FamilyAdapter {
  return FAMILY_ADAPTERS[family];
}

export { latentAxesOf } from './adapter.ts';
export type { Conditioned, EncodeInput, FamilyAdapter, Guided } from './adapter.ts';
export { CHANNELS_FIRST, FRAMES_FIRST } from './layout.ts';
export type { LatentAxes, LatentLayout } from './layout.ts';
