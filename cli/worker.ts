/** `cil worker`: the Batch container's entrypoint (docs/worker.md). */
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { runWorker } from '../gpu-worker/src/worker.ts';
import { parseJsonText } from '#shared/formats';
import { UsageError } from './errors.ts';
import { abortOnSignals } from './signals.ts';

export function registerWorker(program: Command): void {
  program
    .command('worker')
    .description('run one generation job from a JobSpec (the Batch container entrypoint)')
    .option('--spec <json|file>', 'the JobSpec as JSON text or a file path (default: $CIL_JOB_SPEC)')
    .action(async (o: { spec?: string }) => {
      const text = o.spec ?? process.env.CIL_JOB_SPEC;
      if (!text) throw new UsageError('no job spec: pass --spec or set CIL_JOB_SPEC');
      let json: unknown;
      try {
        // parseJsonText: the spec holds the prompt, and V8's message would quote it.
        json = parseJsonText(text.trimStart().startsWith('{') ? text : await readFile(text, 'utf8'));
      } catch (e) {
        throw new UsageError(`--spec is neither JSON nor a readable JSON file (${(e as Error).message})`);
      }
      const ac = abortOnSignals();
      process.exitCode = await runWorker(json, { progressBus: process.env.CIL_PROGRESS_BUS, signal: ac.signal });
    });
}
