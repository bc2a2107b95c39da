/** Where things are: the repository root (local mode runs from a checkout) and the CLI entry. */
import { join } from 'node:path';

export const REPO_ROOT = join(import.meta.dirname, '..', '..');

/** The worker image's entrypoint is `node bin/cil.js` (gpu-worker/Dockerfile); locally the same file. */
export const CLI_ENTRY = join(REPO_ROOT, 'bin', 'cil.js');

/** Default data folder of `cil local up` and `npm run demo` (gitignored). */
export const DEFAULT_DATA_DIR = join(REPO_ROOT, '.local');
