/**
 * `cil smoke` against the local pipeline (the CLI process, its S3 pointed at the local server,
 * the stack's outputs from a `cdk deploy --outputs-file` file): a built-in image through each
 * deployed model, provider, timings and cost per job. Locally the worker runs on the CPU, so the
 * smoke test must fail, and passes only with the test-only `--allow-cpu`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OUTPUTS } from '../infra/lib/names.ts';
import { localS3Env } from '../local/src/s3.ts';
import { formatSmoke, pricePerGpuHour, SmokeError } from '../cli/remote/smoke.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

let t: TestPipeline;
let dir: string;
let outputsFile: string;
const CLI = join(import.meta.dirname, '..', 'bin', 'cil.js');

function smoke(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, 'smoke', '--stack', 'CilVideo', '--outputs-file', outputsFile, '--steps', '5', '--poll', '1', '--timeout', '170', ...args], {
      env: { PATH: process.env.PATH, HOME: dir, ...localS3Env(t.pipeline.endpoint) },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

beforeAll(async () => {
  t = await startTestPipeline();
  dir = mkdtempSync(join(tmpdir(), 'cil-smoke-'));
  outputsFile = join(dir, 'outputs.json');
  writeFileSync(outputsFile, JSON.stringify({ CilVideo: { [OUTPUTS.bucket]: t.pipeline.bucket, [OUTPUTS.generationStateMachine]: t.pipeline.definitions.stateMachineArns.generation } }));
}, 120_000);

afterAll(async () => {
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('cil smoke', () => {
  it('fails when the jobs ran on the CPU (the local worker), naming why', async () => {
    const r = await smoke(['--json']);
    expect(r.code, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as { ok: boolean; jobs: { model: string; status: string; executionProvider: string; problem: string | null }[] };
    expect(report.ok).toBe(false);
    expect(report.jobs.map((j) => [j.model, j.status, j.executionProvider])).toEqual([['demo', 'succeeded', 'cpu']]);
    expect(report.jobs[0].problem).toMatch(/ran on cpu, not CUDA/);
  }, 200_000);

  it('with --allow-cpu (tests only): passes, with provider, timings and a cost estimate per job', async () => {
    const r = await smoke(['--allow-cpu', '--instance-type', 'g6e.xlarge']);
    expect(r.code, r.stderr).toBe(0);
    const [header, row] = r.stdout.split('\n');
    expect(header.split('\t')).toEqual(['model', 'job', 'status', 'provider', 'download s', 'session open s', 'step s', 'total s', 'cost USD (estimate)']);
    const cells = row.split('\t');
    expect(cells.slice(0, 4)).toEqual(['demo', expect.stringMatching(/^j-[0-9a-f]{24}$/), 'succeeded', 'cpu']);
    for (const c of cells.slice(4)) expect(Number(c)).toBeGreaterThanOrEqual(0);
    expect(r.stdout).toMatch(/price: 1\.861 USD per GPU-hour \(g6e\.xlarge on-demand list price, us-east-1 \(estimate\)\)/);
    expect(r.stdout.trim().endsWith('smoke test passed')).toBe(true);
  }, 200_000);

  it('prices: per GPU of a multi-GPU type; an unknown type is refused', () => {
    expect(pricePerGpuHour({ instanceType: 'p4d.24xlarge' }).usd).toBeCloseTo(32.773 / 8, 6);
    expect(pricePerGpuHour({ hourlyUsd: 2 })).toEqual({ usd: 2, source: 'given' });
    expect(() => pricePerGpuHour({ instanceType: 'm5.large' })).toThrow(SmokeError);
    expect(formatSmoke({ ok: false, pricePerGpuHourUsd: 1, priceSource: 'given', jobs: [] })).toMatch(/smoke test FAILED\n$/);
  });
});
