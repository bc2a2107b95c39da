/**
 * The defaults table (FAMILY_TABLE, REQUEST_FALLBACKS) and makePlan, the one path from a request
 * to a sampler plan: the schemas derive their family rules from the table, exported manifests
 * state its values, and makePlan follows a model's own schedule where it differs.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { FAMILY_FIELDS, FAMILY_NAMES, FAMILY_TABLE, makePlan, planJson, planRecord, PlanError, REQUEST_FALLBACKS } from '../src/sampler/index.ts';
import type { ModelSchedule } from '../src/sampler/index.ts';
import { FALLBACK_FPS, FIELD_FAMILIES, Family, REQUIRED_DEFAULTS } from '../src/schemas/index.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('the defaults table', () => {
  it('has one row per family name, whose kind is its schedule kind', () => {
    expect(Object.keys(FAMILY_TABLE)).toEqual([...FAMILY_NAMES]);
    expect(Family.options).toEqual([...FAMILY_NAMES]);
    for (const f of FAMILY_NAMES) {
      const row = FAMILY_TABLE[f];
      expect(row.name).toBe(f);
      expect(row.schedule.kind, f).toBe(row.kind);
    }
  });

  it('each row has a reference value for every default its manifests must state, and for the fields it takes', () => {
    for (const f of FAMILY_NAMES) {
      const row = FAMILY_TABLE[f];
      for (const k of row.requiredDefaults) {
        expect(k === 'fps' || row.fields.includes(k), `${f}: required ${k} is a field it takes`).toBe(true);
        expect(row.defaults[k], `${f}: defaults.${k}`).toBeTypeOf('number');
      }
      for (const k of FAMILY_FIELDS) if (!row.fields.includes(k)) expect(row.defaults[k], `${f}: defaults.${k} (not its field)`).toBeUndefined();
      expect(row.textPrompt).toBe(row.kind === 'vp-ddim');
    }
  });

  it('the schemas take their family rules from it', () => {
    for (const field of FAMILY_FIELDS) {
      expect(FIELD_FAMILIES[field]).toEqual(FAMILY_NAMES.filter((f) => FAMILY_TABLE[f].fields.includes(field)));
    }
    for (const f of FAMILY_NAMES) expect(REQUIRED_DEFAULTS[f]).toEqual(FAMILY_TABLE[f].requiredDefaults);
    expect(FALLBACK_FPS).toBe(REQUEST_FALLBACKS.fps);
  });

  it("agrees with the manifests tools/export wrote for the stand-in bundles (test/fixtures/golden/bundles)", () => {
    const dir = join(ROOT, 'test', 'fixtures', 'golden', 'bundles');
    const names = readdirSync(dir);
    expect(names.length).toBeGreaterThanOrEqual(3);
    for (const name of names) {
      const m = JSON.parse(readFileSync(join(dir, name, 'manifest.json'), 'utf8')) as {
        family: (typeof FAMILY_NAMES)[number]; cil: boolean; schedule: ModelSchedule & { betaSchedule?: string }; defaults: Record<string, number>;
      };
      const row = FAMILY_TABLE[m.family];
      const { betaSchedule: _b, ...schedule } = m.schedule;
      expect(schedule, name).toEqual(row.schedule);
      expect(m.defaults.start, name).toBe(m.cil ? row.startCil : row.defaults.start);
      for (const [k, v] of Object.entries(row.defaults)) if (k !== 'start') expect(m.defaults[k], `${name}: defaults.${k}`).toBe(v);
    }
  });
});

describe('makePlan', () => {
  it("defaults to the family's reference schedule and values; a request's values and a model's schedule win", () => {
    for (const f of FAMILY_NAMES) {
      const byFamily = makePlan({ family: f });
      expect(planJson(makePlan({ family: f, schedule: FAMILY_TABLE[f].schedule }))).toEqual(planJson(byFamily));
      expect(planJson(makePlan({ family: f, steps: null, start: null, eta: null, spacing: null }))).toEqual(planJson(byFamily));
      expect(byFamily.steps.length).toBe(FAMILY_TABLE[f].defaults.steps);
      expect(byFamily.schedule.start).toBe(FAMILY_TABLE[f].defaults.start);
      expect(makePlan({ family: f, cil: true }).schedule.start).toBe(FAMILY_TABLE[f].startCil);
    }
    const dc = FAMILY_TABLE.dynamicrafter.schedule;
    const quad = makePlan({ family: 'dynamicrafter', schedule: { ...dc, spacing: 'quad' }, steps: 10 });
    expect(planJson(quad)).toEqual(planJson(makePlan({ family: 'dynamicrafter', spacing: 'quad', steps: 10 })));
    expect(planJson(quad)).not.toEqual(planJson(makePlan({ family: 'dynamicrafter', steps: 10 })));
    const noRescale = makePlan({ family: 'dynamicrafter', schedule: { ...dc, dynamicRescale: { ...dc.dynamicRescale!, enabled: false } }, steps: 10 });
    expect(Array.from(noRescale.schedule.kind === 'ddim' ? noRescale.schedule.scale : [])).toEqual(Array(10).fill(1));
    const svd = makePlan({ family: 'svd', schedule: { ...FAMILY_TABLE.svd.schedule, sigmaMin: 0.01 }, steps: 5 });
    expect(svd.schedule.kind === 'euler' ? svd.schedule.sigmas[4] : 0).toBeCloseTo(0.01, 12);
  });

  it('refuses a schedule of the other kind, and DDIM settings for an Euler family', () => {
    expect(() => makePlan({ family: 'svd', schedule: FAMILY_TABLE.dynamicrafter.schedule })).toThrow(PlanError);
    expect(() => makePlan({ family: 'svd', eta: 0.5 })).toThrow(/eta applies to DDIM families only, not svd/);
    expect(() => makePlan({ family: 'svd', spacing: 'quad' })).toThrow(PlanError);
  });

  it('planRecord is the short form metadata.json records', () => {
    const d = makePlan({ family: 'videocrafter', steps: 3, start: 900 });
    expect(planRecord(d)).toEqual({ kind: 'ddim', start: 900, eta: 1, timesteps: Array.from(d.schedule.timesteps) });
    const e = makePlan({ family: 'svd', steps: 3 });
    if (e.schedule.kind !== 'euler') throw new Error('svd plans are Euler plans');
    expect(planRecord(e)).toEqual({ kind: 'euler', sigmaMax: 700, sigmas: Array.from(e.schedule.sigmas), initNoiseSigma: e.schedule.initNoiseSigma });
  });
});
