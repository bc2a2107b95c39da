/**
 * The deploy path of docs/infra.md ("Deploy", steps 1–5), its local half run as written. The
 * commands are parsed out of the section's code blocks, so the document and this test cannot
 * drift: a command added there is run here, or refused as unknown.
 *
 * What runs and what is stood in, per command:
 * - `npx cdk …` (bootstrap, deploy): not run — they need an AWS account, credentials and Docker.
 *   The stack they would create is stood in by the local pipeline, which runs the same synthesized
 *   workflow definitions against an S3 server on 127.0.0.1 (docs/local.md).
 * - `BUCKET=$(aws cloudformation describe-stacks …)`: not run — needs the deployed stack; BUCKET
 *   is the local pipeline's bucket instead.
 * - `aws s3 sync <dir> s3://$BUCKET/<prefix>/` and `aws s3 cp <file> s3://$BUCKET/<key>`: not run
 *   (no AWS CLI, no account); performed as the same PutObject calls against the local S3 server,
 *   reading the same local paths. A source that no earlier command created fails the test.
 * - every other command (`npx cil …`, `printf …`): run literally with bash, in an empty folder,
 *   where `npx cil` is the repository's `bin/cil.js` on this Node (an `npx` shim on PATH: `npx`
 *   itself would look outside the repository from a temporary folder).
 * - any other `aws …` command: the test fails until it is classified here.
 *
 * The one file no command makes is `cat.png`, the user's own picture (step 4 says so): the test
 * card of local mode stands in for it.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IMAGE_EXTENSIONS, jobKeys, modelPrefix, PREFIX, statisticsKey } from '#shared/schemas';
import { testCardPng } from '../local/src/testCard.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

const REPO = resolve(import.meta.dirname, '..');
const INFRA_MD = join(REPO, 'docs', 'infra.md');

interface DocCommand {
  /** The step of the numbered list the code block belongs to. */
  readonly step: number;
  /** One logical shell line (continuations joined), as written. */
  readonly text: string;
}

/** The "## Deploy" section of docs/infra.md: its `sh` code blocks' commands, with their step numbers. */
function deployCommands(markdown: string): { commands: DocCommand[]; section: string } {
  const start = markdown.indexOf('\n## Deploy');
  if (start < 0) throw new Error('docs/infra.md has no "## Deploy" section');
  const rest = markdown.slice(start + 1);
  const end = rest.indexOf('\n## ', 3);
  const section = end < 0 ? rest : rest.slice(0, end);
  const commands: DocCommand[] = [];
  let step = 0;
  let block: string[] | null = null;
  for (const raw of section.split('\n')) {
    const line = raw.trim();
    const item = /^(\d+)\.\s/.exec(raw);
    if (block === null && item) step = Number(item[1]);
    if (line.startsWith('```')) {
      if (block === null) {
        if (line !== '```sh' && line !== '```bash') throw new Error(`docs/infra.md Deploy: a code block '${line}'; only sh blocks belong in the deploy path`);
        block = [];
      } else {
        // Join backslash continuations, drop blank and comment-only lines.
        const joined = block.join('\n').replace(/\\\n\s*/g, '');
        for (const l of joined.split('\n')) if (l.trim() !== '' && !l.trim().startsWith('#')) commands.push({ step, text: l.trim() });
        block = null;
      }
      continue;
    }
    if (block !== null) block.push(line);
  }
  if (block !== null) throw new Error('docs/infra.md Deploy: an unclosed code block');
  return { commands, section };
}

type Action =
  | { readonly kind: 'skip'; readonly why: string }
  | { readonly kind: 'bucket' }
  | { readonly kind: 'sync'; readonly from: string; readonly prefix: string }
  | { readonly kind: 'cp'; readonly from: string; readonly key: string }
  | { readonly kind: 'run' };

