/**
 * The synthesized state machines as Amazon States Language: resolved from the template, checked
 * by an ASL validator and by hand (transitions, Retry, Catch, timeouts), and executed by a local
 * ASL interpreter with mocked task results, for success and failure paths.
 */
import { StateMachine } from 'aws-local-stepfunctions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobKeys, jobSpecUri, parseJobSpec, parsePlacementArg } from '#shared/schemas';
import { DEFAULT_CONFIG } from '../lib/config.ts';
import { findStateMachines, resolveDefinition, withInlineItems } from '../lib/definitions.ts';
import { BATCH_STATES, GENERATION_STATES as G, STATISTICS_STATES, WORKER_ENV } from '../lib/names.ts';
import { BATCH_TRANSIENT_ERRORS, HANDLER_TRANSIENT_ERRORS, LAMBDA_TRANSIENT_ERRORS, SFN_TRANSIENT_ERRORS, SNS_TRANSIENT_ERRORS } from '../lib/workflows/asl.ts';
import type { Asl, AslRun, Synthesized, TaskMock } from './helpers.ts';
import { expectPath, ok, runAsl, synth, tasksOf, typedError } from './helpers.ts';

type Json = Record<string, unknown>;

let s: Synthesized;
let defs: { generation: Asl; batch: Asl; statistics: Asl };

beforeAll(() => {
  s = synth();
  const ids = findStateMachines(s.json);
  const def = (id: string | undefined): Asl => resolveDefinition(s.json, id!) as unknown as Asl;
  defs = { generation: def(ids.generation), batch: def(ids.batch), statistics: def(ids.statistics) };
});
afterAll(() => s.cleanup());

/** Every state reachable from StartAt; every transition target exists (nested machines too). */
function checkGraph(def: Asl, where: string): void {
  const names = new Set(Object.keys(def.States));
  expect(names.has(def.StartAt), `${where}: StartAt`).toBe(true);
  const seen = new Set<string>();
  const stack = [def.StartAt];
  while (stack.length > 0) {
    const n = stack.pop()!;
    if (seen.has(n)) continue;
    seen.add(n);
    const st = def.States[n];
    const targets = [st.Next, st.Default, ...(st.Choices ?? []).map((c) => c.Next), ...(st.Catch ?? []).map((c) => c.Next)].filter((x): x is string => x !== undefined);
    for (const t of targets) {
      expect(names.has(t), `${where}: ${n} → ${t}`).toBe(true);
      stack.push(t);
    }
    const terminal = st.Type === 'Succeed' || st.Type === 'Fail' || st.End === true;
    expect(terminal || st.Next !== undefined || st.Type === 'Choice', `${where}: ${n} neither ends nor continues`).toBe(true);
    if (st.ItemProcessor) checkGraph(st.ItemProcessor, `${where}/${n}`);
  }
  expect([...names].filter((n) => !seen.has(n)), `${where}: unreachable states`).toEqual([]);
}

const TRANSIENT = new Set<string>([...LAMBDA_TRANSIENT_ERRORS, ...HANDLER_TRANSIENT_ERRORS, ...BATCH_TRANSIENT_ERRORS, ...SFN_TRANSIENT_ERRORS, ...SNS_TRANSIENT_ERRORS]);

describe('every workflow', () => {
  it('is valid Amazon States Language (and the validator does catch a broken one)', () => {
    for (const [name, def] of Object.entries(defs)) {
      expect(() => new StateMachine(def as never), name).not.toThrow();
      checkGraph(def, name);
    }
    const broken = JSON.parse(JSON.stringify(defs.generation)) as Asl;
    broken.States[G.validate].Next = 'NoSuchState';
    expect(() => new StateMachine(broken as never)).toThrow();
  });

  it('retries only transient service errors, with backoff and jitter, and gives every task a timeout', () => {
    for (const [name, def] of Object.entries(defs)) {
      for (const [n, st] of tasksOf(def)) {
        expect(st.TimeoutSeconds, `${name}/${n} TimeoutSeconds`).toBeGreaterThan(0);
        expect(st.Retry?.length, `${name}/${n} Retry`).toBeGreaterThan(0);
        for (const r of st.Retry ?? []) {
          for (const e of r.ErrorEquals) expect(TRANSIENT.has(e), `${name}/${n} retries ${e}`).toBe(true);
          expect(r.BackoffRate, `${name}/${n}`).toBeGreaterThanOrEqual(2);
          expect(r.JitterStrategy, `${name}/${n}`).toBe('FULL');
          expect(r.MaxAttempts, `${name}/${n}`).toBeLessThanOrEqual(6);
        }
      }
    }
  });
});

