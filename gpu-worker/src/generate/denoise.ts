/**
 * The denoising loop of a job: the shared sampler over the plan's steps, with progress, periodic
 * checkpoints, and on interruption (the signal) a last checkpoint and GenerationInterrupted.
 */
import { NormalGenerator, sample } from '#shared/sampler';
import type { GuidedDenoiser, StepCoefs, Tensor } from '#shared/sampler';
import type { Checkpoints, Position, Resume } from './checkpoint.ts';

/** A run stopped by its signal (SIGTERM: a Spot reclaim); a rerun resumes from the checkpoint. */
export class GenerationInterrupted extends Error {
  override readonly name = 'GenerationInterrupted';
  readonly step: number;
  readonly checkpointWritten: boolean;
  constructor(step: number, reason: string, checkpointWritten = true) {
    super(
      checkpointWritten
        ? `interrupted (${reason}) after step ${step}; checkpoint written, a rerun resumes from it`
        : `interrupted (${reason}) after step ${step}; no checkpoint written, a rerun resumes from the last periodic one or starts over`,
    );
    this.step = step;
    this.checkpointWritten = checkpointWritten;
  }
}

export interface DenoiseOptions {
  readonly steps: readonly StepCoefs[];
  /** x_M, used when not resuming. */
  readonly x0: Tensor;
  readonly resume: Resume | null;
  readonly denoiser: GuidedDenoiser;
  /** The job's generator (its state after encoding and x_M), used when not resuming. */
  readonly gen: NormalGenerator;
  readonly checkpoints: Checkpoints;
  /** Also checkpoint every N steps (0 or absent: only on interruption). */
  readonly checkpointEvery?: number;
  readonly signal?: AbortSignal;
  readonly onStep?: (completed: number, total: number) => void;
  readonly onWarning?: (message: string) => void;
}

export async function denoise(o: DenoiseOptions): Promise<Tensor> {
  const noise = o.resume ? NormalGenerator.fromState(o.resume.state) : o.gen;
  let last: Position | null = null;
  try {
    return await sample({
      steps: o.steps,
      x: o.resume ? o.resume.x : o.x0,
      startStep: o.resume ? o.resume.completed : 0,
      denoiser: o.denoiser,
      noise,
      signal: o.signal,
      onStep: async (e) => {
        const now: Position = { completed: e.completed, x: e.x.data.slice(), state: noise.state() };
        last = now;
        o.onStep?.(e.completed, e.total);
        if (o.checkpointEvery && e.completed % o.checkpointEvery === 0 && e.completed < e.total) {
          // Periodic checkpoints are insurance, not output: a storage hiccup (S3 restarting,
          // throttling past the SDK's retries) must not fail a run that is otherwise healthy.
          // The next period tries again; an interruption still writes one (below).
          try {
            await o.checkpoints.write(now);
          } catch (err) {
            o.onWarning?.(`checkpoint after step ${e.completed} not written (the run goes on; a restart would resume from an earlier one): ${(err as Error).message}`);
          }
        }
      },
    });
  } catch (e) {
    if (!o.signal?.aborted) throw e;
    const c = last as Position | null;
    let written = c !== null;
    if (c) {
      try {
        await o.checkpoints.write(c);
      } catch (err) {
        // Still an interruption (exit 143, retried): the next attempt resumes from the last
        // periodic checkpoint instead, or starts over.
        written = false;
        o.onWarning?.(`checkpoint after step ${c.completed} not written on interruption: ${(err as Error).message}`);
      }
    }
    const reason = o.signal.reason instanceof Error ? o.signal.reason.message : String(o.signal.reason);
    throw new GenerationInterrupted(c?.completed ?? o.resume?.completed ?? 0, reason, written);
  }
}
