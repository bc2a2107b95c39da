/**
 * End to end through the command line: `cil local up` in one process, `cil local run` in
 * another (it uploads to the running pipeline and follows the job through the execution files),
 * `cil local notifications`, `cil local down`; and `cil local run` with no `up` running (the
 * pipeline runs in-process for the job), on an image the pipeline refuses.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLocalDefinitions } from '../local/src/definitions.ts';
import { CLI_ENTRY } from '../local/src/paths.ts';
import { testCardPng } from '../local/src/testCard.ts';
import { DEFINITIONS_CACHE } from './helpers/local.ts';

let dir: string;
let up: ChildProcess | null = null;

function cil(args: string[], timeout = 60_000): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI_ENTRY, ...args], { encoding: 'utf8', timeout });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A data folder whose definitions cache is already filled (no synthesis in the CLI processes). */
async function dataFolder(name: string): Promise<string> {
  const d = join(dir, name);
  mkdirSync(join(d, 'cache'), { recursive: true });
  const defs = await loadLocalDefinitions({ cacheDir: DEFINITIONS_CACHE });
  copyFileSync(join(DEFINITIONS_CACHE, `definitions-${defs.key}.json`), join(d, 'cache', `definitions-${defs.key}.json`));
  return d;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cil-local-cli-'));
  writeFileSync(join(dir, 'card.png'), await testCardPng(192, 128));
  writeFileSync(join(dir, 'broken.png'), 'not an image');
}, 90_000);
afterAll(() => {
  if (up && up.exitCode === null) up.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('cil local up / run / notifications / down', () => {
  it('runs a job through a pipeline started by another process, then stops it', async () => {
    const data = await dataFolder('up');
    up = spawn(process.execPath, [CLI_ENTRY, 'local', 'up', '--data', data, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let upOut = '';
    up.stdout!.on('data', (d: Buffer) => (upOut += d.toString()));
    up.stderr!.on('data', (d: Buffer) => (upOut += d.toString()));
    const exited = new Promise<number | null>((r) => up!.once('exit', (c) => r(c)));
    for (let i = 0; i < 600 && !existsSync(join(data, 'up.json')); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(join(data, 'up.json')), upOut).toBe(true);

    const run = cil(['local', 'run', join(dir, 'card.png'), '--data', data, '--prompt', 'pan right', '--seed', '5']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const jobId = /job (j-[0-9a-f]{24}) SUCCEEDED/.exec(run.stdout)?.[1];
    expect(jobId, run.stdout).toBeDefined();
    expect(run.stderr).toContain('▸ Generate');
    const outDir = join(data, 'outputs', jobId!);
    expect(readdirSync(outDir).sort()).toEqual(['metadata.json', 'poster.png', 'result.json', 'video.gif', 'video.mp4']);

    const notes = cil(['local', 'notifications', '--data', data, '--job', jobId!, '--json']);
    expect(notes.code).toBe(0);
    const lines = notes.stdout.trim().split('\n').map((l) => JSON.parse(l) as { channel: string; subject?: string });
    expect(lines.map((l) => l.channel).sort()).toEqual(['eventbridge', 'sns']);
    expect(lines.find((l) => l.channel === 'sns')?.subject).toBe(`CIL job ${jobId} succeeded`);

    const down = cil(['local', 'down', '--data', data]);
    expect(down.code, down.stderr).toBe(0);
    expect(await exited).toBe(0);
    expect(existsSync(join(data, 'up.json'))).toBe(false);
    expect(upOut).toContain(`generation ${jobId} SUCCEEDED`);
    // Down again: nothing to stop, still fine.
    expect(cil(['local', 'down', '--data', data]).code).toBe(0);
  }, 120_000);

  it('without `up`, runs the job in-process; a refused image exits 1 with the failure record', async () => {
    const data = await dataFolder('inproc');
    const r = cil(['local', 'run', join(dir, 'broken.png'), '--data', data]);
    expect(r.code, r.stderr + r.stdout).toBe(1);
    expect(r.stdout).toMatch(/job j-[0-9a-f]{24} FAILED: InvalidImage/);
    expect(r.stdout).toContain('failed step Validate');
    const jobId = /job (j-[0-9a-f]{24})/.exec(r.stdout)![1];
    expect(existsSync(join(data, 'outputs', jobId, 'failure.json'))).toBe(true);
    // Usage errors are exit code 2.
    expect(cil(['local', 'run', join(dir, 'card.png'), '--data', data, '--steps', '0']).code).toBe(2);
  }, 90_000);
});
