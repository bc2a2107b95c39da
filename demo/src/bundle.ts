/**
 * The demo model bundle (`cil demo-model`, docs/demo-model.md): manifest.json, tokenizer.json and
 * five ONNX files meeting the DynamiCrafter component contract, built deterministically from the
 * options alone (same options, same bytes; nothing is downloaded).
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseManifest, MANIFEST_FORMAT } from '#shared/schemas';
import type { Manifest, ManifestInput } from '#shared/schemas';
import type { VpScheduleConfig } from '#shared/sampler';
import { COMPONENT_NAMES, DOWNSAMPLE, demoOnnxFiles, demoSpecs } from './graphs.ts';
import type { ComponentName } from './graphs.ts';
import { DIRECTIONS, DemoModelError, LATENT_CHANNELS, checkGeometry, componentCount } from './paths.ts';
import type { DemoGeometry } from './paths.ts';
import { TEXT_LENGTH } from '#shared/schemas';
import { tokenizerJson } from './tokenizer.ts';
import { demoStatisticsFile } from './statistics.ts';

export const TOKENIZER_FILE = 'tokenizer.json';

export interface DemoModelOptions {
  /** Frame size in pixels, multiples of DOWNSAMPLE (8). */
  readonly height: number;
  readonly width: number;
  readonly frames: number;
  /** Strength of the static-image bias at large t, in [0, 1] (0: the exact denoiser). */
  readonly leak: number;
  /** Motion directions, 1 … 10 (the first n of DIRECTIONS: left, right, up, down, zoom-in, zoom-out, orbit-left, orbit-right, up-left, down-right). */
  readonly paths: number;
  /** Speed levels per direction, 1 … 8. */
  readonly speeds: number;
}

export const DEMO_DEFAULTS: Readonly<DemoModelOptions> = Object.freeze({ height: 160, width: 256, frames: 16, leak: 0.6, paths: 8, speeds: 3 });

export const DEMO_MODEL_ID = 'demo';
export const DEMO_STATISTICS_ID = 'demo';
/** Where a bundle may ship its default statistics: statistics/<id>.safetensors. */
export const DEMO_STATISTICS_FILE = `statistics/${DEMO_STATISTICS_ID}.safetensors`;

/** DynamiCrafter's schedule (LDM linear betas, rescaled to zero terminal SNR). */
export const DEMO_SCHEDULE: Readonly<VpScheduleConfig> = Object.freeze({ linearStart: 0.00085, linearEnd: 0.012, timesteps: 1000, rescaleZeroSnr: true });

/**
 * Largest μ the UNet builds (components × frames × latent pixels): 16 Mi, i.e. 256 MiB of float32
 * per batch item over the 4 latent channels while it runs (the file itself stays small).
 */
const MAX_PATH_VALUES = 1 << 24;

/** Checks options and derives the latent geometry; DemoModelError names the bad option. */
export function demoGeometry(o: DemoModelOptions): DemoGeometry {
  for (const k of ['height', 'width'] as const) {
    const v = o[k];
    if (!Number.isInteger(v) || v < DOWNSAMPLE || v > 1024 || v % DOWNSAMPLE !== 0) {
      throw new DemoModelError(`demo model: ${k} must be a multiple of ${DOWNSAMPLE} in [${DOWNSAMPLE}, 1024], got ${v}`);
    }
  }
  if (!Number.isFinite(o.leak) || o.leak < 0 || o.leak > 1) throw new DemoModelError(`demo model: leak must be a number in [0, 1], got ${o.leak}`);
  const g: DemoGeometry = { h: o.height / DOWNSAMPLE, w: o.width / DOWNSAMPLE, frames: o.frames, paths: o.paths, speeds: o.speeds };
  checkGeometry(g);
  const values = componentCount(g) * g.frames * g.h * g.w;
  if (values > MAX_PATH_VALUES) {
    throw new DemoModelError(`demo model: paths × speeds × frames × latent pixels = ${values} exceeds ${MAX_PATH_VALUES}; use fewer frames, paths or speeds, or a smaller size`);
  }
  return g;
}

/**
 * manifest.json as written (checked with parseManifest before it is returned). With `onnx`, each
 * component also records the SHA-256 of its file (the worker verifies it after download).
 */
