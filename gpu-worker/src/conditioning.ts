/**
 * The encoder and UNet plumbing every family adapter (families/) builds on: text and image
 * encoders, the VAE's image latent, and the UNet as a `BranchedModel` for the shared sampler. The
 * UNet runs every requested branch as ONE call with batch = number of branches when its batch
 * axis is dynamic, else one call per branch.
 */
import { join } from 'node:path';
import type { BranchName, BranchedModel, Branches, DenoiserInput } from '#shared/sampler';
import { tensor } from '#shared/sampler';
import type { Tensor } from '#shared/sampler';
import type { Manifest } from '#shared/schemas';
import type { Bundle } from './bundle.ts';
import type { Binding, BoundBuffer, BoundSpec, OnnxSessions } from './runtime/sessions.ts';
import { loadTokenizer } from './tokenizer.ts';

export const concat = (parts: readonly Float32Array[]): Float32Array => {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

/** Whether a component's first input has a symbolic (dynamic) batch axis. */
export function batchable(sessions: OnnxSessions, component: string): boolean {
  return typeof sessions.info(component).inputs[0].shape[0] === 'string';
}

/** Splits a [B, …] output into B tensors of [1, …] (views, not copies). */
function splitBatch(t: Tensor, n: number, dims: readonly number[]): Tensor[] {
  const per = t.data.length / n;
  return Array.from({ length: n }, (_, b) => tensor(t.data.subarray(b * per, (b + 1) * per), dims, `unet.out[${b}]`));
}

/**
 * The UNet's feeds for one batch of branches, kept in shared memory for the whole job: `init`
 * writes what never changes (the conditioning context, the image latent, the frame rate) once,
 * `step` what each step changes (the latent, the time). Zero copies per step beyond the latent
 * itself into its batch slots.
 */
export interface UnetBatch {
  readonly specs: Readonly<Record<string, BoundSpec>>;
  init(feeds: Readonly<Record<string, BoundBuffer>>): void;
  step(feeds: Readonly<Record<string, BoundBuffer>>, input: DenoiserInput): void;
}

/** Writes `v` (an integer-valued time or rate) into every slot of an int64 feed. */
export function fillInts(b: BoundBuffer, v: number): void {
  (b as BigInt64Array).fill(BigInt(Math.round(v)));
}

/**
 * Runs the UNet over the requested branches; `batchFor(branches)` lays out the batched feeds,
 * bound once per set of branches at its first step. Batch-2 (or 3) when possible, else one call
 * per branch.
 */
export function branchedUnet(
  sessions: OnnxSessions,
  latentDims: readonly number[],
  batchFor: (branches: readonly BranchName[]) => UnetBatch,
): { model: BranchedModel; unetCalls: (n: number) => number } {
  const oneCall = batchable(sessions, 'unet');
  const bound = new Map<string, { batch: UnetBatch; binding: Binding }>();
  const bindingFor = async (g: readonly BranchName[]) => {
    const key = g.join(',');
    let b = bound.get(key);
    if (!b) {
      const batch = batchFor(g);
      const binding = await sessions.bind('unet', batch.specs);
      batch.init(binding.inputs);
      b = { batch, binding };
      bound.set(key, b);
    }
    return b;
  };
  const model: BranchedModel = async (input, branches) => {
    const groups = oneCall ? [branches] : branches.map((b) => [b]);
    const out: Branches = {};
    for (const g of groups) {
      const { batch, binding } = await bindingFor(g);
      batch.step(binding.inputs, input);
      const r = await sessions.runBound(binding, input.signal);
      const o = r.out;
      if (!o) throw new Error('unet produced no output named "out"');
      if (o.data.length !== g.length * latentDims.reduce((a, b) => a * b, 1)) {
        throw new Error(`unet output 'out' has dims [${o.dims.join(', ')}], expected [${g.length}, ${latentDims.slice(1).join(', ')}]`);
      }
      splitBatch(o, g.length, latentDims).forEach((t, i) => (out[g[i]] = t));
    }
    return out;
  };
  return { model, unetCalls: (n) => (oneCall ? 1 : n) };
}

/** The VAE encoder's latent of one image, [1, C, h, w] (not yet multiplied by the scale factor). */
export async function encodeImageLatent(sessions: OnnxSessions, image: Tensor, m: Manifest): Promise<Tensor> {
  const r = await sessions.run('vae_encoder', { image });
  const lat = r.latent;
  const h = m.resolution.height / m.latent.downsample;
  const w = m.resolution.width / m.latent.downsample;
  if (lat.data.length !== m.latent.channels * h * w) {
    throw new Error(`vae_encoder output 'latent' has dims [${lat.dims.join(', ')}], expected [1, ${m.latent.channels}, ${h}, ${w}]`);
  }
  return lat;
}

/** The text encoder's embedding of each prompt, tokenised with the bundle's tokenizer. */
export async function textEmbeds(bundle: Bundle, sessions: OnnxSessions, prompts: readonly string[]): Promise<Tensor[]> {
  const m = bundle.manifest;
  if (!m.tokenizer) throw new Error(`${bundle.source}: manifest has no tokenizer`);
  const tok = await loadTokenizer(join(bundle.root, m.tokenizer.file), m.tokenizer.maxLength);
  const out: Tensor[] = [];
  for (const p of prompts) {
    const ids = tok.encode(p);
    const r = await sessions.run('text_encoder', { input_ids: { ints: ids, dims: [1, ids.length] } });
    out.push(r.text_embeds);
  }
  return out;
}