describe('generation workflow', () => {
  it('is Validate → SizeForModel → ChooseTier → Generate → PostProcess → NotifySuccess, each step caught into the failure branch', () => {
    const st = defs.generation.States;
    expect(defs.generation.StartAt).toBe(G.validate);
    expectPath(defs.generation, G.validate, G.sizeForModel);
    for (const key of Object.keys(DEFAULT_CONFIG.placement)) expect(st[`SizeFor-${key.replace('@', '-')}`]?.Next, key).toBe(G.chooseTier);
    expectPath(defs.generation, G.tierInteractive, G.generate, G.postProcess, G.notifySuccess, G.succeeded);
    expectPath(defs.generation, G.tierProduction, G.generate);
    expectPath(defs.generation, G.generateOnDemand, G.postProcess);
    // A failed Generate is looked at first (Spot capacity?), then goes to the failure branch.
    expect(st[G.generate].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'GenerateFailureKind' }]);
    expect(st[G.generateOnDemand].Catch).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: `${G.generate}Failed` }]);
    for (const step of [G.validate, G.postProcess]) {
      expect(st[step].Catch, step).toEqual([{ ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: `${step}Failed` }]);
      expect(st[`${step}Failed`]).toMatchObject({ Type: 'Pass', Result: step, ResultPath: '$.failedStep', Next: G.recordFailure });
    }
    expect(st[G.recordFailure].Next).toBe(G.notifyFailure);
    expect(st[G.notifyFailure].Next).toBe(G.jobFailed);
    expect(st[G.jobFailed]).toMatchObject({ Type: 'Fail', ErrorPath: '$.error.Error', CausePath: '$.error.Cause' });
  });

  it('waits for the Batch job (.sync) on the queue the placement chose, and passes only the job spec\'s URI as the container environment', () => {
    const gen = defs.generation.States[G.generate];
    expect(gen.Resource).toBe('arn:aws:states:::batch:submitJob.sync');
    expect((gen.Parameters as Json)['JobQueue.$']).toBe('$.placement.queue');
    expect((defs.generation.States[G.generateOnDemand].Parameters as Json)['JobQueue.$']).toBe('$.placement.queue');
    expect(gen.TimeoutSeconds).toBe(DEFAULT_CONFIG.generateTimeoutHours * 3600);
    expect(gen.ResultSelector).toEqual({ 'batchJobId.$': '$.JobId', 'status.$': '$.Status' });
    expect(((gen.Parameters as Json).ContainerOverrides as Json).Environment).toEqual([{ Name: WORKER_ENV.jobSpecUri, 'Value.$': "States.Format('s3://{}/{}request.json', $.spec.bucket, $.spec.workPrefix)" }]);
  });
});

// ---------------------------------------------------------------- local executions

const JOB_ID = 'j-0123456789abcdef01234567';
const INPUT = { jobId: JOB_ID, bucket: 'cil-data', key: 'inputs/cat.png', versionId: 'v1', etag: 'e1', size: 2048, request: null, batch: null };
const SPEC = parseJobSpec(
  {
    jobId: JOB_ID,
    bucket: 'cil-data',
    input: { key: 'inputs/cat.png', versionId: 'v1', etag: 'e1', size: 2048 },
    imageKey: `jobs/${JOB_ID}/input.png`,
    modelPrefix: 'models/svd',
    request: {
      model: 'svd',
      family: 'svd',
      prompt: '',
      steps: 25,
      start: 700,
      analyticInit: true,
      statistics: 'statistics/svd-576x1024.safetensors',
      guidanceScale: null,
      imageGuidanceScale: null,
      guidanceRescale: null,
      eta: null,
      seed: 42,
      frames: 14,
      fps: 7,
      frameStride: null,
      motionBucketId: 127,
      noiseAugStrength: 0.02,
      minGuidanceScale: 1,
      maxGuidanceScale: 3,
      outputs: ['mp4', 'gif'],
      compat: 'paper',
    },
    resolution: { height: 576, width: 1024 },
    workPrefix: `jobs/${JOB_ID}/`,
    outputPrefix: `outputs/${JOB_ID}/`,
    createdAt: '2025-01-01T00:00:00Z',
  },
  'test spec',
);

