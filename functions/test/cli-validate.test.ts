/** `cil validate` (cli/validate.ts): the Validate core on local files. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerValidate, validateLocal, ValidationFailed } from '../../cli/validate.ts';
import { ResolvedRequest } from '#shared/schemas';
import { noiseImage, tinyManifest } from './helpers/fixtures.ts';

let dir: string;
let bundle: string;
let stats: string;
let image: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cil-validate-cli-'));
  bundle = join(dir, 'bundle');
  stats = join(dir, 'stats');
  mkdirSync(bundle);
  mkdirSync(stats);
  writeFileSync(join(bundle, 'manifest.json'), JSON.stringify(tinyManifest()));
  writeFileSync(join(stats, 'tiny-stats.safetensors'), Buffer.alloc(8));
  image = join(dir, 'cat.jpg');
  writeFileSync(image, await noiseImage(300, 200).jpeg().toBuffer());
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the verb through commander, capturing stdout. */
async function cli(...args: string[]): Promise<{ stdout: string; error: unknown }> {
  const program = new Command('cil').exitOverride();
  registerValidate(program);
  let stdout = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    stdout += String(s);
    return true;
  });
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await program.parseAsync(['validate', ...args], { from: 'user' });
    return { stdout, error: null };
  } catch (e) {
    return { stdout, error: e };
  } finally {
    spy.mockRestore();
    err.mockRestore();
  }
}

describe('cil validate', () => {
  it('prints the resolved request and writes the normalised image', async () => {
    const req = join(dir, 'req.json');
    writeFileSync(req, JSON.stringify({ prompt: 'a cat', steps: 5, seed: 3 }));
    const out = join(dir, 'norm.png');
    const r = await cli(image, '--request', req, '--model-dir', bundle, '--statistics-dir', stats, '--out', out);
    expect(r.error).toBeNull();
    const printed = ResolvedRequest.parse(JSON.parse(r.stdout));
    expect(printed).toMatchObject({ model: 'tiny', prompt: 'a cat', steps: 5, seed: 3, start: 940, statistics: 'statistics/tiny-stats.safetensors' });
    const m = await sharp(out).metadata();
    expect([m.format, m.width, m.height, m.channels]).toEqual(['png', 96, 64, 3]);
  });

  it('prints {"error", "reason"} and fails for a bad image', async () => {
    const bad = join(dir, 'bad.png');
    writeFileSync(bad, 'not an image at all');
    const r = await cli(bad, '--model-dir', bundle);
    expect(r.error).toBeInstanceOf(ValidationFailed);
    const j = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(Object.keys(j)).toEqual(['error', 'reason']);
    expect(j.error).toBe('InvalidImage');
    expect(j.reason).toMatch(/not a PNG, JPEG or WebP/);
  });

  it.each([
    ['a missing image', 'InputNotFound', /no such file/, () => [join(dir, 'nope.png'), '--model-dir', bundle]],
    // (the demo model is always found: cli/test/validate.test.ts)
    ['no bundle', 'ModelNotFound', /no models\/other\/manifest.json; pass --model-dir/, () => [image, '--request', write('other-model.json', '{"model":"other"}')]],
    ['a request for another model', 'ModelNotFound', /is the manifest of 'tiny'/, () => [image, '--model-dir', bundle, '--request', write('other.json', '{"model":"other"}')]],
    ['a bad request', 'InvalidRequest', /steps: Too small/, () => [image, '--model-dir', bundle, '--request', write('bad.json', '{"steps": -1}')]],
    ['missing statistics', 'StatisticsNotFound', /tiny-stats.safetensors does not exist/, () => [image, '--model-dir', bundle, '--statistics-dir', dir]],
  ])('%s → %s', async (_what, name, reason, args) => {
    const a = args();
    const r = await validateLocal(a[0], optsOf(a.slice(1)));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.error).toBe(name);
      expect(r.error.reason).toMatch(reason);
    }
  });

  it('draws a seed when the request has none', async () => {
    const r = await validateLocal(image, { modelDir: bundle });
    expect(r.ok && Number.isInteger(r.request.seed) && r.request.seed >= 0 && r.request.seed < 2 ** 48).toBe(true);
  });
});

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

function optsOf(args: string[]): { request?: string; modelDir?: string; statisticsDir?: string } {
  const o: Record<string, string> = {};
  for (let i = 0; i < args.length; i += 2) o[{ '--request': 'request', '--model-dir': 'modelDir', '--statistics-dir': 'statisticsDir' }[args[i]]!] = args[i + 1];
  return o;
}
