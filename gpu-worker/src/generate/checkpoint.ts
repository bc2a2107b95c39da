/**
 * Checkpoint and resume: the latent after a step, the step count and the generator state, under
 * checkpoint/ of the output location. A checkpoint belongs to one job, named by a fingerprint of
 * everything that decides its output (bundle, parameters, image, statistics, initial noise), so a
 * rerun of the same job resumes bit-identically and any other job starts over.
 */
import { createHash } from 'node:crypto';
import { readNpy, writeNpy } from '#shared/formats';
import { tensor } from '#shared/sampler';
import type { GeneratorState, Tensor } from '#shared/sampler';
import type { OutputSink } from '../sink.ts';

export const CKPT_STATE = 'checkpoint/state.json';
export const CKPT_LATENT = 'checkpoint/latent.npy';

interface CheckpointState {
  readonly format: 'cil-checkpoint/1';
  readonly fingerprint: string;
  readonly completed: number;
  readonly generator: GeneratorState;
}

/** The sampler's position after `completed` steps. */
export interface Position {
  readonly completed: number;
  readonly x: Float32Array;
  readonly state: GeneratorState;
}

export interface Resume {
  readonly completed: number;
  readonly x: Tensor;
  readonly state: GeneratorState;
}

export interface FingerprintParts {
  readonly bundleHash: string;
  readonly params: unknown;
  readonly image: Uint8Array;
  readonly statistics: { readonly expectation: Float32Array; readonly trCovD: number } | null;
  readonly initNoise: Tensor | null;
}

export function fingerprint(p: FingerprintParts): string {
  const h = createHash('sha256');
  h.update(p.bundleHash).update(JSON.stringify(p.params)).update(p.image);
  if (p.statistics) h.update(p.statistics.expectation).update(String(p.statistics.trCovD));
  if (p.initNoise) h.update(p.initNoise.data);
  return h.digest('hex');
}

export class Checkpoints {
  private readonly sink: OutputSink;
  private readonly fp: string;
  private readonly latentDims: readonly number[];

  constructor(sink: OutputSink, fp: string, latentDims: readonly number[]) {
    this.sink = sink;
    this.fp = fp;
    this.latentDims = latentDims;
  }

  /** This job's checkpoint, or null when there is none (or it is another job's). */
  async read(): Promise<Resume | null> {
    const stateBytes = await this.sink.get(CKPT_STATE);
    if (!stateBytes) return null;
    const st = JSON.parse(Buffer.from(stateBytes).toString('utf8')) as CheckpointState;
    const lat = await this.sink.get(CKPT_LATENT);
    if (st.format !== 'cil-checkpoint/1' || st.fingerprint !== this.fp || !lat) return null;
    const x = readNpy(lat, `${this.sink.location}/${CKPT_LATENT}`).tensor;
    return { completed: st.completed, x: tensor(x.data, this.latentDims, 'checkpoint latent'), state: st.generator };
  }

  async write(c: Position): Promise<void> {
    await this.sink.put(CKPT_LATENT, writeNpy(tensor(c.x, this.latentDims, 'latent')), 'application/octet-stream');
    const st: CheckpointState = { format: 'cil-checkpoint/1', fingerprint: this.fp, completed: c.completed, generator: c.state };
    await this.sink.put(CKPT_STATE, Buffer.from(JSON.stringify(st)), 'application/json');
  }

  /** A finished job no longer needs its checkpoint. */
  async clear(): Promise<void> {
    await this.sink.delete(CKPT_STATE);
    await this.sink.delete(CKPT_LATENT);
  }
}
