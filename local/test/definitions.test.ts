/**
 * Local mode runs the definitions `cdk synth` produces, never a copy: the app is run here as the
 * CDK CLI runs it (`node infra/bin/app.ts` with CDK_OUTDIR and cdk.json's context in
 * CDK_CONTEXT_JSON, Lambda bundling and cdk-nag included), and what local mode takes from that
 * template equals what it loads (synthesized in-process or from its cache). The one change the
 * local runner makes (the Distributed Map's ItemReader) touches nothing else.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withInlineItems } from '../../infra/lib/definitions.ts';
import { BATCH_STATES, GENERATION_STATES } from '../../infra/lib/names.ts';
import type { LocalDefinitions } from '../src/definitions.ts';
import { definitionsKey, loadLocalDefinitions, localDefinitionsFrom, LOCAL_ACCOUNT } from '../src/definitions.ts';
import { MANIFEST_ITEMS_FIELD } from '../src/pipeline.ts';
import { REPO_ROOT } from '../src/paths.ts';
import { DEFINITIONS_CACHE } from '../../test/helpers/local.ts';

let outdir: string;
let fromApp: LocalDefinitions;
let loaded: LocalDefinitions;

beforeAll(async () => {
  outdir = mkdtempSync(join(tmpdir(), 'cil-cdk-out-'));
  const context = (JSON.parse(readFileSync(join(REPO_ROOT, 'cdk.json'), 'utf8')) as { context?: object }).context ?? {};
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'infra', 'bin', 'app.ts')], {
    cwd: REPO_ROOT,
    env: { ...process.env, CDK_OUTDIR: outdir, CDK_CONTEXT_JSON: JSON.stringify(context) },
    encoding: 'utf8',
    timeout: 120_000,
  });
  expect(r.status, r.stderr).toBe(0);
  const template = JSON.parse(readFileSync(join(outdir, 'CilVideo.template.json'), 'utf8')) as Parameters<typeof localDefinitionsFrom>[0];
  fromApp = localDefinitionsFrom(template, 'CilVideo', definitionsKey());
  loaded = await loadLocalDefinitions({ cacheDir: DEFINITIONS_CACHE });
}, 150_000);
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe('the definitions local mode runs', () => {
  it('are those of the synthesized app, with local ARNs', () => {
    expect(loaded.generation).toEqual(fromApp.generation);
    expect(loaded.batch).toEqual(fromApp.batch);
    expect(loaded.jobDefinitions).toEqual(fromApp.jobDefinitions);
    expect(loaded.stateMachineArns).toEqual(fromApp.stateMachineArns);
    expect(loaded.notificationTopicArn).toEqual(fromApp.notificationTopicArn);
    const text = JSON.stringify([loaded.generation, loaded.batch]);
    // Every reference resolved, into the local account.
    expect(text).not.toMatch(/"(Ref|Fn::[A-Za-z]+)"/);
    expect(loaded.stateMachineArns.generation).toMatch(new RegExp(`^arn:aws:states:us-east-1:${LOCAL_ACCOUNT}:stateMachine:`));
    const generate = loaded.generation.States[GENERATION_STATES.generate] as { Resource: string; Parameters: { JobDefinition: string } };
    expect(generate.Resource).toBe('arn:aws:states:::batch:submitJob.sync');
    expect(loaded.jobDefinitions[generate.Parameters.JobDefinition]).toBeDefined();
  });

  it('the ItemReader stand-in changes the map state only: ItemReader and ResultWriter out, ItemsPath in', () => {
    const local = withInlineItems(loaded.batch, BATCH_STATES.runManifest, `$.${MANIFEST_ITEMS_FIELD}`) as typeof loaded.batch;
    const { [BATCH_STATES.runManifest]: before, ...restBefore } = loaded.batch.States;
    const { [BATCH_STATES.runManifest]: after, ...restAfter } = local.States;
    expect(restAfter).toEqual(restBefore);
    expect({ ...local, States: {} }).toEqual({ ...loaded.batch, States: {} });
    const { ItemReader, ResultWriter, ...mapBefore } = before;
    expect(ItemReader).toBeDefined();
    expect(ResultWriter).toBeDefined();
    expect(after).toEqual({ ...mapBefore, ItemsPath: `$.${MANIFEST_ITEMS_FIELD}` });
  });

  it('are cached under a key of their inputs', async () => {
    const again = await loadLocalDefinitions({ cacheDir: DEFINITIONS_CACHE, onSynth: () => expect.unreachable('a second load must come from the cache') });
    expect(again.key).toBe(loaded.key);
    expect(again.generation).toEqual(loaded.generation);
  });
});