/** The queue ARNs the definition gives svd@576x1024 (fleet gpu48), by tier. */
function queueArns(): Record<'interactive' | 'production' | 'onDemand', string> {
  const r = defs.generation.States['SizeFor-svd-576x1024'].Result as { fleet: string; queues: Record<'interactive' | 'production' | 'onDemand', string> };
  expect(r.fleet).toBe('gpu48');
  return r.queues;
}
const RESULT = { format: 'cil-result/1', status: 'succeeded', jobId: JOB_ID, resultKey: `outputs/${JOB_ID}/result.json` };
const CONTEXT = { Execution: { Id: `arn:aws:states:us-east-1:123456789012:execution:Generation:${JOB_ID}`, Name: JOB_ID, StartTime: '2025-01-01T00:00:00Z' } };

function run(def: Asl, input: Json, handlers: Record<string, TaskMock>, context: Json = CONTEXT): Promise<AslRun> {
  return runAsl(def, input, handlers, context);
}

const BATCH_OK = { JobId: 'batch-job-1', JobName: JOB_ID, Status: 'SUCCEEDED', Attempts: [], Container: { ExitCode: 0 } };

describe('generation workflow, executed', () => {
  it('succeeds: the job spec flows to Batch (sized for SVD), post-process and the notification', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: ok(BATCH_OK),
      [G.postProcess]: ok(RESULT),
      [G.notifySuccess]: ok({ jobId: JOB_ID, status: 'succeeded' }),
    });
    expect(r.error).toBeUndefined();
    expect(r.entered).toEqual([G.validate, G.sizeForModel, 'SizeFor-svd-576x1024', G.chooseTier, G.tierInteractive, G.generate, G.postProcess, G.notifySuccess, G.succeeded]);
    // Validate gets the starter's input as is.
    expect(r.calls[G.validate]).toEqual([INPUT]);
    // Batch: named by the job id, only the spec's URI in the environment (Validate wrote it there), SVD's vCPUs and memory.
    const submit = r.calls[G.generate][0];
    expect(submit.JobName).toBe(JOB_ID);
    // An upload: the interactive queue of the 48 GB fleet (SVD at 576×1024).
    expect(submit.JobQueue).toBe(queueArns().interactive);
    expect(submit.JobQueue).toMatch(/job-queue\/GpuGpu48InteractiveQueue/);
    const overrides = submit.ContainerOverrides as { Environment: { Name: string; Value: string }[]; ResourceRequirements: { Type: string; Value: string }[] };
    expect(overrides.Environment).toEqual([{ Name: WORKER_ENV.jobSpecUri, Value: jobSpecUri(SPEC.bucket, SPEC.jobId) }]);
    expect(overrides.Environment[0].Value).toBe(`s3://${SPEC.bucket}/${jobKeys(JOB_ID).request}`);
    // Where the job goes, as the `placement` parameter (the command's Ref::placement), not as an override.
    const placement = parsePlacementArg((submit.Parameters as { placement: string }).placement);
    expect(placement).toMatchObject({ tier: 'interactive', queue: queueArns().interactive, capacity: 'spot', spotCancellations: 0 });
    expect(Object.keys(placement!).sort()).toEqual(['capacity', 'executionStartedAt', 'queue', 'spotCancellations', 'tier']);
    expect(placement!.executionStartedAt).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    expect(r.output?.placement).toEqual(placement);
    expect(overrides.ResourceRequirements).toEqual([
      { Type: 'VCPU', Value: String(DEFAULT_CONFIG.modelProfiles.svd.vcpus) },
      { Type: 'MEMORY', Value: String(DEFAULT_CONFIG.modelProfiles.svd.memoryMiB) },
    ]);
    expect(r.calls[G.postProcess]).toEqual([{ spec: SPEC, generate: { batchJobId: 'batch-job-1', status: 'SUCCEEDED' } }]);
    const note = r.calls[G.notifySuccess][0];
    expect(note.status).toBe('SUCCEEDED');
    expect(note.executionArn).toBe(CONTEXT.Execution.Id);
    expect((note.job as Json).result).toEqual(RESULT);
    // The state stays small: keys and scalars.
    expect(JSON.stringify(r.output).length).toBeLessThan(8 * 1024);
    expect(r.output).toMatchObject({ jobId: JOB_ID, spec: SPEC, result: RESULT });
  });

  it('a refused upload is not retried: recorded, notified, and the execution fails with its error', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: () => {
        throw typedError('InvalidImage', 'inputs/cat.png: not a PNG, JPEG or WebP');
      },
      [G.recordFailure]: (i) => ({ status: 'failed', jobId: i.jobId, failedStep: i.failedStep, failureKey: `failures/${JOB_ID}.json` }),
      [G.notifyFailure]: ok({ status: 'failed' }),
    });
    expect(r.calls[G.validate]).toHaveLength(1);
    expect(r.entered).toEqual([G.validate, `${G.validate}Failed`, G.recordFailure, G.notifyFailure, G.jobFailed]);
    const rec = r.calls[G.recordFailure][0];
    expect(rec).toMatchObject({ ...INPUT, failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: 'inputs/cat.png: not a PNG, JPEG or WebP' } });
    const note = r.calls[G.notifyFailure][0];
    expect(note).toMatchObject({ status: 'FAILED', job: { failedStep: 'Validate', failureRecord: { failureKey: `failures/${JOB_ID}.json` } } });
    expect(r.error).toEqual({ name: 'InvalidImage', message: 'inputs/cat.png: not a PNG, JPEG or WebP' });
  });

  it('retries a Lambda service error, then carries on', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: (_i, call) => {
        if (call === 1) throw typedError('Lambda.ServiceException', 'internal error');
        return SPEC;
      },
      [G.generate]: ok(BATCH_OK),
      [G.postProcess]: ok(RESULT),
      [G.notifySuccess]: ok({}),
    });
    expect(r.error).toBeUndefined();
    expect(r.calls[G.validate]).toHaveLength(2);
  });

  it('a failed Batch job (Batch already retried it) is recorded against Generate', async () => {
    const cause = JSON.stringify({ Status: 'FAILED', StatusReason: 'Essential container in task exited', Attempts: [{ Container: { ExitCode: 3 } }] });
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: () => {
        throw typedError('States.TaskFailed', cause);
      },
      [G.recordFailure]: ok({ failureKey: `failures/${JOB_ID}.json` }),
      [G.notifyFailure]: ok({}),
    });
    expect(r.calls[G.generate]).toHaveLength(1);
    expect(r.calls[G.generateOnDemand]).toBeUndefined();
    expect(r.calls[G.recordFailure][0]).toMatchObject({ failedStep: 'Generate', spec: SPEC, error: { Error: 'States.TaskFailed', Cause: cause } });
    expect(r.error?.name).toBe('States.TaskFailed');
  });

  const CAPACITY_CAUSE = JSON.stringify({ JobId: 'spot-1', Status: 'FAILED', StatusReason: 'Canceled by JobStateTimeLimit action due to reason: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY', Attempts: [] });

  it('a job its Spot queue cancelled for want of capacity is resubmitted once to the on-demand queue, and the state records it', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: () => {
        throw typedError('States.TaskFailed', CAPACITY_CAUSE);
      },
      [G.generateOnDemand]: ok({ ...BATCH_OK, JobId: 'od-1' }),
      [G.postProcess]: ok(RESULT),
      [G.notifySuccess]: ok({}),
    });
    expect(r.error).toBeUndefined();
    expect(r.entered).toEqual([G.validate, G.sizeForModel, 'SizeFor-svd-576x1024', G.chooseTier, G.tierInteractive, G.generate, 'GenerateFailureKind', G.readGenerateFailure, G.spotCapacityCheck, G.recordResubmission, G.generateOnDemand, G.postProcess, G.notifySuccess, G.succeeded]);
    const q = queueArns();
    expect(r.calls[G.generate][0].JobQueue).toBe(q.interactive);
    const od = r.calls[G.generateOnDemand][0];
    expect(od.JobQueue).toBe(q.onDemand);
    expect(od.JobName).toBe(JOB_ID);
    expect(od.ContainerOverrides).toEqual(r.calls[G.generate][0].ContainerOverrides);
    expect(r.calls[G.postProcess]).toEqual([{ spec: SPEC, generate: { batchJobId: 'od-1', status: 'SUCCEEDED' } }]);
    const spot = parsePlacementArg((r.calls[G.generate][0].Parameters as { placement: string }).placement)!;
    const placement = { tier: 'interactive', queue: q.onDemand, capacity: 'on-demand', spotCancellations: 1, executionStartedAt: spot.executionStartedAt, resubmittedFrom: 'spot-1', resubmitReason: 'Canceled by JobStateTimeLimit action due to reason: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY' };
    expect(r.output?.placement).toEqual(placement);
    // The resubmitted job itself is told (its metadata.json records it): same first submission time, one Spot cancellation.
    expect(parsePlacementArg((od.Parameters as { placement: string }).placement)).toEqual(placement);
  });

  it('resubmits only once: an on-demand job that fails is recorded against Generate', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: () => {
        throw typedError('States.TaskFailed', CAPACITY_CAUSE);
      },
      [G.generateOnDemand]: () => {
        throw typedError('States.TaskFailed', CAPACITY_CAUSE);
      },
      [G.recordFailure]: ok({}),
      [G.notifyFailure]: ok({}),
    });
    expect(r.calls[G.generateOnDemand]).toHaveLength(1);
    expect(r.calls[G.recordFailure][0]).toMatchObject({ failedStep: 'Generate', placement: { capacity: 'on-demand', resubmittedFrom: 'spot-1' } });
    expect(r.error?.name).toBe('States.TaskFailed');
  });

  it('a manifest line goes to the production queue; a model with no fleet fails at SizeForModel', async () => {
    const batchInput = { ...INPUT, batch: { name: 'spring', manifestKey: 'batches/spring.jsonl', line: 1 } };
    const r = await run(defs.generation, batchInput, { [G.validate]: ok(SPEC), [G.generate]: ok(BATCH_OK), [G.postProcess]: ok(RESULT), [G.notifySuccess]: ok({}) });
    expect(r.entered).toContain(G.tierProduction);
    expect(r.calls[G.generate][0].JobQueue).toBe(queueArns().production);
    for (const spec of [{ ...SPEC, resolution: { height: 320, width: 320 } }, { ...SPEC, resolution: undefined }]) {
      const bad = await run(defs.generation, INPUT, { [G.validate]: ok(spec), [G.recordFailure]: ok({}), [G.notifyFailure]: ok({}) });
      expect(bad.calls[G.generate]).toBeUndefined();
      expect(bad.calls[G.recordFailure][0]).toMatchObject({ failedStep: G.sizeForModel, error: { Error: 'CIL.NoFleetForModel' } });
    }
  });

  it('still notifies when the failure record cannot be written', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: ok(BATCH_OK),
      [G.postProcess]: () => {
        throw typedError('EncodeFailed', 'ffmpeg exited with 1');
      },
      [G.recordFailure]: () => {
        throw typedError('AccessDenied', 'no');
      },
      [G.notifyFailure]: ok({}),
    });
    expect(r.entered).toEqual([G.validate, G.sizeForModel, 'SizeFor-svd-576x1024', G.chooseTier, G.tierInteractive, G.generate, G.postProcess, `${G.postProcess}Failed`, G.recordFailure, G.notifyFailure, G.jobFailed]);
    expect(r.calls[G.notifyFailure][0]).toMatchObject({ status: 'FAILED', job: { failedStep: 'PostProcess', recordError: { Error: 'AccessDenied' } } });
    expect(r.error?.name).toBe('EncodeFailed');
  });

  it('a lost success notification fails the execution (so the alarm sees it) without touching the outputs', async () => {
    const r = await run(defs.generation, INPUT, {
      [G.validate]: ok(SPEC),
      [G.generate]: ok(BATCH_OK),
      [G.postProcess]: ok(RESULT),
      [G.notifySuccess]: () => {
        throw typedError('InvalidEvent', 'bad');
      },
    });
    expect(r.entered.at(-1)).toBe(G.notificationFailed);
    expect(r.error?.name).toBe('CIL.NotificationFailed');
    expect(r.calls[G.recordFailure]).toBeUndefined();
  });
});

