/**
 * `npx cdk synth` as a user runs it: offline, with no AWS account and no Docker. A `docker` on
 * the PATH that records any call proves that synth only records the two image assets (CDK
 * builds them at deploy time); the Lambda bundles are built by the local esbuild.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_STACK_NAME } from '../lib/app.ts';
import { findStateMachines } from '../lib/definitions.ts';
import { DEFAULT_HANDLER_ENTRIES, FUNCTIONS_DOCKERFILE, REPO_ROOT, WORKER_DOCKERFILE, repoPath } from '../lib/paths.ts';
import { FIXTURE_HANDLER } from './helpers.ts';

let work: string;
let out: string;
let marker: string;
let result: ReturnType<typeof spawnSync>;
let missingHandlers: string[];

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'cil-cdk-synth-'));
  out = join(work, 'cdk.out');
  marker = join(work, 'docker-was-called');
  const bin = join(work, 'bin');
  spawnSync('mkdir', ['-p', bin]);
  writeFileSync(join(bin, 'docker'), `#!/bin/sh\necho "$@" >> '${marker}'\nexit 1\n`);
  chmodSync(join(bin, 'docker'), 0o755);

  // The functions/ handlers are other people's files: when one is not there yet, synth uses the
  // stand-in instead (the CDK app takes other paths through -c cil:handlers).
  const handlers: Record<string, string> = {};
  missingHandlers = [];
  for (const [k, path] of Object.entries(DEFAULT_HANDLER_ENTRIES)) {
    if (!existsSync(repoPath(path))) {
      handlers[k] = FIXTURE_HANDLER;
      missingHandlers.push(path);
    }
  }
  const args = ['synth', '--output', out, '--quiet', '--no-notices', '--no-version-reporting', '--ci'];
  if (missingHandlers.length > 0) args.push('--context', `cil:handlers=${JSON.stringify(handlers)}`);

  const env: NodeJS.ProcessEnv = {
    PATH: [bin, join(REPO_ROOT, 'node_modules', '.bin'), process.env.PATH ?? ''].join(delimiter),
    HOME: work,
    CDK_DISABLE_VERSION_CHECK: '1',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
    // No account, no credentials, no metadata service: synth must not need any.
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: join(work, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-credentials'),
  };
  result = spawnSync(join(REPO_ROOT, 'node_modules', '.bin', 'cdk'), args, { cwd: REPO_ROOT, env, encoding: 'utf8', timeout: 240_000 });
}, 300_000);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('npx cdk synth', () => {
  it('exits 0 and writes the template', () => {
    expect(result.status, `${String(result.stderr)}`.slice(-4000)).toBe(0);
    if (missingHandlers.length > 0) console.warn(`synth used the stand-in handler for: ${missingHandlers.join(', ')}`);
    const template = JSON.parse(readFileSync(join(out, `${DEFAULT_STACK_NAME}.template.json`), 'utf8')) as { Resources: Record<string, { Type: string }> };
    expect(Object.keys(findStateMachines(template)).sort()).toEqual(['batch', 'generation', 'statistics']);
  });

  it('passes the cdk-nag checks (nothing unacknowledged)', () => {
    // CDK writes this report whenever a validation plugin ran; cdk-nag is one unless disabled
    // (cil:nag), and this synth does not disable it. So a missing file means the checks never
    // ran: that fails here, never passes unseen.
    const reportFile = join(out, 'validation-report.json');
    expect(existsSync(reportFile), `${reportFile} not written: cdk-nag did not run`).toBe(true);
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { pluginReports: { violations: unknown[] }[] };
    for (const p of report.pluginReports) expect(p.violations).toEqual([]);
  });

  it('records the two Docker image assets without building them', () => {
    expect(existsSync(marker) ? readFileSync(marker, 'utf8') : '', 'docker was called during synth').toBe('');
    const assets = JSON.parse(readFileSync(join(out, `${DEFAULT_STACK_NAME}.assets.json`), 'utf8')) as {
      dockerImages: Record<string, { source: { directory: string; dockerFile: string; platform: string } }>;
    };
    const images = Object.values(assets.dockerImages).map((a) => a.source);
    expect(images.map((i) => i.dockerFile).sort()).toEqual([FUNCTIONS_DOCKERFILE, WORKER_DOCKERFILE].sort());
    for (const i of images) {
      expect(i.platform).toBe('linux/amd64');
      const staged = join(out, i.directory);
      // The build context holds the Dockerfile and the sources it copies, not node_modules.
      expect(existsSync(join(staged, i.dockerFile)), i.dockerFile).toBe(true);
      expect(existsSync(join(staged, 'package-lock.json'))).toBe(true);
      expect(existsSync(join(staged, 'shared', 'src'))).toBe(true);
      expect(existsSync(join(staged, 'node_modules'))).toBe(false);
      expect(readdirSync(staged).sort()).not.toContain('infra/test');
    }
  });

  it('bundles the TypeScript Lambdas locally into ES modules', () => {
    const assets = JSON.parse(readFileSync(join(out, `${DEFAULT_STACK_NAME}.assets.json`), 'utf8')) as { files: Record<string, { source: { path: string; packaging?: string } }> };
    const bundles = Object.values(assets.files).filter((f) => f.source.packaging === 'zip');
    // Seven functions, six bundles: the starter and PrepareItem share functions/src/starter/handler.ts; the reconciler has its own.
    expect(bundles.length).toBe(6);
    for (const b of bundles) expect(existsSync(join(out, b.source.path, 'index.mjs')), b.source.path).toBe(true);
  });
});
