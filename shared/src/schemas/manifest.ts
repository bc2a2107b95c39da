/**
 * The model-bundle manifest (docs/design.md §5.2), `manifest.json` at the root of a bundle folder or S3
 * prefix. It says which family the model is, which ONNX files make it up and their input/output
 * names and shapes, the latent geometry, the noise schedule, and the defaults a job request's
 * null fields take. The same contract is met by real exports and the tiny demo model.
 * Documented in docs/contracts.md.
 */
import { z } from 'zod';
import type { SchemaIssue } from './common.ts';
import { arrayOf, ContractError, ModelId, parseOrThrow, SafeRelativeKey } from './common.ts';
import { FAMILY_NAMES, FAMILY_TABLE } from '#shared/sampler';
import { Family } from './family.ts';
import { familyIssues, TunableFields } from './jobRequest.ts';

export const MANIFEST_FORMAT = 'cil-bundle/1';

/** A symbolic axis name ('batch', 'frames', …) or a fixed size. */
export const Dim = z.union([z.int().min(0), z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/)]);

export const TensorSpec = z.strictObject({
  name: z.string().min(1).max(256),
  dtype: z.enum(['float32', 'float16', 'int64', 'int32']),
  dims: arrayOf(Dim, 0, 16),
});
export type TensorSpec = z.infer<typeof TensorSpec>;

function uniqueNames(specs: readonly TensorSpec[], ctx: z.RefinementCtx, key: string): void {
  const seen = new Set<string>();
  specs.forEach((s, i) => {
    if (seen.has(s.name)) ctx.addIssue({ code: 'custom', path: [key, i, 'name'], message: `duplicate ${key} name "${s.name}"` });
    seen.add(s.name);
  });
}

export const Component = z
  .strictObject({
    /** The ONNX file, relative to the bundle root. */
    file: SafeRelativeKey.refine((f) => f.endsWith('.onnx'), { error: 'must name a .onnx file' }),
    /** External-data files the ONNX file references (models over 2 GB), relative to the bundle root. */
    externalData: z.array(SafeRelativeKey).optional(),
    /** SHA-256 (hex) of the ONNX file, checked after download when present (written by the exporter). */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, { error: 'must be 64 lower-case hex digits' }).optional(),
    inputs: arrayOf(TensorSpec, 1),
    outputs: arrayOf(TensorSpec, 1),
  })
  .superRefine((c, ctx) => {
    uniqueNames(c.inputs, ctx, 'inputs');
    uniqueNames(c.outputs, ctx, 'outputs');
  });
export type Component = z.infer<typeof Component>;

/**
 * DynamiCrafter's dynamic x̂0 rescale: scale_arr = concat(linspace(1, base, rampSteps),
 * full(timesteps, base)); `finalPrev` is the "previous" scale of the last step: 'tau0' uses
 * scale_arr[τ0] (DynamiCrafter), 'index0' uses scale_arr[0] (VideoCrafter1).
 */
export const DynamicRescale = z.strictObject({
  enabled: z.boolean(),
  base: z.number().gt(0).max(1),
  rampSteps: z.int().min(1).max(10000).default(400),
  finalPrev: z.enum(['tau0', 'index0']).default('tau0'),
});

export const VpSchedule = z
  .strictObject({
    kind: z.literal('vp-ddim'),
    /** LDM "linear": β = linspace(√linearStart, √linearEnd, timesteps)². */
    betaSchedule: z.literal('linear'),
    linearStart: z.number().gt(0).lt(1),
    linearEnd: z.number().gt(0).lt(1),
    timesteps: z.int().min(1).max(10000),
    rescaleZeroSnr: z.boolean(),
    parameterization: z.enum(['eps', 'v']),
    spacing: z.enum(['uniform', 'uniform_trailing', 'quad']),
    dynamicRescale: DynamicRescale.optional(),
  })
  .superRefine((s, ctx) => {
    if (s.linearStart >= s.linearEnd) {
      ctx.addIssue({ code: 'custom', path: ['linearEnd'], message: `must exceed linearStart (${s.linearStart})`, input: s.linearEnd });
    }
  });

