/**
 * The one tensor type of the project: a flat Float32Array in row-major (C) order plus its dims.
 * Every constructor checks that the element count matches the dims, so a tensor that exists is
 * well-formed; boundaries check shapes with `assertShape`, naming the tensor in the message.
 */
export interface Tensor {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

/** Thrown when a tensor's dims or data do not fit what a boundary expects. */
export class ShapeError extends Error {
  override readonly name = 'ShapeError';
}

/** Number of elements for `dims` (1 for a scalar, dims = []). */
export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

export function formatDims(dims: readonly number[]): string {
  return `[${dims.join(', ')}]`;
}

function checkDims(dims: readonly number[], name: string): void {
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) {
      throw new ShapeError(`${name}: dims ${formatDims(dims)} must be non-negative integers`);
    }
  }
}

/** Wraps `data` (not copied) as a tensor of `dims`; throws ShapeError naming `name` on mismatch. */
export function tensor(data: Float32Array, dims: readonly number[], name = 'tensor'): Tensor {
  checkDims(dims, name);
  const n = numel(dims);
  if (data.length !== n) {
    throw new ShapeError(
      `${name}: ${data.length} elements do not fill dims ${formatDims(dims)} (${n} elements)`,
    );
  }
  return { data, dims: Object.freeze([...dims]) };
}

export function zeros(dims: readonly number[], name = 'tensor'): Tensor {
  checkDims(dims, name);
  return tensor(new Float32Array(numel(dims)), dims, name);
}

/** A deep copy (new buffer). */
export function clone(t: Tensor): Tensor {
  return { data: t.data.slice(), dims: t.dims };
}

export function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Checks `t` against `expected`; `-1` in `expected` matches any size on that axis.
 * The message names the tensor, the expected and the actual dims.
 */
export function assertShape(t: Tensor, expected: readonly number[], name: string): void {
  const ok =
    t.dims.length === expected.length && expected.every((d, i) => d === -1 || d === t.dims[i]);
  if (!ok) {
    throw new ShapeError(
      `${name}: expected dims ${formatDims(expected.map((d) => (d === -1 ? '*' : d) as number))}, got ${formatDims(t.dims)}`,
    );
  }
}

/** Checks that two tensors have identical dims, naming both. */
export function assertSameShape(a: Tensor, aName: string, b: Tensor, bName: string): void {
  if (!sameDims(a.dims, b.dims)) {
    throw new ShapeError(`${aName} ${formatDims(a.dims)} and ${bName} ${formatDims(b.dims)} must have the same dims`);
  }
}