describe('batch-production workflow', () => {
  it('is a Distributed Map over the manifest lines: bounded concurrency, tolerated failures, results to reports/', () => {
    const map = defs.batch.States[BATCH_STATES.runManifest];
    expect(map).toMatchObject({
      Type: 'Map',
      MaxConcurrency: DEFAULT_CONFIG.batchMaxConcurrency,
      ToleratedFailurePercentage: DEFAULT_CONFIG.batchToleratedFailurePercentage,
      ItemReader: { Resource: 'arn:aws:states:::s3:getObject', ReaderConfig: { InputType: 'JSONL' }, Parameters: { 'Bucket.$': '$.bucket', 'Key.$': '$.key' } },
      ResultWriter: { Resource: 'arn:aws:states:::s3:putObject', Parameters: { 'Bucket.$': '$.bucket', 'Prefix.$': '$.reportPrefix' } },
      Catch: [{ ErrorEquals: ['States.ALL'], ResultPath: '$.mapError', Next: BATCH_STATES.summarize }],
      Next: BATCH_STATES.summarize,
    });
    const proc = map.ItemProcessor!;
    expect(proc.ProcessorConfig).toEqual({ Mode: 'DISTRIBUTED', ExecutionType: 'STANDARD' });
    const runJob = proc.States[BATCH_STATES.runJob];
    expect(runJob.Resource).toBe('arn:aws:states:::states:startExecution.sync:2');
    expect((runJob.Parameters as Json)['Name.$']).toBe('$.jobId');
  });

  it('runs each line through PrepareItem and the generation workflow, then summarizes', async () => {
    const def = withInlineItems(defs.batch as never, BATCH_STATES.runManifest, '$.items') as unknown as Asl;
    const input = {
      batchId: 'j-aaaaaaaaaaaaaaaaaaaaaaaa',
      batchName: 'spring',
      bucket: 'cil-data',
      key: 'batches/spring.jsonl',
      versionId: 'mv',
      etag: 'e',
      reportPrefix: 'reports/spring/',
      items: [{ image: 'inputs/a.png' }, { image: 'inputs/b.png', request: { seed: 1 } }],
    };
    const r = await run(def, input, {
      [BATCH_STATES.prepareItem]: (i) => ({ ...INPUT, jobId: `j-${String(i.index).padStart(24, '0')}`, key: (i.line as Json).image, request: (i.line as Json).request ?? null }),
      [BATCH_STATES.runJob]: (i) => ({ ExecutionArn: `arn:exec:${String(i.Name)}`, Status: 'SUCCEEDED' }),
      [BATCH_STATES.summarize]: ok({ summaryKey: 'reports/spring/summary.json', status: 'SUCCEEDED' }),
    });
    expect(r.error).toBeUndefined();
    expect(r.calls[BATCH_STATES.prepareItem].map((c) => [c.index, c.line, c.manifestKey, c.manifestVersion, c.batchName])).toEqual([
      [0, { image: 'inputs/a.png' }, 'batches/spring.jsonl', 'mv', 'spring'],
      [1, { image: 'inputs/b.png', request: { seed: 1 } }, 'batches/spring.jsonl', 'mv', 'spring'],
    ]);
    const starts = r.calls[BATCH_STATES.runJob];
    expect(starts.map((c) => c.Name)).toEqual(['j-000000000000000000000000', 'j-000000000000000000000001']);
    expect((starts[1].Input as Json).request).toEqual({ seed: 1 });
    expect(r.calls[BATCH_STATES.summarize][0]).toMatchObject({ batch: { batchName: 'spring' }, executionArn: CONTEXT.Execution.Id });
    expect(r.entered.at(-1)).toBe(BATCH_STATES.succeeded);
  });

  it('summarizes a failed map too, then fails', async () => {
    const def = withInlineItems(defs.batch as never, BATCH_STATES.runManifest, '$.items') as unknown as Asl;
    const r = await run(def, { bucket: 'cil-data', key: 'batches/x.jsonl', versionId: null, batchName: 'x', reportPrefix: 'reports/x/', items: [{ nope: 1 }] }, {
      [BATCH_STATES.prepareItem]: () => {
        throw typedError('InvalidManifestLine', 'batches/x.jsonl line 1: image: required');
      },
      [BATCH_STATES.summarize]: ok({ status: 'FAILED' }),
    });
    expect(r.calls[BATCH_STATES.summarize][0]).toMatchObject({ batch: { mapError: { Error: 'InvalidManifestLine' } } });
    expect(r.entered.at(-1)).toBe(BATCH_STATES.failed);
    expect(r.error?.name).toBe('InvalidManifestLine');
  });
});