export const EdmSchedule = z
  .strictObject({
    kind: z.literal('edm-euler'),
    sigmaMin: z.number().gt(0),
    sigmaMax: z.number().gt(0),
    rho: z.number().gt(0),
    parameterization: z.literal('v'),
  })
  .superRefine((s, ctx) => {
    if (s.sigmaMin >= s.sigmaMax) {
      ctx.addIssue({ code: 'custom', path: ['sigmaMax'], message: `must exceed sigmaMin (${s.sigmaMin})`, input: s.sigmaMax });
    }
  });

export const Schedule = z.discriminatedUnion('kind', [VpSchedule, EdmSchedule]);
export type Schedule = z.infer<typeof Schedule>;

/** Model defaults for a job request's null fields (same ranges as the request). */
export const ModelDefaults = z.strictObject({
  steps: TunableFields.steps,
  start: TunableFields.start,
  analyticInit: TunableFields.analyticInit.optional(),
  statistics: TunableFields.statistics.optional(),
  guidanceScale: TunableFields.guidanceScale.optional(),
  imageGuidanceScale: TunableFields.imageGuidanceScale.optional(),
  guidanceRescale: TunableFields.guidanceRescale.optional(),
  eta: TunableFields.eta.optional(),
  fps: TunableFields.fps.optional(),
  frameStride: TunableFields.frameStride.optional(),
  motionBucketId: TunableFields.motionBucketId.optional(),
  noiseAugStrength: TunableFields.noiseAugStrength.optional(),
  minGuidanceScale: TunableFields.minGuidanceScale.optional(),
  maxGuidanceScale: TunableFields.maxGuidanceScale.optional(),
});
export type ModelDefaults = z.infer<typeof ModelDefaults>;

/** Defaults each family must provide (beyond steps and start, which every model must), from the defaults table. */
export const REQUIRED_DEFAULTS: Readonly<Record<Family, readonly (keyof ModelDefaults)[]>> = Object.freeze(
  Object.fromEntries(FAMILY_NAMES.map((f) => [f, FAMILY_TABLE[f].requiredDefaults])) as Record<Family, readonly (keyof ModelDefaults)[]>,
);

/**
 * GPU memory a job of the bundle needs at one resolution (`HEIGHTxWIDTH`): `measured` on a GPU, or
 * `estimated` by the exporter from the parameter count, the activations at that resolution and
 * frame count, and the worker's batch-2 UNet call. The deployment checks it against the GPU of the
 * fleet it places the model on (infra/lib/config.ts).
 */
export const GpuMemoryNeed = z.strictObject({
  gib: z.number().gt(0).max(1024),
  source: z.enum(['measured', 'estimated']),
  frames: z.int().min(1).max(64),
  batch: z.int().min(1).max(16),
});
export type GpuMemoryNeed = z.infer<typeof GpuMemoryNeed>;

