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
  // The position after the last completed step is the sampler's own latent and the generator as
  // they stand between steps (a step draws its noise and updates x only after its network call,
  // with no await in between), so it is copied only when a checkpoint is written, never per step.
  let completed = o.resume?.completed ?? 0;
  let latest: Tensor | null = null;
  const position = (): Position | null => (latest ? { completed, x: latest.data.slice(), state: noise.state() } : null);
  // Periodic checkpoints leave the step's critical path: the copy is taken at its step, and the
  // upload overlaps the next step's network call; that step's end waits for it (on a GPU a step
  // outlasts the upload, so nobody waits), which keeps a checkpoint durable one step after it was
  // taken, as a host lost a step later still finds it.
  const upload: { pending: Promise<void> | null } = { pending: null };
  const writePeriodic = (now: Position): void => {
    upload.pending = o.checkpoints
      .write(now)
      // A storage hiccup (S3 restarting, throttling past the SDK's retries) must not fail a run
      // that is otherwise healthy. The next period tries again; an interruption still writes one.
      .catch((err: unknown) => o.onWarning?.(`checkpoint after step ${now.completed} not written (the run goes on; a restart would resume from an earlier one): ${(err as Error).message}`))
      .finally(() => (upload.pending = null));
  };
  try {
    const out = await sample({
      steps: o.steps,
      x: o.resume ? o.resume.x : o.x0,
      startStep: o.resume ? o.resume.completed : 0,
      denoiser: o.denoiser,
      noise,
      signal: o.signal,
      onStep: async (e) => {
        completed = e.completed;
        latest = e.x;
        o.onStep?.(e.completed, e.total);
        if (upload.pending) await upload.pending;
        if (o.checkpointEvery && e.completed % o.checkpointEvery === 0 && e.completed < e.total) writePeriodic(position()!);
      },
    });
    // The job clears its checkpoint next: no upload may land after that.
    await upload.pending;
    return out;
  } catch (e) {
    await upload.pending;
    if (!o.signal?.aborted) throw e;
    const c = position();
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