function classify(c: DocCommand): Action {
  const t = c.text.replace(/\s+#.*$/, '');
  if (/^npx cdk\s/.test(t)) return { kind: 'skip', why: 'needs an AWS account, credentials and Docker' };
  if (/^BUCKET=\$\(aws cloudformation describe-stacks\b.*DataBucketName.*\)$/.test(t)) return { kind: 'bucket' };
  let m = /^aws s3 sync (\S+) s3:\/\/\$BUCKET\/(\S+\/)$/.exec(t);
  if (m) return { kind: 'sync', from: m[1], prefix: m[2] };
  m = /^aws s3 cp (\S+)\s+s3:\/\/\$BUCKET\/(\S+[^/])$/.exec(t);
  if (m) return { kind: 'cp', from: m[1], key: m[2] };
  if (/^aws\s/.test(t) || /\$\(aws\s/.test(t)) throw new Error(`step ${c.step}: \`${c.text}\` is an AWS command this test does not know; classify it in test/deploy-path.test.ts`);
  return { kind: 'run' };
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
}

const doc = deployCommands(readFileSync(INFRA_MD, 'utf8'));
const work = mkdtempSync(join(tmpdir(), 'cil-deploy-path-'));
const ran: { step: number; text: string; how: string }[] = [];
/** Bucket keys in upload order, the local file each came from, and the execution the image upload started. */
const uploaded: string[] = [];
const uploadedFrom = new Map<string, string>();
let imageJob: { key: string; id: string } | null = null;
let t: TestPipeline;

beforeAll(async () => {
  // The user's picture (the only input no command makes).
  writeFileSync(join(work, 'cat.png'), await testCardPng());
  // `npx cil …` → this repository's CLI on this Node; any other npx use is refused.
  const shim = join(work, '.bin');
  mkdirSync(shim);
  writeFileSync(
    join(shim, 'npx'),
    `#!/bin/sh\nif [ "$1" = cil ]; then shift; exec '${process.execPath}' '${join(REPO, 'bin', 'cil.js')}' "$@"; fi\necho "npx $1: not available in this test" >&2\nexit 127\n`,
  );
  chmodSync(join(shim, 'npx'), 0o755);

  t = await startTestPipeline({ seedDemo: false });
  const { bucket } = t.pipeline;
  for (const c of doc.commands) {
    const a = classify(c);
    if (a.kind === 'skip') {
      ran.push({ step: c.step, text: c.text, how: `not run: ${a.why}` });
    } else if (a.kind === 'bucket') {
      ran.push({ step: c.step, text: c.text, how: `not run: BUCKET is the local pipeline's bucket (${bucket})` });
    } else if (a.kind === 'run') {
      const r = spawnSync('bash', ['-e', '-o', 'pipefail', '-c', c.text], {
        cwd: work,
        env: { ...process.env, PATH: `${shim}:${process.env.PATH ?? ''}`, BUCKET: bucket },
        encoding: 'utf8',
        timeout: 60_000,
      });
      if (r.status !== 0) throw new Error(`step ${c.step}: \`${c.text}\` exited ${r.status ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
      ran.push({ step: c.step, text: c.text, how: 'run' });
    } else {
      const from = resolve(work, a.from);
      if (!existsSync(from)) throw new Error(`step ${c.step}: \`${c.text}\` reads ${a.from}, which no earlier command of docs/infra.md created`);
      const puts: { key: string; file: string }[] = [];
      if (a.kind === 'sync') {
        if (!statSync(from).isDirectory()) throw new Error(`step ${c.step}: ${a.from} is not a folder`);
        for (const f of filesUnder(from)) puts.push({ key: a.prefix + relative(from, f).split(sep).join('/'), file: f });
      } else {
        puts.push({ key: a.key, file: from });
      }
      for (const p of puts) {
        const up = await t.pipeline.upload(p.key, readFileSync(p.file));
        uploaded.push(p.key);
        uploadedFrom.set(p.key, p.file);
        if (p.key.startsWith(PREFIX.inputs) && IMAGE_EXTENSIONS.some((e) => p.key.toLowerCase().endsWith(e))) imageJob = { key: p.key, id: up.id };
      }
      ran.push({ step: c.step, text: c.text, how: `stood in: ${puts.length} PutObject to the local S3` });
    }
  }
}, 150_000);

afterAll(async () => {
  await t?.close();
  rmSync(work, { recursive: true, force: true });
});

describe('docs/infra.md deploy path, local half, as written', () => {
  it('finds the commands of steps 1–4 and runs every one that needs no AWS account', () => {
    expect(doc.commands.length).toBeGreaterThan(0);
    const notRun = ran.filter((r) => r.how.startsWith('not run')).map((r) => r.text);
    // Only the AWS-bound commands are left out: the CDK's and the stack-output lookup.
    expect(notRun.every((x) => /^npx cdk\s/.test(x) || /^BUCKET=\$\(aws /.test(x)), notRun.join('\n')).toBe(true);
    expect(ran.map((r) => r.text)).toEqual(doc.commands.map((c) => c.text));
    const literal = ran.filter((r) => r.how === 'run').map((r) => r.text);
    expect(literal.some((x) => x.startsWith('npx cil demo-model '))).toBe(true);
    expect(literal.some((x) => x.startsWith('npx cil validate '))).toBe(true);
  });

  it('uploads the bundle and its statistics where the stack reads them (models/<id>/, statistics/<id>.safetensors)', () => {
    const manifests = uploaded.filter((k) => k.startsWith(PREFIX.models) && k.endsWith('/manifest.json'));
    expect(manifests.length).toBeGreaterThan(0);
    for (const key of manifests) {
      // The manifest as the upload read it from disk names its own id; the key must be layout.ts's.
      const manifest = JSON.parse(readFileSync(uploadedFrom.get(key)!, 'utf8')) as {
        id: string;
        tokenizer?: { file?: string } | null;
        components: Record<string, { file: string }>;
        defaults: { analyticInit?: boolean; statistics?: string | null };
      };
      const prefix = modelPrefix(manifest.id);
      expect(key).toBe(`${prefix}manifest.json`);
      for (const c of Object.values(manifest.components)) expect(uploaded).toContain(prefix + c.file);
      if (manifest.tokenizer?.file) expect(uploaded).toContain(prefix + manifest.tokenizer.file);
      if (manifest.defaults.analyticInit && manifest.defaults.statistics) expect(uploaded).toContain(statisticsKey(manifest.defaults.statistics));
    }
  });

  it('the first upload starts a job that succeeds and leaves the outputs step 5 lists', async () => {
    expect(imageJob, 'no command uploaded an image under inputs/').not.toBeNull();
    const job = imageJob!;
    const rec = await t.pipeline.waitForJob(job.id, 90_000);
    expect(rec.status, `${rec.error}: ${rec.cause}`).toBe('SUCCEEDED');
    const listed = /outputs\/<jobId>\/` \(([^)]*)\)/.exec(doc.section);
    expect(listed, 'step 5 no longer lists the outputs as `outputs/<jobId>/` (`a`, `b`, …)').not.toBeNull();
    const names = [...listed![1].matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    expect(names).toContain('video.mp4');
    for (const n of names) expect(await t.exists(`${jobKeys(job.id).output}${n}`), n).toBe(true);
    // The sidecar the doc wrote was the request the job ran.
    const sidecar = JSON.parse(readFileSync(join(work, 'cat.json'), 'utf8')) as { prompt?: string };
    const meta = JSON.parse((await t.get(`${jobKeys(job.id).output}metadata.json`))!.toString('utf8')) as { params: { prompt: string } };
    expect(meta.params.prompt).toBe(sidecar.prompt);
  }, 120_000);
});
