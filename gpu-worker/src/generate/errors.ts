/** The generation job's errors (their `name`s are what error.json and the CLI report). */

/** Inputs that do not fit the model: refused before anything is written. */
export class GenerateInputError extends Error {
  override readonly name = 'GenerateInputError';
}

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
