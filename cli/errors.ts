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
 * A package the verb needs is not installed. package.json's optionalDependencies (a test keeps this
 * list equal to them) are optional only for npm: it leaves them out, without a word, when it runs on
 * a Node older than they accept (the system's Node 20, say), while the project runs them on its
 * pinned Node 24. `npm run deps` installs them with that Node.
 */
export class MissingDependency extends Error {
  override readonly name = 'MissingDependency';
}

export const OPTIONAL_PACKAGES: readonly string[] = ['aws-local-stepfunctions'];

/** `e` as a MissingDependency when it is Node's failure to find one of OPTIONAL_PACKAGES, else null. */
export function missingOptionalPackage(e: unknown): MissingDependency | null {
  if (!(e instanceof Error) || (e as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') return null;
  const name = OPTIONAL_PACKAGES.find((p) => e.message.includes(`'${p}'`));
  if (name === undefined) return null;
  return new MissingDependency(
    `the package ${name} is not installed. npm leaves it out when it runs on a Node.js older than 22 (as \`npm ci\` on the system's node does); run \`npm run deps\`, which installs it with the project's pinned Node 24`,
  );
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
