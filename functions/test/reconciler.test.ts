/** The reconciler's core (lost upload events) and the failure record's reading of worker exit codes. */
import { describe, expect, it } from 'vitest';
import { jobIdFor, jobKeys } from '#shared/schemas';
import { buildFailureRecord } from '../src/notify/core.ts';
import { detailFor, reconcile } from '../src/reconciler/core.ts';
import type { ListedUpload } from '../src/reconciler/core.ts';
import { listUploadVersions } from '../src/reconciler/list.ts';
import { planStart } from '../src/starter/core.ts';

const BUCKET = 'cil-data';
const NOW = new Date('2030-01-01T12:00:00Z');
const ago = (min: number): Date => new Date(NOW.getTime() - min * 60_000);

function deps(uploads: ListedUpload[], existing: Set<string>, running = new Set<string>()) {
  const starts: { name: string; input: unknown }[] = [];
  return {
    starts,
    deps: {
      bucket: BUCKET,
      listUploads: async function* (since: Date) {
        for (const u of uploads) if (u.lastModified >= since) yield await Promise.resolve(u);
      },
      exists: (key: string) => Promise.resolve(existing.has(key)),
      start: (name: string, input: unknown) => {
        starts.push({ name, input });
        return Promise.resolve(running.has(name) ? ('duplicate' as const) : ('started' as const));
      },
      now: () => NOW,
    },
  };
}

describe('reconcile', () => {
  const lost: ListedUpload = { key: 'inputs/a/lost.png', versionId: 'v1', etag: '"abc"', size: 10, lastModified: ago(30) };
  const done: ListedUpload = { key: 'inputs/a/done.png', versionId: 'v2', etag: '"def"', size: 11, lastModified: ago(30) };
  const failed: ListedUpload = { key: 'inputs/a/refused.png', versionId: 'v3', etag: '"ghi"', size: 12, lastModified: ago(30) };
  const fresh: ListedUpload = { key: 'inputs/a/fresh.png', versionId: 'v4', etag: '"jkl"', size: 13, lastModified: ago(1) };
  const old: ListedUpload = { key: 'inputs/a/old.png', versionId: 'v5', etag: '"mno"', size: 14, lastModified: ago(3000) };
  const sidecar: ListedUpload = { key: 'inputs/a/lost.json', versionId: 'v6', etag: '"pqr"', size: 2, lastModified: ago(30) };
  const id = (u: ListedUpload): string => jobIdFor(BUCKET, u.key, u.versionId!);

  it('starts only uploads with no job record, under the starter\'s execution name and input', async () => {
    const existing = new Set([jobKeys(id(done)).request, jobKeys(id(failed)).failure]);
    const d = deps([lost, done, failed, fresh, old, sidecar], existing);
    const r = await reconcile(d.deps);
    expect(r).toEqual({ considered: 4, recorded: 2, tooRecent: 1, started: [id(lost)], alreadyRunning: [], deferred: 0 });
    // Exactly what the starter would have started for the upload's event.
    const fromEvent = planStart({ bucket: { name: BUCKET }, object: { key: lost.key, size: 10, etag: 'abc', 'version-id': 'v1' } });
    expect(d.starts).toEqual([{ name: fromEvent.kind === 'generation' ? fromEvent.name : '', input: fromEvent.kind === 'generation' ? fromEvent.input : null }]);
  });

  it('an execution already there is not a second run; maxStarts defers the rest', async () => {
    const a = { ...lost, key: 'inputs/b/1.png' };
    const b = { ...lost, key: 'inputs/b/2.png' };
    const c = { ...lost, key: 'inputs/b/3.png' };
    const d = deps([a, b, c], new Set(), new Set([id(a)]));
    const r = await reconcile(d.deps, { maxStarts: 2 });
    expect(r.alreadyRunning).toEqual([id(a)]);
    expect(r.started).toEqual([id(b)]);
    expect(r.deferred).toBe(1);
  });

  it('an unversioned upload is named by its ETag without quotes, as in the S3 event', () => {
    expect(detailFor(BUCKET, { ...lost, versionId: null })).toEqual({ bucket: { name: BUCKET }, object: { key: lost.key, size: 10, etag: 'abc' } });
  });

  it('lists every version under inputs/ in the window, across pages, without delete markers', async () => {
    const pages = [
      { Versions: [{ Key: 'inputs/x.png', VersionId: 'a', ETag: '"1"', Size: 1, LastModified: ago(10) }, { Key: 'inputs/y.png', VersionId: 'b', ETag: '"2"', Size: 2, LastModified: ago(5000) }], DeleteMarkers: [{ Key: 'inputs/z.png' }], IsTruncated: true, NextKeyMarker: 'k', NextVersionIdMarker: 'v' },
      { Versions: [{ Key: 'inputs/x.png', VersionId: 'null', ETag: '"3"', Size: 3, LastModified: ago(20) }], IsTruncated: false },
    ];
    const inputs: unknown[] = [];
    const s3 = { send: (cmd: { input: unknown }) => (inputs.push(cmd.input), Promise.resolve(pages[inputs.length - 1])) };
    const got: ListedUpload[] = [];
    for await (const u of listUploadVersions(s3 as never, BUCKET, ago(60))) got.push(u);
    expect(got.map((u) => [u.key, u.versionId, u.etag])).toEqual([['inputs/x.png', 'a', '"1"'], ['inputs/x.png', null, '"3"']]);
    expect(inputs[1]).toMatchObject({ Prefix: 'inputs/', KeyMarker: 'k', VersionIdMarker: 'v' });
  });
});

describe('the failure record of a worker exit', () => {
  const JOB = 'j-0123456789abcdef01234567';
  it('exit 78 is named GpuUnavailable; other exits keep Step Functions\' error', () => {
    const cause = (code: number): string => JSON.stringify({ StatusReason: 'Essential container in task exited', Container: { ExitCode: code, LogStreamName: 'cil/default/x' } });
    const gpu = buildFailureRecord({ failedStep: 'Generate', error: { Error: 'States.TaskFailed', Cause: cause(78) }, jobId: JOB }, NOW);
    expect(gpu.error).toBe('GpuUnavailable');
    expect(gpu.reason).toMatch(/^GpuUnavailable: the worker required CUDA.*did not fall back to the CPU; Essential container in task exited; exit code 78; log stream cil\/default\/x$/);
    const other = buildFailureRecord({ failedStep: 'Generate', error: { Error: 'States.TaskFailed', Cause: cause(1) }, jobId: JOB }, NOW);
    expect(other.error).toBe('States.TaskFailed');
  });
});
