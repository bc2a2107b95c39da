/**
 * What a model family is to the worker: one adapter per family (vp.ts, svd.ts), listed in the
 * table of index.ts. The generic job (generate.ts) knows nothing about families beyond this
 * interface; adding a family means one adapter file and a table row (plus its row in the defaults
 * table of #shared/sampler).
 */
import type { BranchedModel, FamilyName, GuidedDenoiser, NormalGenerator, Tensor } from '#shared/sampler';
import type { Manifest } from '#shared/schemas';
import type { Bundle } from '../bundle.ts';
import type { GenerateParams } from '../params.ts';
import type { OnnxSessions } from '../runtime/sessions.ts';
import type { LatentAxes, LatentLayout } from './layout.ts';

export interface EncodeInput {
  readonly bundle: Bundle;
  readonly sessions: OnnxSessions;
  /** The input image, [1, 3, H, W] in [−1, 1] at the model resolution. */
  readonly image: Tensor;
  readonly params: GenerateParams;
  /** The job's seeded generator: noise drawn while encoding comes first in its stream (docs/rng.md). */
  readonly gen: NormalGenerator;
}

/** The encoded conditioning: the UNet as a branched model for the sampler. */
export interface Conditioned {
  readonly model: BranchedModel;
  /** UNet calls per step for a given number of branches (1 when the UNet takes them as one batch). */
  unetCalls(branches: number): number;
  /** Time (ms) the encoders took. */
  readonly encodeMs: number;
}

export interface Guided {
  readonly denoiser: GuidedDenoiser;
  /** Branches the denoiser asks of the UNet each step. */
  readonly branches: number;
}

export interface FamilyAdapter {
  readonly name: FamilyName;
  /** The axis order of the sampler's latent. */
  readonly layout: LatentLayout;
  /** Runs the encoders once and returns the UNet with the family's feeds. */
  condition(i: EncodeInput): Promise<Conditioned>;
  /** The family's guidance over the branched model. */
  guidance(p: GenerateParams, model: BranchedModel): Guided;
  /**
   * Frames per vae_decoder call when its batch axis is dynamic: `chunk` for a per-frame VAE, or all
   * `frames` for a decoder that mixes the frames of one call.
   */
  decodeBatch(frames: number, chunk: number): number;
  /** The key names of the authors' published statistics files (`cil stats import`). */
  readonly authorStatistics: { readonly expectation: string; readonly trCovD: string };
}

/** The latent's axes for `frames` frames of a model. */
export function latentAxesOf(m: Manifest, frames: number): LatentAxes {
  return { channels: m.latent.channels, frames, h: m.resolution.height / m.latent.downsample, w: m.resolution.width / m.latent.downsample };
}
