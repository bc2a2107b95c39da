/**
 * The wiring of local mode (local/src/wiring.ts) on its own: the starter's EventBridge rule against
 * the local executions, and the ItemReader stand-in of the batch workflow.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectCreatedDetail } from '../../functions/src/starter/core.ts';
import { startLocalS3 } from '../../functions/test/helpers/s3server.ts';
import type { LocalS3 } from '../../functions/test/helpers/s3server.ts';
import type { Asl, LocalDefinitions } from '../src/definitions.ts';
import { LocalStepFunctions } from '../src/executions.ts';
import type { PipelineEvent } from '../src/pipeline.ts';
import { readManifestItems, wireStarter } from '../src/wiring.ts';

const root = mkdtempSync(join(tmpdir(), 'cil-local-wiring-'));
let s3: LocalS3;
beforeAll(async () => {
  s3 = await startLocalS3();
});
afterAll(async () => {
  await s3.stop();
  rmSync(root, { recursive: true, force: true });
});

const ARNS = { generation: 'arn:aws:states:us-east-1:000000000000:stateMachine:Gen', batch: 'arn:aws:states:us-east-1:000000000000:stateMachine:Batch' };
const PASS: Asl = { StartAt: 'P', States: { P: { Type: 'Pass', End: true } } };
const detail = (key: string, etag = 'e1'): ObjectCreatedDetail => ({ bucket: { name: 'cil-data' }, object: { key, size: 3, etag } });

describe('wireStarter', () => {
  it('starts the workflow an upload asks for, under the job id; a duplicate starts nothing; other keys are ignored, said once', async () => {
    const sfn = new LocalStepFunctions({
      dir: join(root, 'executions'),
      workflows: { generation: { stateMachineArn: ARNS.generation, definition: PASS }, batch: { stateMachineArn: ARNS.batch, definition: PASS } },
      handlersFor: () => ({}),
    });
    const events: PipelineEvent[] = [];
    const defs = { stateMachineArns: ARNS } as unknown as LocalDefinitions;
    const deliver = wireStarter(defs, () => sfn, (e) => events.push(e));
    expect(await deliver(detail('inputs/cat.png'))).toBe('started');
    expect(await deliver(detail('inputs/cat.png'))).toBe('duplicate');
    expect(await deliver(detail('batches/spring.jsonl'))).toBe('started');
    expect(await deliver(detail('inputs/cat.json'))).toBe('ignored');
    expect(await deliver(detail('inputs/notes.txt'))).toBe('ignored');
    expect(await deliver(detail('models/demo/manifest.json'))).toBe('ignored');
    expect(events.map((e) => e.type)).toEqual(['execution-started', 'duplicate', 'execution-started', 'ignored']);
    const started = events[0] as Extract<PipelineEvent, { type: 'execution-started' }>;
    expect(sfn.get('generation', started.name)?.input).toMatchObject({ jobId: started.name, key: 'inputs/cat.png', etag: 'e1' });
    expect(sfn.list('batch')).toHaveLength(1);
    await sfn.stop();
  });
});

describe('readManifestItems', () => {
  it('reads one JSON value per non-empty line; a missing manifest or a bad line is States.ItemReaderFailed', async () => {
    await s3.put('batches/ok.jsonl', '{"image":"inputs/a.png"}\n\n  {"image":"inputs/b.png","request":{"seed":1}}  \n');
    expect(await readManifestItems(s3.s3, s3.bucket, 'batches/ok.jsonl', null)).toEqual([{ image: 'inputs/a.png' }, { image: 'inputs/b.png', request: { seed: 1 } }]);
    await s3.put('batches/bad.jsonl', '{"image":"inputs/a.png"}\nnot json\n');
    await expect(readManifestItems(s3.s3, s3.bucket, 'batches/bad.jsonl', null)).rejects.toMatchObject({ name: 'States.ItemReaderFailed', message: 'ItemReader: batches/bad.jsonl line 2 is not JSON' });
    await expect(readManifestItems(s3.s3, s3.bucket, 'batches/none.jsonl', null)).rejects.toMatchObject({ name: 'States.ItemReaderFailed' });
  });
});
