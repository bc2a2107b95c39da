/**
 * Names shared by local mode and the remote CLI: the upload key of an image, and an execution's
 * ARN from its state machine's (the execution name is the job id).
 */
import { createHash } from 'node:crypto';
import { basename, extname } from 'node:path';
import { isSafeRelativeKey } from '#shared/schemas';
import { IMAGE_EXTENSIONS, PREFIX } from '#shared/schemas';

export class UploadKeyError extends Error {
  override readonly name = 'UploadKeyError';
}

/**
 * The key an image is uploaded under: `inputs/<name>-<8 hex>.<ext>`, the hex a hash of the image
 * and the request, so that a sidecar never serves two requests. In an unversioned bucket (local
 * mode) the job id comes from key and ETag: the same image with the same request is the same job,
 * and a new prompt is a new job. In the versioned AWS bucket every upload is a new version, so a
 * new job.
 */
export function uploadKeyFor(fileName: string, image: Uint8Array, request: Readonly<Record<string, unknown>>): string {
  const ext = extname(fileName).toLowerCase();
  if (!(IMAGE_EXTENSIONS as readonly string[]).includes(ext)) throw new UploadKeyError(`${fileName}: the name must end in ${IMAGE_EXTENSIONS.join(', ')}`);
  const stem =
    basename(fileName, extname(fileName))
      .replace(/[^A-Za-z0-9._-]+/g, '-')
      .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '')
      .slice(0, 64) || 'image';
  const h = createHash('sha256').update(image).update('\0').update(JSON.stringify(request)).digest('hex').slice(0, 8);
  const key = `${PREFIX.inputs}${stem}-${h}${ext}`;
  if (!isSafeRelativeKey(key)) throw new UploadKeyError(`cannot derive a safe key from '${fileName}'; pass one`);
  return key;
}

/** `arn:…:stateMachine:<sm>` + name → `arn:…:execution:<sm>:<name>`. */
export function executionArnOf(stateMachineArn: string, name: string): string {
  return `${stateMachineArn.replace(':stateMachine:', ':execution:')}:${name}`;
}

export function contentTypeOf(key: string): string {
  const ext = extname(key).toLowerCase();
  return ext === '.png' ? 'image/png' : ext === '.webp' ? 'image/webp' : 'image/jpeg';
}
