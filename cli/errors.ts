/**
 * The CLI's own typed errors. Every error a user sees is printed with a stable name
 * (`{"error": "<Name>", …}` or `cil: <Name>: …`): the pipeline's (functions/src/errors.ts), the
 * worker's, and these. `errorName` names what would otherwise reach the user as a bare `Error`.
 */

/** A bad command line: printed as one line, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** ffmpeg is needed (for `video.mp4`) but not installed, or lacks libx264. */
export class FfmpegMissing extends Error {
  override readonly name = 'FfmpegMissing';
}

/**
 * The stable name an error is shown with. Typed errors keep theirs; Node's system errors (a bare
 * `Error` with an errno `code`) are named by what went wrong, since `Error` tells a user nothing.
 */
export function errorName(e: unknown): string {
  if (!(e instanceof Error)) return 'UnexpectedError';
  if (e.name !== 'Error') return e.name;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'FileNotFound';
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return 'PermissionDenied';
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'DiskFull';
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return 'FileSystemError';
  return 'UnexpectedError';
}
