/**
 * The errors that stop the statistics job: the run cannot start or was interrupted (compute.ts),
 * ffmpeg is missing (video.ts). A video that cannot give a clip does not stop it (VideoSkip).
 */
/** Inputs that make the run impossible: an empty dataset, a model without fps, a size the model does not have. */
export class StatsInputError extends Error {
  override readonly name = 'StatsInputError';
}

/** SIGTERM/SIGINT: progress was checkpointed; rerun the same command to resume. */
export class StatsInterrupted extends Error {
  override readonly name = 'StatsInterrupted';
}

/** ffmpeg or ffprobe cannot be started: the job cannot do anything, so it stops (never a skip). */
export class FfmpegMissingError extends Error {
  override readonly name = 'FfmpegMissingError';
}
