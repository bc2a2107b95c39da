/**
 * The fine-tuning workflow on the local stand-ins (local/src/finetuneRun.ts): the job definitions
 * of the synthesized template as the local Batch runs them (the multi-node training job included),
 * and one execution whose first job, the real `python -m tools.finetune.batch train`, refuses the
 * spec: exit 3, not retried, the failure notified, the execution failed. The successful run, with
 * the real-class fine-tune, export, statistics and publication, is `npm run test:finetune-real`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Template } from '../../infra/lib/definitions.ts';
import { FINETUNE_STATES as F, STATISTICS_STATES } from '../../infra/lib/names.ts';
import type { FinetuneDefinitions } from '../src/finetuneRun.ts';
import { FINETUNE_LOCAL_BUCKET, LocalFinetuneError, finetuneDefinitionsFrom, runLocalFinetune, synthesizeFinetuneTemplate } from '../src/finetuneRun.ts';
import { PY, pythonOrWarn } from '../../test/helpers/python.ts';

let template: Template;
let defs: FinetuneDefinitions;
const dir = mkdtempSync(join(tmpdir(), 'cil-local-finetune-test-'));

beforeAll(async () => {
  template = await synthesizeFinetuneTemplate();
  defs = finetuneDefinitionsFrom(template, join(dir, 'models'));
}, 180_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const jobOf = (state: string, def = defs.finetune): FinetuneDefinitions['jobDefinitions'][string] => {
  const arn = (def.States[state].Parameters as { JobDefinition: string }).JobDefinition;
  return defs.jobDefinitions[arn];
};

describe('the fine-tune workflow\'s job definitions, locally', () => {
  it('maps the multi-node training job, export and publish to the fine-tuning image, the statistics jobs to the worker', () => {
    const train = jobOf(F.train);
    expect([train.image, train.command]).toEqual(['finetune', ['train']]);
    expect(train.retryStrategy.evaluateOnExit).toEqual(expect.arrayContaining([{ action: 'RETRY', onExitCode: '143' }, { action: 'EXIT', onExitCode: '3' }]));
    expect(train.attemptDurationSeconds).toBeGreaterThan(3600);
    expect(train.environment).toMatchObject({ CIL_SCRATCH: '/scratch' });
    expect([jobOf(F.export).command, jobOf(F.publish).command]).toEqual([['export'], ['publish']]);
    const shard = jobOf(STATISTICS_STATES.computeShards, defs.statistics);
    expect(shard.image).toBe('worker');
    // The container's model-cache path becomes the run's folder.
    expect(shard.command).toEqual(['stats', 'compute', '--videos', 'Ref::videos', '--model', 'Ref::model', '--out', 'Ref::partials', '--shards', 'Ref::shards', '--progress', 'json', '--cache-dir', join(dir, 'models')]);
    expect(jobOf(STATISTICS_STATES.merge, defs.statistics).command).toEqual(['stats', 'merge', 'Ref::partials', '--out', 'Ref::out']);
    // The data bucket is the local one.
    expect(JSON.stringify(defs.statistics)).toContain(`s3://${FINETUNE_LOCAL_BUCKET}/`);
  });

  it('refuses a template without the fine-tune workflow', () => {
    const resources = Object.fromEntries(Object.entries(template.Resources).filter(([, r]) => r.Metadata?.['cil:workflow'] !== 'finetune'));
    expect(() => finetuneDefinitionsFrom({ ...template, Resources: resources }, dir)).toThrow(/cil:finetune=true/);
  });
});

const noPython = pythonOrWarn('local/test/finetuneRun.test.ts', ['torch']);

describe.skipIf(noPython !== null)('one local execution', () => {
  it('refuses more than one node before anything runs', async () => {
    await expect(runLocalFinetune({ dataDir: join(dir, 'nodes'), name: 'ft-nodes', input: { nodes: 2 }, uploads: [], python: PY, template })).rejects.toThrow(LocalFinetuneError);
  });

  it('runs the real train step, which refuses the spec (exit 3): not retried, notified, the execution fails', async () => {
    const input = { modelId: 'dc-local-refused', family: 'dynamicrafter', nodes: 1, train: { steps: 2 }, checkpoint: 'finetune/inputs/ckpt/base.ckpt' };
    const r = await runLocalFinetune({ dataDir: join(dir, 'refused'), name: 'ft-refused', input, uploads: [], python: PY, template });
    expect(r.status).toBe('FAILED');
    expect(r.states).toEqual([F.applyDefaults, F.mergeDefaults, F.checkInput, `${F.checkInput}Values`, F.prepare, F.buildSpec, F.train, F.notifyFailed, F.failed]);
    expect(r.jobs).toHaveLength(1);
    expect(r.jobs[0]).toMatchObject({ name: 'cil-finetune-train', status: 'FAILED', exitCode: 3, attempts: 1 });
    expect(readFileSync(join(dir, 'refused', r.jobs[0].log!), 'utf8')).toMatch(/train refused: code: must be an S3 key/);
    expect(r.notifications).toEqual([expect.objectContaining({ Subject: 'CIL fine-tuning: FAILED' })]);
    expect(r.error?.name).toBe('States.TaskFailed');
  }, 120_000);
});
