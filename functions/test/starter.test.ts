/**
 * The starter (idempotent execution names) and PrepareItem (manifest lines) of
 * functions/src/starter. AWS calls go to aws-sdk-client-mock.
 */
import { createHash } from 'node:crypto';
import { ExecutionAlreadyExists, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidManifestLine } from '../src/errors.ts';
import type { ObjectCreatedDetail } from '../src/starter/core.ts';
import { planStart, prepareItem, startNamedExecution } from '../src/starter/core.ts';

/** The job id formula of shared/src/schemas/layout.ts, written out independently. */
function expectedJobId(bucket: string, key: string, version: string): string {
  return `j-${createHash('sha256').update(`${bucket}\0${key}\0${version}`).digest('hex').slice(0, 24)}`;
}

const detail = (key: string, object: Partial<ObjectCreatedDetail['object']> = {}): ObjectCreatedDetail => ({
  bucket: { name: 'cil-data' },
  object: { key, size: 1234, etag: 'abc', 'version-id': 'v1', ...object },
});

describe('planStart', () => {
  it('starts the generation workflow for an image under inputs/, named by bucket, key and version', () => {
    const p = planStart(detail('inputs/cats/tabby.PNG'));
    expect(p.kind).toBe('generation');
    if (p.kind !== 'generation') return;
    expect(p.name).toBe(expectedJobId('cil-data', 'inputs/cats/tabby.PNG', 'v1'));
    expect(p.name).toMatch(/^j-[0-9a-f]{24}$/);
    expect(p.input).toEqual({ jobId: p.name, bucket: 'cil-data', key: 'inputs/cats/tabby.PNG', versionId: 'v1', etag: 'abc', size: 1234, request: null, batch: null });
  });

  it('gives the same name to a duplicate event and a new one to a new version', () => {
    const a = planStart(detail('inputs/a.jpg'));
    const b = planStart(detail('inputs/a.jpg'));
    const c = planStart(detail('inputs/a.jpg', { 'version-id': 'v2' }));
    expect(a.kind === 'generation' && b.kind === 'generation' && c.kind === 'generation').toBe(true);
    if (a.kind !== 'generation' || b.kind !== 'generation' || c.kind !== 'generation') return;
    expect(a.name).toBe(b.name);
    expect(c.name).not.toBe(a.name);
  });

  it('falls back to the ETag when the bucket gives no version id', () => {
    const p = planStart(detail('inputs/a.webp', { 'version-id': undefined, etag: 'e1' }));
    expect(p.kind === 'generation' && p.name).toBe(expectedJobId('cil-data', 'inputs/a.webp', 'e1'));
  });

  it('starts the batch workflow for a manifest, with its report prefix', () => {
    const p = planStart(detail('batches/spring/run-1.jsonl'));
    expect(p.kind).toBe('batch');
    if (p.kind !== 'batch') return;
    expect(p.input.batchName).toBe('spring/run-1');
    expect(p.input.reportPrefix).toBe('reports/spring/run-1/');
    expect(p.name).toBe(expectedJobId('cil-data', 'batches/spring/run-1.jsonl', 'v1'));
  });

  it('names the report after the batch id when the manifest name is not a safe key', () => {
    const p = planStart(detail('batches/my batch.jsonl'));
    expect(p.kind === 'batch' && p.input.reportPrefix).toBe(`reports/${p.kind === 'batch' ? p.name : ''}/`);
  });

  it('ignores sidecars and other objects', () => {
    expect(planStart(detail('inputs/a.json')).kind).toBe('ignored');
    expect(planStart(detail('outputs/j-1/video.mp4')).kind).toBe('ignored');
    expect(planStart(detail('batches/images/a.png')).kind).toBe('ignored');
  });
});

const sfn = mockClient(SFNClient);
afterEach(() => {
  sfn.reset();
});

describe('startNamedExecution', () => {
  it('starts the execution under the given name with the input as JSON', async () => {
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:x', startDate: new Date() });
    const out = await startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', { a: 1 });
    expect(out).toBe('started');
    const call = sfn.commandCalls(StartExecutionCommand)[0];
    expect(call?.args[0].input).toEqual({ stateMachineArn: 'arn:sm', name: 'j-0123', input: '{"a":1}' });
  });

  it('treats ExecutionAlreadyExists as the duplicate event it is', async () => {
    sfn.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: 'exists', $metadata: {} }));
    await expect(startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', {})).resolves.toBe('duplicate');
  });

  it('lets other errors through (EventBridge and Lambda retry them)', async () => {
    const err = Object.assign(new Error('slow down'), { name: 'ThrottlingException' });
    sfn.on(StartExecutionCommand).rejects(err);
    await expect(startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', {})).rejects.toThrow('slow down');
  });
});

describe('prepareItem', () => {
  const item = (line: unknown, index = 4) => ({ bucket: 'cil-data', manifestKey: 'batches/b.jsonl', manifestVersion: 'mv', batchName: 'b', index, line });

  it('turns a line into a generation input whose job id depends on the manifest version and line', () => {
    const g = prepareItem(item({ image: 'batches/b/cat.png', request: { seed: 3 } }));
    expect(g).toEqual({
      jobId: expectedJobId('cil-data', 'batches/b.jsonl#4', 'mv'),
      bucket: 'cil-data',
      key: 'batches/b/cat.png',
      versionId: null,
      etag: null,
      size: null,
      request: { seed: 3 },
      batch: { name: 'b', manifestKey: 'batches/b.jsonl', line: 5 },
    });
    expect(prepareItem(item({ image: 'inputs/x.png' }, 5)).jobId).not.toBe(prepareItem(item({ image: 'inputs/x.png' }, 4)).jobId);
  });

  it('refuses malformed lines with the manifest and line number', () => {
    expect(() => prepareItem(item({ img: 'inputs/x.png' }))).toThrow(InvalidManifestLine);
    expect(() => prepareItem(item({ img: 'inputs/x.png' }))).toThrow(/batches\/b\.jsonl line 5: .*image/);
    expect(() => prepareItem(item('just text'))).toThrow(InvalidManifestLine);
    expect(() => prepareItem(item({ image: 'inputs/../secrets/x.png' }))).toThrow(/must be a key under inputs\/ or batches\//);
    expect(() => prepareItem(item({ image: 'outputs/j-1/poster.png' }))).toThrow(/must be a key under/);
    expect(() => prepareItem(item({ image: 'inputs/x.png', request: [1] }))).toThrow(/request/);
  });
});

