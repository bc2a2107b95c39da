/** `cil worker`: the Batch container's entrypoint (docs/worker.md). */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { EXIT, runWorker, runWorkerFromUri } from '../gpu-worker/src/worker.ts';
import { parseJsonText } from '#shared/formats';
import { NO_PLACEMENT, parsePlacementArg } from '#shared/schemas';
import { UsageError } from './errors.ts';
import { abortOnSignals } from './signals.ts';

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description('run one generation job from a JobSpec (the Batch container entrypoint)')
    .option('--spec <uri|json|file>', 'the JobSpec: an s3:// URI, JSON text or a file path (default: $CIL_JOB_SPEC_URI, else $CIL_JOB_SPEC)')
    .option('--placement <json>', `where the workflow placed the job (the job definition passes its placement parameter; ${NO_PLACEMENT}: none), recorded in metadata.json`, NO_PLACEMENT)
    .action(async (o: { spec?: string; placement: string }) => {
      let placement;
      try {
        placement = parsePlacementArg(o.placement);
      } catch (e) {
        // The workflow's bug, not the input's: refused (exit 3, not retried), as a bad spec is.
        process.stdout.write(`${JSON.stringify({ event: 'error', error: (e as Error).name, reason: (e as Error).message, exitCode: EXIT.refused })}\n`);
        process.exitCode = EXIT.refused;
        return;
      }
      // By reference (what the workflow passes): a Batch container override is capped at 8,192
      // characters, and a prompt of quotes doubles in JSON; an S3 object has no such limit.
      const uri = o.spec?.startsWith('s3://') ? o.spec : o.spec === undefined ? process.env.CIL_JOB_SPEC_URI : undefined;
      const ac = abortOnSignals();
      if (uri) {
        process.exitCode = await runWorkerFromUri(uri, { progressBus: process.env.CIL_PROGRESS_BUS, signal: ac.signal, placement });
        return;
      }
      const text = o.spec ?? process.env.CIL_JOB_SPEC;
      if (!text) throw new UsageError('no job spec: pass --spec or set CIL_JOB_SPEC_URI (or CIL_JOB_SPEC)');
      let json: unknown;
      try {
        // parseJsonText: the spec holds the prompt, and V8's message would quote it.
        json = parseJsonText(text.trimStart().startsWith('{') ? text : await readFile(text, 'utf8'));
      } catch (e) {
        throw new UsageError(`--spec is neither JSON nor a readable JSON file (${(e as Error).message})`);
      }
      process.exitCode = await runWorker(json, { progressBus: process.env.CIL_PROGRESS_BUS, signal: ac.signal, placement });
    });
}
