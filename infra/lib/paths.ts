/**
 * Paths the CDK app needs: the repository root (the Docker build context of both images and
 * the project root for Lambda bundling) and the default entries of the Lambda handlers.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

/** Dockerfiles relative to REPO_ROOT (the build context of both images is the repository root). */
export const WORKER_DOCKERFILE = 'gpu-worker/Dockerfile';
export const FUNCTIONS_DOCKERFILE = 'infra/docker/functions.Dockerfile';

/** Default handler files of the Notify and RecordFailure Lambdas (relative to REPO_ROOT; a stack prop can replace them). */
export const DEFAULT_HANDLER_ENTRIES = Object.freeze({
  notify: 'functions/src/notify/handler.ts',
  recordFailure: 'functions/src/notify/recordFailure.ts',
});

/** Handlers inside the functions image (its Dockerfile bundles them to these modules). */
export const IMAGE_HANDLERS = Object.freeze({
  validate: 'validate/handler.handler',
  postProcess: 'postprocess/handler.handler',
});

/** The glue handlers between the AWS services and the workflows (functions/src, bundled by esbuild). */
export const RUNTIME_ENTRIES = Object.freeze({
  starter: 'functions/src/starter/handler.ts',
  batchSummary: 'functions/src/batchSummary/handler.ts',
  batchMetrics: 'functions/src/batchMetrics/handler.ts',
});

export function repoPath(relative: string): string {
  return join(REPO_ROOT, relative);
}

/**
 * The patterns of `<Dockerfile>.dockerignore` (what Docker BuildKit reads when the context is the
 * repository root), so that CDK's asset hash and staging copy see exactly what `docker build` sees.
 */
export function dockerignorePatterns(dockerfile: string): string[] {
  const file = repoPath(`${dockerfile}.dockerignore`);
  if (!existsSync(file)) return ['node_modules', 'cdk.out', '.git'];
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'));
}
