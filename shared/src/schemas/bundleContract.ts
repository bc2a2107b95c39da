/**
 * The component contract of a model bundle, per family: which ONNX components a bundle must have
 * and the exact input/output tensor names, dtypes and ranks the worker feeds and reads. Real
 * exports (tools/export) and the demo model (`cil demo-model`) both meet it; the worker checks every
 * ONNX session against it before the first step. Symbolic dims: batch, frames, height, width
 * (pixels), h, w (latent = pixels / downsample), C (latent channels), C2 (2·C), tokens, ctx
 * (text + image tokens), dim. Documented in docs/bundles.md.
 */
import type { Family } from './family.ts';

export type Dtype = 'float32' | 'float16' | 'int64' | 'int32';
export interface ContractTensor {
  readonly name: string;
  /** Accepted dtypes at the graph boundary (float16 graphs are converted at the boundary). */
  readonly dtypes: readonly Dtype[];
  readonly dims: readonly (string | number)[];
}
export interface ContractComponent {
  readonly inputs: readonly ContractTensor[];
  readonly outputs: readonly ContractTensor[];
}

const F: readonly Dtype[] = ['float32', 'float16'];
const I: readonly Dtype[] = ['int64', 'int32'];

export const TEXT_LENGTH = 77;
export const CLIP_SIZE = 224;

const vaeEncoder: ContractComponent = {
  inputs: [{ name: 'image', dtypes: F, dims: ['batch', 3, 'height', 'width'] }],
  outputs: [{ name: 'latent', dtypes: F, dims: ['batch', 'C', 'h', 'w'] }],
};
const vaeDecoder: ContractComponent = {
  inputs: [{ name: 'latent', dtypes: F, dims: ['batch', 'C', 'h', 'w'] }],
  outputs: [{ name: 'image', dtypes: F, dims: ['batch', 3, 'height', 'width'] }],
};
const textEncoder: ContractComponent = {
  inputs: [{ name: 'input_ids', dtypes: I, dims: ['batch', TEXT_LENGTH] }],
  outputs: [{ name: 'text_embeds', dtypes: F, dims: ['batch', TEXT_LENGTH, 'dim'] }],
};
const imageEncoderTokens: ContractComponent = {
  inputs: [{ name: 'image', dtypes: F, dims: ['batch', 3, CLIP_SIZE, CLIP_SIZE] }],
  outputs: [{ name: 'image_embeds', dtypes: F, dims: ['batch', 'tokens', 'dim'] }],
};

/** DynamiCrafter and VideoCrafter1 share every component but the UNet's latent channels and frame-rate input. */
function vpComponents(xChannels: 'C' | 'C2', frameRateInput: 'fs' | 'fps'): Readonly<Record<string, ContractComponent>> {
  return {
    unet: {
      inputs: [
        { name: 'x', dtypes: F, dims: ['batch', xChannels, 'frames', 'h', 'w'] },
        { name: 'timestep', dtypes: I, dims: ['batch'] },
        { name: 'context', dtypes: F, dims: ['batch', 'ctx', 'dim'] },
        { name: frameRateInput, dtypes: I, dims: ['batch'] },
      ],
      outputs: [{ name: 'out', dtypes: F, dims: ['batch', 'C', 'frames', 'h', 'w'] }],
    },
    vae_encoder: vaeEncoder,
    vae_decoder: vaeDecoder,
    text_encoder: textEncoder,
    image_encoder: imageEncoderTokens,
  };
}

export const BUNDLE_CONTRACT: Readonly<Record<Family, Readonly<Record<string, ContractComponent>>>> = {
  // DynamiCrafter concatenates the image latent to x (C2 = 2C) and takes the frame stride `fs`.
  dynamicrafter: vpComponents('C2', 'fs'),
  videocrafter: vpComponents('C', 'fps'),
  svd: {
    unet: {
      inputs: [
        { name: 'sample', dtypes: F, dims: ['batch', 'frames', 'C2', 'h', 'w'] },
        { name: 'timestep', dtypes: F, dims: ['batch'] },
        { name: 'encoder_hidden_states', dtypes: F, dims: ['batch', 1, 'dim'] },
        { name: 'added_time_ids', dtypes: F, dims: ['batch', 3] },
      ],
      outputs: [{ name: 'out', dtypes: F, dims: ['batch', 'frames', 'C', 'h', 'w'] }],
    },
    vae_encoder: vaeEncoder,
    vae_decoder: vaeDecoder,
    image_encoder: {
      inputs: [{ name: 'image', dtypes: F, dims: ['batch', 3, CLIP_SIZE, CLIP_SIZE] }],
      outputs: [{ name: 'image_embeds', dtypes: F, dims: ['batch', 1, 'dim'] }],
    },
  },
};
