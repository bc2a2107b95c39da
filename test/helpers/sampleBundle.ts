/** A short CPU sampling run of an exported bundle through the real job path (Analytic-Init off). */
import { runJob } from '../../gpu-worker/src/job.ts';
import type { GenerationMetadata } from '../../gpu-worker/src/generate.ts';
import { parseJobRequest } from '#shared/schemas';
import { resolveRequest } from '#shared/schemas';

export function sampleBundle(model: string, image: string, out: string, seed: number): Promise<GenerationMetadata> {
  return runJob(
    { image, model, out, statistics: null, initNoise: null },
    {
      provider: 'cpu',
      threads: 2,
      params: (bundle) => {
        const json = { model: bundle.manifest.id, prompt: bundle.manifest.family === 'svd' ? '' : 'a boat moves left', steps: 2, analyticInit: false, seed, outputs: ['png-frames'] };
        const req = parseJobRequest(json, 'test');
        return { ...resolveRequest({ request: req, explicit: new Set(Object.keys(json)) }, bundle.manifest, () => 1, 'test'), saveLatent: false };
      },
    },
  );
}