export const Manifest = z
  .strictObject({
    format: z.literal(MANIFEST_FORMAT),
    id: ModelId,
    family: Family,
    description: z.string().max(2000).optional(),
    /** True for a TimeNoise fine-tuned ("CIL") checkpoint. */
    cil: z.boolean(),
    resolution: z.strictObject({ height: z.int().min(8).max(8192), width: z.int().min(8).max(8192) }),
    /** Native frame count (a request's null `frames`). */
    frames: z.int().min(1).max(64),
    latent: z.strictObject({
      channels: z.int().min(1).max(64),
      downsample: z.int().min(1).max(64),
      scaleFactor: z.number().gt(0),
    }),
    schedule: Schedule,
    /** Hugging Face tokenizers JSON (families with text conditioning), relative to the bundle root. */
    tokenizer: z.strictObject({ file: SafeRelativeKey, maxLength: z.int().min(1).max(4096).default(77) }).optional(),
    /**
     * SHA-256 (hex) of bundle files by path (external data, tokenizer, and ONNX files too): the
     * worker checks every file it downloads against it (a component's own `sha256` counts as well).
     */
    files: z.record(SafeRelativeKey, z.string().regex(/^[0-9a-f]{64}$/, { error: 'must be 64 lower-case hex digits' })).optional(),
    defaults: ModelDefaults,
    /** GPU memory per resolution (`HEIGHTxWIDTH` → need); when present it must cover `resolution`. */
    gpuMemory: z.record(z.string().regex(/^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$/, { error: 'must be HEIGHTxWIDTH, such as 576x1024' }), GpuMemoryNeed).optional(),
    components: z
      .record(z.string().regex(/^[A-Za-z][A-Za-z0-9_-]{0,63}$/), Component)
      .refine((c) => Object.keys(c).length > 0, { error: 'must list at least one component' }),
  })
  .superRefine((m, ctx) => {
    const issue = (path: PropertyKey[], message: string): void => {
      ctx.addIssue({ code: 'custom', path, message });
    };
    const wantKind = FAMILY_TABLE[m.family].kind;
    if (m.schedule.kind !== wantKind) issue(['schedule', 'kind'], `${m.family} models use '${wantKind}', got '${m.schedule.kind}'`);
    for (const dim of ['height', 'width'] as const) {
      if (m.resolution[dim] % m.latent.downsample !== 0) {
        issue(['resolution', dim], `${m.resolution[dim]} is not a multiple of latent.downsample (${m.latent.downsample})`);
      }
    }
    const res = `${m.resolution.height}x${m.resolution.width}`;
    if (m.gpuMemory !== undefined && m.gpuMemory[res] === undefined) issue(['gpuMemory'], `has no entry for the bundle's resolution ${res}`);
    if (FAMILY_TABLE[m.family].textPrompt && m.tokenizer === undefined) issue(['tokenizer'], `required for ${m.family} models (text conditioning)`);
    for (const [name, c] of Object.entries(m.components)) {
      const f = m.files?.[c.file];
      if (c.sha256 !== undefined && f !== undefined && f !== c.sha256) issue(['files', c.file], `differs from components.${name}.sha256 (${c.sha256})`);
    }
    const d = m.defaults;
    for (const key of REQUIRED_DEFAULTS[m.family]) {
      if (d[key] === undefined) issue(['defaults', key], `required for ${m.family} models`);
    }
    for (const i of familyIssues(d, m.family)) issue(['defaults', i.path], i.message);
    if (d.analyticInit !== false && d.statistics === undefined) {
      issue(['defaults', 'statistics'], 'required unless defaults.analyticInit is false (Analytic-Init needs statistics)');
    }
    if (m.schedule.kind === 'vp-ddim' && d.start > m.schedule.timesteps) {
      issue(['defaults', 'start'], `must not exceed schedule.timesteps (${m.schedule.timesteps})`);
    }
    if (m.schedule.kind === 'edm-euler' && d.start <= m.schedule.sigmaMin) {
      issue(['defaults', 'start'], `σ_max must exceed schedule.sigmaMin (${m.schedule.sigmaMin})`);
    }
    if (d.minGuidanceScale !== undefined && d.maxGuidanceScale !== undefined && d.minGuidanceScale > d.maxGuidanceScale) {
      issue(['defaults', 'minGuidanceScale'], `must not exceed maxGuidanceScale (${d.maxGuidanceScale})`);
    }
  });
export type ManifestInput = z.input<typeof Manifest>;
export type Manifest = z.output<typeof Manifest>;

/** Thrown for a manifest that does not fit the contract; lists every issue with its path. */
export class ManifestError extends ContractError {
  override readonly name = 'ManifestError';
  constructor(where: string, issues: readonly SchemaIssue[]) {
    super(where, 'invalid model manifest', issues);
  }
}

/** Validates a parsed manifest.json; `where` (its path or S3 key) is named in errors. */
export function parseManifest(json: unknown, where: string): Manifest {
  return parseOrThrow(Manifest, json, (issues) => new ManifestError(where, issues));
}
