/**
 * `cil validate` as a user meets it (issue 18): the image's problem is reported before the
 * model's, and the demo model is found without --model-dir. (The Validate checks themselves:
 * functions/test/cli-validate.test.ts.)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli as cil } from './helpers/runCli.ts';
import { validateLocal } from '../validate.ts';
import { buildDemoBundle, DEMO_DEFAULTS, writeDemoBundle } from '../../demo/src/bundle.ts';
import { testCardPng } from '../../local/src/testCard.ts';

let dir: string;
let image: string;
let bad: string;
const cwd = process.cwd();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cil-validate-ux-'));
  image = join(dir, 'card.png');
  writeFileSync(image, await testCardPng());
  bad = join(dir, 'bad.png');
  writeFileSync(bad, 'not an image at all');
  // An empty working directory: no ./models/ here.
  mkdirSync(join(dir, 'work'));
  process.chdir(join(dir, 'work'));
});
afterAll(() => {
  process.chdir(cwd);
  rmSync(dir, { recursive: true, force: true });
});

describe('cil validate: the image first', () => {
  it('`cil validate bad.png` without --model-dir reports the bad image, not the model', async () => {
    const r = await cil(['validate', bad]);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({ error: 'InvalidImage', reason: `${bad}: not a PNG, JPEG or WebP image (checked by content, not by file name)` });
  });

  it('a bad image with a request for a model nobody has: still the image', async () => {
    const req = join(dir, 'other.json');
    writeFileSync(req, '{"model":"other"}');
    const r = await validateLocal(bad, { request: req });
    expect(r.ok ? null : r.error.error).toBe('InvalidImage');
    // With a good image the model is what is wrong.
    const g = await validateLocal(image, { request: req });
    expect(g.ok ? null : g.error.error).toBe('ModelNotFound');
    expect(g.ok ? null : g.error.reason).toMatch(/no models\/other\/manifest.json; pass --model-dir/);
  });

  it('an image too small to use is reported before the model too', async () => {
    const tiny = join(dir, 'tiny.png');
    writeFileSync(tiny, await sharp({ create: { width: 32, height: 32, channels: 3, background: '#ffffff' } }).png().toBuffer());
    const req = join(dir, 'other2.json');
    writeFileSync(req, '{"model":"other"}');
    const r = await validateLocal(tiny, { request: req });
    expect(r.ok ? null : r.error.error).toBe('InvalidImage');
    expect(r.ok ? null : r.error.reason).toMatch(/too small/);
  });
});

describe('cil validate: the demo bundle by default', () => {
  it('with no ./models/demo it uses the built-in demo bundle (what `cil demo-model` writes), says so, and finds its statistics in it', async () => {
    const r = await validateLocal(image);
    if (!r.ok) throw new Error(JSON.stringify(r.error));
    expect(r.request).toMatchObject({ model: 'demo', family: 'dynamicrafter', statistics: 'statistics/demo.safetensors' });
    expect(r.notes).toContain("model 'demo': no models/demo/manifest.json, so the built-in demo bundle (what `cil demo-model` writes and `npm run demo` uses)");
    // The statistics ship inside the demo bundle: nothing left unchecked.
    expect(r.notes.join('\n')).not.toMatch(/not checked/);
    expect(buildDemoBundle().manifest.id).toBe(r.request.model);
  });

  it('through the CLI: exit 0, the resolved request on stdout, the note on stderr', async () => {
    const r = await cil(['validate', image]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ model: 'demo', steps: 25 });
    expect(r.stderr).toMatch(/^cil validate: note: model 'demo'/);
  });

  it('./models/demo (where `cil demo-model --out models/demo` puts it) wins over the built-in one', async () => {
    const w = join(dir, 'with-models');
    mkdirSync(w);
    await writeDemoBundle(join(w, 'models', 'demo'), { height: 64, width: 96 });
    process.chdir(w);
    try {
      const out = join(dir, 'norm.png');
      const r = await validateLocal(image, { out });
      if (!r.ok) throw new Error(JSON.stringify(r.error));
      expect(r.notes.join('\n')).not.toMatch(/model 'demo'/);
      const m = await sharp(out).metadata();
      expect([m.width, m.height]).toEqual([96, 64]);
      expect([DEMO_DEFAULTS.width, DEMO_DEFAULTS.height]).not.toEqual([96, 64]);
    } finally {
      process.chdir(join(dir, 'work'));
    }
  });
});
