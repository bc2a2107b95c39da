/**
 * Pieces shared by the contract schemas: safe identifiers and relative keys, and the
 * zod-issue → readable-message formatting every contract error uses.
 */
import { z } from 'zod';

/** One problem found in a document: where (dotted path, '(root)' for the whole) and what. */
export interface SchemaIssue {
  readonly path: string;
  readonly message: string;
}

/** Model ids: lower-case, safe as one S3 key segment or folder name (cannot be '.' or '..'). */
export const MODEL_ID_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export const ModelId = z
  .string()
  .regex(MODEL_ID_PATTERN, { error: 'must be 1–64 characters of a-z 0-9 . _ - starting with a letter or digit' });

const KEY_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/**
 * True for a relative key/path that cannot escape its prefix: '/'-separated segments of
 * [A-Za-z0-9._-], each starting with a letter or digit (so no '.', '..', hidden files, empty
 * segments, leading '/', backslashes or URL schemes), at most 1024 characters.
 */
export function isSafeRelativeKey(key: string): boolean {
  return key.length > 0 && key.length <= 1024 && key.split('/').every((s) => KEY_SEGMENT.test(s));
}

export const SafeRelativeKey = z.string().refine(isSafeRelativeKey, {
  error: "must be a relative key of '/'-separated segments of A-Z a-z 0-9 . _ - (each starting with a letter or digit), at most 1024 characters",
});

/**
 * An array with a length range. (zod's own `.min()`/`.max()` on arrays also fire on a string
 * input, doubling the "expected array" issue; a refinement runs only once the type is right.)
 */
export function arrayOf<T extends z.ZodType>(item: T, min: number, max = Infinity) {
  const what = max === Infinity ? `at least ${min} item${min === 1 ? '' : 's'}` : `${min} to ${max} items`;
  return z.array(item).refine((a) => a.length >= min && a.length <= max, { error: `must have ${what}` });
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out === '' ? String(p) : `.${String(p)}`;
  }
  return out === '' ? '(root)' : out;
}

function formatInput(input: unknown): string {
  if (typeof input === 'string') {
    const shown = input.length > 40 ? `${JSON.stringify(input.slice(0, 40))}… (${input.length} characters)` : JSON.stringify(input);
    return ` (got ${shown})`;
  }
  if (typeof input === 'number' || typeof input === 'boolean') return ` (got ${String(input)})`;
  if (input === null) return ' (got null)';
  return '';
}

/** Flattens zod issues (including those nested in unions and record keys) into SchemaIssues. */
export function toSchemaIssues(issues: readonly z.core.$ZodIssue[], allowedRootKeys?: readonly string[]): SchemaIssue[] {
  const out: SchemaIssue[] = [];
  for (const issue of issues) {
    const path = formatPath(issue.path);
    if (issue.code === 'unrecognized_keys') {
      const names = issue.keys.map((k) => JSON.stringify(k)).join(', ');
      const allowed = issue.path.length === 0 && allowedRootKeys ? ` (allowed: ${allowedRootKeys.join(', ')})` : '';
      out.push({ path, message: `unknown field${issue.keys.length > 1 ? 's' : ''} ${names}${allowed}` });
    } else if (issue.code === 'invalid_key') {
      for (const inner of toSchemaIssues(issue.issues)) out.push({ path, message: `invalid key: ${inner.message}` });
    } else {
      out.push({ path, message: issue.message + formatInput(issue.input) });
    }
  }
  return out;
}

/** "where: what:\n  - path: message" — the text of every contract error. */
/**
 * JSON text checked against a schema. A failure throws `fail(message)`: "<where>: not valid JSON
 * (…)", or "<where>: " + `describe(issues)` with every issue as "path: message", joined by "; ".
 */
export function parseJsonWith<S extends z.ZodType>(
  schema: S,
  text: string,
  where: string,
  fail: (message: string) => Error,
  describe: (issues: string) => string = (issues) => issues,
): z.output<S> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw fail(`${where}: not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(json);
  if (!r.success) throw fail(`${where}: ${describe(r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '))}`);
  return r.data;
}

export function formatIssues(where: string, what: string, issues: readonly SchemaIssue[]): string {
  return `${where}: ${what}:\n${issues.map((i) => `  - ${i.path}: ${i.message}`).join('\n')}`;
}

/** A document that does not fit its contract: every issue with its path, and where the document came from. */
export abstract class ContractError extends Error {
  readonly where: string;
  readonly issues: readonly SchemaIssue[];
  constructor(where: string, what: string, issues: readonly SchemaIssue[]) {
    super(formatIssues(where, what, issues));
    this.where = where;
    this.issues = issues;
  }
}

/** `schema.parse` with the input values kept for messages; on failure throws `error(issues)`. */
export function parseOrThrow<S extends z.ZodType>(schema: S, json: unknown, error: (issues: SchemaIssue[]) => Error, allowedRootKeys?: readonly string[]): z.output<S> {
  const r = schema.safeParse(json, { reportInput: true });
  if (!r.success) throw error(toSchemaIssues(r.error.issues, allowedRootKeys));
  return r.data;
}
