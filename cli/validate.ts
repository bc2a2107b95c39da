/**
 * `cil validate`: Validate's core as a local pre-flight check. Prints the resolved request as JSON
 * and exits 0, or prints `{"error": "<TypedName>", "reason": "…"}` and exits 1.
 */
import { existsSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { randomInt } from 'node:crypto';
import type { Command } from 'commander';
import type { ResolvedRequest } from '#shared/schemas';
import { PREFIX } from '#shared/schemas';
import type { ErrorJson } from '../functions/src/errors.ts';
import { errorJson, InputNotFound, InvalidImage, InvalidRequest, ModelNotFound, PipelineError, StatisticsNotFound } from '../functions/src/errors.ts';
import { checkManifest, MAX_SIDECAR_BYTES, parseRequest, readRequestJson, resolveRequest, SEED_LIMIT } from '../functions/src/validate/core.ts';
import { IMAGE_LIMITS, normaliseImage } from '../functions/src/validate/image.ts';
import { buildDemoBundle, DEMO_MODEL_ID } from '../demo/src/bundle.ts';
import { errorName } from './errors.ts';
import { printable, printableJson } from './printable.ts';

export interface ValidateLocalOptions {
  /** A request JSON file (the sidecar); none: all defaults. */
  readonly request?: string;
  /**
   * The model bundle folder (holding manifest.json); default `./models/<model>/`, and for the
   * demo model, when there is none, the built-in demo bundle.
   */
  readonly modelDir?: string;
  /** A folder of statistics files (as under `statistics/` in the bucket); none: not checked. */
  readonly statisticsDir?: string;
  /** Where to write the normalised PNG. */
  readonly out?: string;
}

export type ValidateLocalResult =
  | { readonly ok: true; readonly request: ResolvedRequest; readonly notes: readonly string[] }
  | { readonly ok: false; readonly error: ErrorJson };

async function readLimited(path: string, max: number, what: string, tooLarge: (size: number) => Error): Promise<Buffer> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new InputNotFound(`${path}: not a file`);
    size = s.size;
  } catch (e) {
    if (e instanceof PipelineError) throw e;
    throw new InputNotFound(`${what} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (size > max) throw tooLarge(size);
  return readFile(path);
}

/** The size the image is first decoded at, to report its problems before the model's. */
const PROBE_SIZE = { width: 64, height: 64 };

interface FoundModel {
  readonly manifestPath: string;
  /** manifest.json's text; null: the folder has none. */
  readonly text: string | null;
  /** Whether the bundle holds this relative key (a shipped statistics file). */
  readonly ships: (key: string) => boolean;
  /** Where the bundle was found, when it was not where the user pointed. */
  readonly note?: string;
}

async function readBundleDir(dir: string, note?: string): Promise<FoundModel> {
  const manifestPath = join(dir, 'manifest.json');
  const text = existsSync(manifestPath) ? await readFile(manifestPath, 'utf8') : null;
  return { manifestPath, text, ships: (key) => existsSync(join(dir, key)), note };
}

/**
 * The bundle for a model id without --model-dir: `./models/<id>/` (the bucket's layout, where
 * `cil demo-model --out models/demo` puts the demo), and for the demo model, when there is none,
 * the built-in demo bundle: the same bytes `cil demo-model` writes by default and `npm run demo`
 * uploads, built in memory (a quarter of a second).
 */
function findModel(model: string): Promise<FoundModel> | FoundModel | null {
  const own = join('models', model);
  if (existsSync(join(own, 'manifest.json'))) return readBundleDir(own);
  if (model !== DEMO_MODEL_ID) return null;
  const { files } = buildDemoBundle();
  const manifest = files.get('manifest.json');
  if (manifest === undefined) return null;
  return {
    manifestPath: '(built-in demo bundle)/manifest.json',
    text: new TextDecoder().decode(manifest),
    ships: (key) => files.has(key),
    note: `model '${model}': no ${join(own, 'manifest.json')}, so the built-in demo bundle (what \`cil demo-model\` writes and \`npm run demo\` uses)`,
  };
}

/** The same checks as the Validate Lambda, on local files (no S3). Never throws typed errors: returns them. */
export async function validateLocal(imagePath: string, o: ValidateLocalOptions = {}): Promise<ValidateLocalResult> {
  const notes: string[] = [];
  try {
    const image = await readLimited(imagePath, IMAGE_LIMITS.maxBytes, 'image', (n) => new InvalidImage(`${imagePath}: ${n} bytes is over the limit of ${IMAGE_LIMITS.maxBytes} bytes`));
    // The image's own problems come first: they are what the user is asking about, and they do
    // not depend on which model is used. Decoded at a small size here (every check Validate
    // makes on the file itself); normalised to the model's resolution below.
    await normaliseImage(image, PROBE_SIZE, imagePath);
    const sidecar = o.request === undefined
      ? null
      : await readLimited(o.request, MAX_SIDECAR_BYTES, 'request', (n) => new InvalidRequest(`${o.request}: ${n} bytes is over the limit of ${MAX_SIDECAR_BYTES} bytes`));
    const where = o.request ?? '(no request file)';
    const req = readRequestJson(sidecar, {}, { sidecar: where, metadata: where });
    let parsed = parseRequest(req.json, req.where);

    const found = o.modelDir === undefined ? await findModel(parsed.request.model) : await readBundleDir(o.modelDir);
    if (found === null) {
      throw new ModelNotFound(`model '${parsed.request.model}': no ${join('models', parsed.request.model, 'manifest.json')}; pass --model-dir <bundle folder>`);
    }
    if (found.note !== undefined) notes.push(found.note);
    const { manifestPath, text } = found;
    // With --model-dir, a request that does not name a model means that bundle's.
    let modelId = parsed.request.model;
    if (o.modelDir !== undefined && text !== null && !parsed.explicit.has('model')) {
      try {
        const id = (JSON.parse(text) as { id?: unknown }).id;
        if (typeof id === 'string') modelId = id;
      } catch {
        // checkManifest reports it
      }
      parsed = { ...parsed, request: { ...parsed.request, model: modelId } };
    }
    const manifest = checkManifest(text, modelId, manifestPath);
    const resolved = resolveRequest(parsed, manifest, () => randomInt(0, SEED_LIMIT - 1), req.where);

    if (resolved.statistics !== null) {
      if (o.statisticsDir === undefined && found.ships(resolved.statistics)) {
        // A bundle may ship its default statistics at the bucket's relative key (the worker uses them).
      } else if (o.statisticsDir === undefined) notes.push(`statistics ${resolved.statistics} not checked (pass --statistics-dir)`);
      else {
        const p = join(o.statisticsDir, resolved.statistics.slice(PREFIX.statistics.length));
        if (!existsSync(p)) throw new StatisticsNotFound(`${req.where}: Analytic-Init needs statistics, but ${p} does not exist`);
      }
    }
    const img = await normaliseImage(image, manifest.resolution, imagePath);
    if (o.out !== undefined) await writeFile(resolve(o.out), img.png);
    return { ok: true, request: resolved, notes };
  } catch (e) {
    if (e instanceof PipelineError) return { ok: false, error: e.toJSON() };
    return { ok: false, error: { ...errorJson(e), error: errorName(e) } };
  }
}

interface ValidateOpts {
  request?: string;
  modelDir?: string;
  statisticsDir?: string;
  out?: string;
}

export function registerValidate(program: Command): void {
  program
    .command('validate')
    .description('check an image and request as the pipeline would; print the resolved request as JSON')
    .argument('<image>', 'the image to upload (PNG, JPEG or WebP)')
    .option('--request <file.json>', 'the request (sidecar) JSON; default: all defaults')
    .option('--model-dir <folder>', "the model bundle folder holding manifest.json (default: ./models/<request's model>/; for the demo model, else the built-in demo bundle)")
    .option('--statistics-dir <folder>', 'folder of statistics files, as under statistics/ in the bucket (default: not checked)')
    .option('--out <normalised.png>', 'write the normalised image here')
    .action(async (image: string, o: ValidateOpts) => {
      const r = await validateLocal(image, o);
      if (r.ok) {
        for (const n of r.notes) process.stderr.write(`cil validate: note: ${printable(n, { multiline: true })}\n`);
        process.stdout.write(`${printableJson(r.request, 2)}\n`);
        return;
      }
      process.stdout.write(`${printableJson(r.error)}\n`);
      // cli/main.ts turns a thrown error into exit code 1.
      throw new ValidationFailed(r.error);
    });
}

/** Thrown after the error JSON is printed, so the CLI exits 1. */
export class ValidationFailed extends Error {
  override readonly name = 'ValidationFailed';
  readonly error: ErrorJson;
  constructor(error: ErrorJson) {
    super(`${error.error}: ${error.reason.split('\n')[0]}`);
    this.error = error;
  }
}