export function demoManifestJson(o: DemoModelOptions, onnx?: Readonly<Record<ComponentName, Uint8Array>>): ManifestInput {
  const g = demoGeometry(o);
  const specs = demoSpecs(g);
  const components: Record<string, unknown> = {};
  for (const name of COMPONENT_NAMES) {
    const s = specs[name];
    const t = (x: (typeof s.inputs)[number]): Record<string, unknown> => ({ name: x.name, dtype: x.dtype, dims: [...x.dims] });
    const c: Record<string, unknown> = { file: s.file };
    if (onnx) c.sha256 = createHash('sha256').update(onnx[name]).digest('hex');
    components[name] = { ...c, inputs: s.inputs.map(t), outputs: s.outputs.map(t) };
  }
  const directions = DIRECTIONS.slice(0, g.paths).map((d) => d.name);
  const m: ManifestInput = {
    format: MANIFEST_FORMAT,
    id: DEMO_MODEL_ID,
    family: 'dynamicrafter',
    description:
      `Tiny demo model (cil demo-model): the exact posterior-mean denoiser of a mixture of ${componentCount(g)} motion paths ` +
      `(${directions.join(', ')} × ${g.speeds} speeds) of the conditional image, with static-image leak ${o.leak}. See docs/demo-model.md.`,
    cil: false,
    resolution: { height: o.height, width: o.width },
    frames: o.frames,
    latent: { channels: LATENT_CHANNELS, downsample: DOWNSAMPLE, scaleFactor: 1 },
    schedule: {
      kind: 'vp-ddim',
      betaSchedule: 'linear',
      linearStart: DEMO_SCHEDULE.linearStart,
      linearEnd: DEMO_SCHEDULE.linearEnd,
      timesteps: DEMO_SCHEDULE.timesteps,
      rescaleZeroSnr: DEMO_SCHEDULE.rescaleZeroSnr,
      parameterization: 'v',
      spacing: 'uniform_trailing',
      dynamicRescale: { enabled: true, base: 0.7, rampSteps: 400, finalPrev: 'tau0' },
    },
    tokenizer: { file: TOKENIZER_FILE, maxLength: TEXT_LENGTH },
    defaults: {
      steps: 25,
      start: 940,
      analyticInit: true,
      statistics: DEMO_STATISTICS_ID,
      guidanceScale: 7.5,
      guidanceRescale: 0.7,
      eta: 1,
      frameStride: 24,
      fps: 8,
    },
    components: components as ManifestInput['components'],
  };
  parseManifest(m, 'demo manifest');
  return m;
}

/** The parsed manifest. */
export function demoManifest(o: DemoModelOptions): Manifest {
  return parseManifest(demoManifestJson(o), 'demo manifest');
}

export interface DemoBundle {
  readonly manifest: Manifest;
  /** File name (relative to the bundle root) → bytes, in a fixed order. */
  readonly files: ReadonlyMap<string, Uint8Array>;
}

function jsonBytes(v: unknown): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);
}

/** Builds every file of the bundle in memory. Options default to DEMO_DEFAULTS. */
export function buildDemoBundle(options: Partial<DemoModelOptions> = {}): DemoBundle {
  const o: DemoModelOptions = { ...DEMO_DEFAULTS, ...options };
  const onnx = demoOnnxFiles({ geometry: demoGeometry(o), schedule: DEMO_SCHEDULE, leak: o.leak });
  const json = demoManifestJson(o, onnx);
  const manifest = parseManifest(json, 'demo manifest');
  const files = new Map<string, Uint8Array>();
  files.set('manifest.json', jsonBytes(json));
  files.set(TOKENIZER_FILE, jsonBytes(tokenizerJson()));
  for (const name of COMPONENT_NAMES) files.set(manifest.components[name].file, onnx[name]);
  // The demo's default statistics ship inside the bundle (see statistics.ts).
  files.set(DEMO_STATISTICS_FILE, demoStatisticsFile(demoGeometry(o), o.height, o.width));
  return { manifest, files };
}

/** Writes the bundle into `dir` (created if missing; its files are overwritten). Returns what it wrote. */
export async function writeDemoBundle(dir: string, options: Partial<DemoModelOptions> = {}): Promise<{ file: string; bytes: number }[]> {
  const bundle = buildDemoBundle(options);
  await mkdir(dir, { recursive: true });
  const written: { file: string; bytes: number }[] = [];
  for (const [name, bytes] of bundle.files) {
    const file = join(dir, name);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, bytes);
    written.push({ file, bytes: bytes.length });
  }
  return written;
}