describe('statistics workflow', () => {
  const ctx = { Execution: { Id: 'arn:aws:states:us-east-1:123456789012:execution:Statistics:run-7', Name: 'run-7', StartTime: '2025-01-01T00:00:00Z' } };
  const ok200 = ok({ JobId: 'b-1', Status: 'SUCCEEDED' });

  it('runs the shards as one array job, then the merge, with s3:// locations as job parameters', async () => {
    const input = { model: 'dynamicrafter-512', videosPrefix: 'statistics/datasets/webvid/', shards: 8, output: 'dynamicrafter-320x512' };
    const r = await run(defs.statistics, input, { [STATISTICS_STATES.computeShards]: ok200, [STATISTICS_STATES.merge]: ok200, [STATISTICS_STATES.publishSucceeded]: ok({}) }, ctx);
    expect(r.error).toBeUndefined();
    const bucket = s.stack.resolve(s.stack.storage.bucket.bucketName) as { Ref: string };
    const b = `s3://${bucket.Ref.toLowerCase()}/`;
    const shards = r.calls[STATISTICS_STATES.computeShards][0];
    expect(shards.ArrayProperties).toEqual({ Size: 8 });
    expect(shards.Parameters).toEqual({ videos: `${b}statistics/datasets/webvid/`, model: `${b}models/dynamicrafter-512/`, partials: `${b}statistics/partials/run-7/`, shards: '8' });
    const merge = r.calls[STATISTICS_STATES.merge][0];
    expect(merge.Parameters).toEqual({ partials: `${b}statistics/partials/run-7/`, out: `${b}statistics/dynamicrafter-320x512.safetensors` });
    expect(r.calls[STATISTICS_STATES.publishSucceeded][0]).toMatchObject({ Message: { status: 'SUCCEEDED', outputKey: 'statistics/dynamicrafter-320x512.safetensors' } });
  });

  it('refuses an input outside statistics/datasets/ or with too few shards before submitting anything', async () => {
    for (const bad of [
      { model: 'm', videosPrefix: 'outputs/', shards: 4, output: 'o' },
      { model: 'm', videosPrefix: 'statistics/datasets/v/', shards: 1, output: 'o' },
      { model: 'm', videosPrefix: 'statistics/datasets/v/', output: 'o' },
    ]) {
      const r = await run(defs.statistics, bad, {}, ctx);
      expect(r.error?.name, JSON.stringify(bad)).toBe('CIL.InvalidStatisticsInput');
      expect(r.calls).toEqual({});
    }
  });

  it('publishes a failed shard job, then fails with its error', async () => {
    const input = { model: 'm', videosPrefix: 'statistics/datasets/v/', shards: 2, output: 'o' };
    const r = await run(
      defs.statistics,
      input,
      {
        [STATISTICS_STATES.computeShards]: () => {
          throw typedError('States.TaskFailed', '{"Status":"FAILED"}');
        },
        [STATISTICS_STATES.publishFailed]: ok({}),
      },
      ctx,
    );
    expect(r.calls[STATISTICS_STATES.merge]).toBeUndefined();
    expect(r.calls[STATISTICS_STATES.publishFailed][0]).toMatchObject({ Message: { status: 'FAILED' } });
    expect(r.error?.name).toBe('States.TaskFailed');
  });
});
