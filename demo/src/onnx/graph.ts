/**
 * A small ONNX graph writer: build a graph in TypeScript and encode it as ModelProto bytes.
 *
 *   const g = new GraphBuilder('tiny');
 *   const a = g.input('a', 'float32', ['batch', 3]);
 *   const w = g.constFloat32(new Float32Array(6), [3, 2]);
 *   const y = g.op('MatMul', [a, w]);
 *   g.output(y, 'float32', ['batch', 2], 'y');
 *   const bytes = encodeModel(g, { docString: '…' });
 *
 * Values are referred to by name (strings). The builder checks as it goes that every node input
 * exists and that names are unique, so a finished graph is topologically sorted and well-formed;
 * operator semantics (shapes, attribute validity) are left to the runtime that loads it. Only
 * writing lives here: running sessions is the worker's job.
 */
import { modelProtoType } from './proto.ts';

/** Thrown for a graph that cannot be built: unknown or duplicate names, bad dims, bad data. */
export class OnnxBuildError extends Error {
  override readonly name = 'OnnxBuildError';
}

export type OnnxDtype = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';

/** TensorProto.DataType codes (onnx.proto). */
export const ONNX_DTYPE_CODES: Readonly<Record<OnnxDtype, number>> = Object.freeze({
  float32: 1,
  uint8: 2,
  int8: 3,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
});

/** The default opset and IR version (ONNX 1.12: opset 17, IR 8), loadable by any recent runtime. */
export const DEFAULT_OPSET = 17;
export const DEFAULT_IR_VERSION = 8;

/** A fixed size, a symbolic axis name ('batch'), or null for an unknown size. */
export type DimSpec = number | string | null;

/** Initializer or tensor-attribute data. Only dtypes with a plain little-endian layout are written. */
export type TensorData =
  | { readonly dtype: 'float32'; readonly dims: readonly number[]; readonly data: Float32Array | readonly number[] }
  | { readonly dtype: 'int64'; readonly dims: readonly number[]; readonly data: BigInt64Array | Int32Array | readonly number[] }
  | { readonly dtype: 'int32'; readonly dims: readonly number[]; readonly data: Int32Array | readonly number[] }
  | { readonly dtype: 'bool'; readonly dims: readonly number[]; readonly data: Uint8Array | readonly boolean[] };

/** An attribute with its ONNX type spelled out (see `attr`). */
export type TypedAttribute =
  | { readonly kind: 'int'; readonly value: number }
  | { readonly kind: 'float'; readonly value: number }
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'ints'; readonly value: readonly number[] }
  | { readonly kind: 'floats'; readonly value: readonly number[] }
  | { readonly kind: 'tensor'; readonly value: TensorData };

/**
 * An attribute value. Plain values are typed by what they hold: an integer number is INT, any
 * other number FLOAT, a string STRING, an array INTS when every element is an integer and FLOATS
 * otherwise. Use `attr.float(1)` / `attr.floats([1, 2])` for floats that happen to be integral.
 */
export type AttributeValue = number | string | readonly number[] | TypedAttribute;

export const attr = {
  int: (value: number): TypedAttribute => ({ kind: 'int', value }),
  float: (value: number): TypedAttribute => ({ kind: 'float', value }),
  string: (value: string): TypedAttribute => ({ kind: 'string', value }),
  ints: (value: readonly number[]): TypedAttribute => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): TypedAttribute => ({ kind: 'floats', value }),
  tensor: (value: TensorData): TypedAttribute => ({ kind: 'tensor', value }),
};

export interface OpOptions {
  /** Output name(s); generated (`<OpType>_<n>`) when absent. */
  readonly outputs?: readonly string[];
  /** Operator domain; '' (the default ONNX domain) when absent. */
  readonly domain?: string;
}

// Plain-object forms of the protobuf messages (field names as in onnx.proto).
interface TensorProtoObj {
  name?: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
}
interface AttributeProtoObj {
  name: string;
  type: number;
  i?: number;
  f?: number;
  s?: Uint8Array;
  t?: TensorProtoObj;
  ints?: number[];
  floats?: number[];
}
interface NodeProtoObj {
  input: string[];
  output: string[];
  name: string;
  op_type: string;
  domain: string;
  attribute: AttributeProtoObj[];
}
/** TensorShapeProto.Dimension: a size, a symbol, or neither (unknown). */
type DimProtoObj = { dim_value: number } | { dim_param: string } | Record<string, never>;
interface ValueInfoObj {
  name: string;
  type: { tensor_type: { elem_type: number; shape: { dim: DimProtoObj[] } } };
}
export interface GraphProtoObj {
  name: string;
  doc_string?: string;
  node: NodeProtoObj[];
  initializer: TensorProtoObj[];
  input: ValueInfoObj[];
  output: ValueInfoObj[];
}

// ATTRIBUTE types (AttributeProto.AttributeType).
const AT = { FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, FLOATS: 6, INTS: 7 } as const;

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.:/-]{0,255}$/;
const SYMBOL_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

function checkFixedDims(dims: readonly number[], where: string): void {
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw new OnnxBuildError(`${where}: dims [${dims.join(', ')}] must be non-negative integers`);
  }
}

/** Little-endian bytes of tensor data, as TensorProto.raw_data requires. */
function rawBytes(t: TensorData, where: string): Uint8Array {
  checkFixedDims(t.dims, where);
  const n = numel(t.dims);
  if (t.data.length !== n) {
    throw new OnnxBuildError(`${where}: ${t.data.length} ${t.dtype} values do not fill dims [${t.dims.join(', ')}] (${n} elements)`);
  }
  switch (t.dtype) {
    case 'float32': {
      const out = new Uint8Array(4 * n);
      const v = new DataView(out.buffer);
      for (let i = 0; i < n; i++) v.setFloat32(4 * i, t.data[i], true);
      return out;
    }
    case 'int64': {
      const out = new Uint8Array(8 * n);
      const v = new DataView(out.buffer);
      const d = t.data;
      if (d instanceof BigInt64Array) {
        for (let i = 0; i < n; i++) v.setBigInt64(8 * i, d[i], true);
      } else {
        for (let i = 0; i < n; i++) {
          const x = d[i];
          if (!Number.isSafeInteger(x)) throw new OnnxBuildError(`${where}: int64 value ${x} at ${i} is not a safe integer`);
          v.setBigInt64(8 * i, BigInt(x), true);
        }
      }
      return out;
    }
    case 'int32': {
      const out = new Uint8Array(4 * n);
      const v = new DataView(out.buffer);
      for (let i = 0; i < n; i++) {
        const x = t.data[i];
        if (!Number.isInteger(x) || x < -0x80000000 || x > 0x7fffffff) throw new OnnxBuildError(`${where}: int32 value ${x} at ${i} is out of range`);
        v.setInt32(4 * i, x, true);
      }
      return out;
    }
    case 'bool': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = t.data[i] ? 1 : 0;
      return out;
    }
  }
}

function tensorProto(t: TensorData, where: string, name?: string): TensorProtoObj {
  const raw = rawBytes(t, where);
  const p: TensorProtoObj = { dims: [...t.dims], data_type: ONNX_DTYPE_CODES[t.dtype], raw_data: raw };
  if (name !== undefined) p.name = name;
  return p;
}

function finite(v: number, where: string): number {
  if (!Number.isFinite(v)) throw new OnnxBuildError(`${where}: ${v} is not a finite number`);
  return v;
}

function attributeProto(name: string, value: AttributeValue, where: string): AttributeProtoObj {
  const w = `${where} attribute '${name}'`;
  let a: TypedAttribute;
  if (typeof value === 'number') a = Number.isInteger(value) ? attr.int(value) : attr.float(value);
  else if (typeof value === 'string') a = attr.string(value);
  else if (Array.isArray(value)) {
    const arr = value as readonly number[];
    if (arr.length === 0) throw new OnnxBuildError(`${w}: an empty list has no type; use attr.ints([]) or attr.floats([])`);
    a = arr.every((x) => Number.isInteger(x)) ? attr.ints(arr) : attr.floats(arr);
  } else a = value as TypedAttribute;
  switch (a.kind) {
    case 'int':
      if (!Number.isSafeInteger(a.value)) throw new OnnxBuildError(`${w}: ${a.value} is not a safe integer`);
      return { name, type: AT.INT, i: a.value };
    case 'float':
      return { name, type: AT.FLOAT, f: finite(a.value, w) };
    case 'string':
      return { name, type: AT.STRING, s: new TextEncoder().encode(a.value) };
    case 'ints':
      for (const x of a.value) if (!Number.isSafeInteger(x)) throw new OnnxBuildError(`${w}: ${x} is not a safe integer`);
      return { name, type: AT.INTS, ints: [...a.value] };
    case 'floats':
      return { name, type: AT.FLOATS, floats: a.value.map((x) => finite(x, w)) };
    case 'tensor':
      return { name, type: AT.TENSOR, t: tensorProto(a.value, w) };
  }
}

function valueInfo(name: string, dtype: OnnxDtype, dims: readonly DimSpec[], where: string): ValueInfoObj {
  const dim = dims.map((d): DimProtoObj => {
    if (d === null) return {};
    if (typeof d === 'number') {
      if (!Number.isSafeInteger(d) || d < 0) throw new OnnxBuildError(`${where} '${name}': dim ${d} must be a non-negative integer, a symbol or null`);
      return { dim_value: d };
    }
    if (!SYMBOL_RE.test(d)) throw new OnnxBuildError(`${where} '${name}': symbolic dim '${d}' must be an identifier (letters, digits, _)`);
    return { dim_param: d };
  });
  if (!(dtype in ONNX_DTYPE_CODES)) throw new OnnxBuildError(`${where} '${name}': unknown dtype '${String(dtype)}'`);
  return { name, type: { tensor_type: { elem_type: ONNX_DTYPE_CODES[dtype], shape: { dim } } } };
}

/** Builds one GraphProto; see the file comment for an example. */
export class GraphBuilder {
  readonly graphName: string;
  private readonly names = new Set<string>();
  private readonly nodes: NodeProtoObj[] = [];
  private readonly inits: TensorProtoObj[] = [];
  private readonly inputs: ValueInfoObj[] = [];
  private readonly outputs: ValueInfoObj[] = [];
  private readonly counters = new Map<string, number>();
  private docString: string | undefined;

  constructor(name = 'graph') {
    this.graphName = name;
  }

  /** Sets the graph's doc_string. */
  doc(text: string): this {
    this.docString = text;
    return this;
  }

  /** True when `name` is a value of this graph (input, initializer or node output). */
  has(name: string): boolean {
    return this.names.has(name);
  }

  private claim(name: string, what: string): string {
    if (!NAME_RE.test(name)) throw new OnnxBuildError(`graph '${this.graphName}': ${what} name '${name}' is not a valid value name`);
    if (this.names.has(name)) throw new OnnxBuildError(`graph '${this.graphName}': ${what} name '${name}' is already used`);
    this.names.add(name);
    return name;
  }

  /** A fresh name `<prefix>_<n>`, skipping names already taken. */
  private fresh(prefix: string): string {
    let n = this.counters.get(prefix) ?? 0;
    let name: string;
    do name = `${prefix}_${n++}`;
    while (this.names.has(name));
    this.counters.set(prefix, n);
    return name;
  }

  /** Declares a graph input and returns its name. */
  input(name: string, dtype: OnnxDtype, dims: readonly DimSpec[]): string {
    const info = valueInfo(name, dtype, dims, `graph '${this.graphName}' input`);
    this.claim(name, 'input');
    this.inputs.push(info);
    return name;
  }

  /** Adds an initializer (a constant stored in the graph) and returns its name. */
  initializer(t: TensorData, name?: string): string {
    const n = name ?? this.fresh(`const_${t.dtype}`);
    const p = tensorProto(t, `graph '${this.graphName}' initializer '${n}'`, n);
    this.claim(n, 'initializer');
    this.inits.push(p);
    return n;
  }

  /** A float32 constant; dims default to a vector of data.length. */
  constFloat32(data: Float32Array | readonly number[], dims: readonly number[] = [data.length], name?: string): string {
    return this.initializer({ dtype: 'float32', dims, data }, name);
  }

  /** An int64 constant; dims default to a vector of data.length. */
  constInt64(data: BigInt64Array | Int32Array | readonly number[], dims: readonly number[] = [data.length], name?: string): string {
    return this.initializer({ dtype: 'int64', dims, data }, name);
  }

  /**
   * Appends a node with `nOutputs` outputs and returns their names. Inputs must already exist;
   * '' stands for an omitted optional input.
   */
  opN(opType: string, inputs: readonly string[], nOutputs: number, attrs: Readonly<Record<string, AttributeValue>> = {}, options: OpOptions = {}): string[] {
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(opType)) throw new OnnxBuildError(`graph '${this.graphName}': '${opType}' is not an operator name`);
    const nodeName = this.fresh(`${opType}_node`);
    const where = `graph '${this.graphName}' node '${nodeName}' (${opType})`;
    for (const [i, v] of inputs.entries()) {
      if (v !== '' && !this.names.has(v)) throw new OnnxBuildError(`${where}: input ${i} '${v}' is not a value of the graph (declare it first)`);
    }
    if (!Number.isInteger(nOutputs) || nOutputs < 1) throw new OnnxBuildError(`${where}: needs at least one output, got ${nOutputs}`);
    if (options.outputs && options.outputs.length !== nOutputs) {
      throw new OnnxBuildError(`${where}: ${options.outputs.length} output names given for ${nOutputs} outputs`);
    }
    // Attributes in name order, so the bytes do not depend on object key order.
    const attribute = Object.keys(attrs)
      .sort()
      .map((k) => attributeProto(k, attrs[k], where));
    const output: string[] = [];
    for (let i = 0; i < nOutputs; i++) output.push(this.claim(options.outputs?.[i] ?? this.fresh(opType), 'node output'));
    this.nodes.push({ input: [...inputs], output, name: nodeName, op_type: opType, domain: options.domain ?? '', attribute });
    return output;
  }

  /** Appends a single-output node and returns its output's name. */
  op(opType: string, inputs: readonly string[], attrs: Readonly<Record<string, AttributeValue>> = {}, options: OpOptions = {}): string {
    return this.opN(opType, inputs, 1, attrs, options)[0];
  }

  /**
   * Declares `value` a graph output with the given dtype and dims. With `name` (and a value of
   * another name), an Identity node gives it that name.
   */
  output(value: string, dtype: OnnxDtype, dims: readonly DimSpec[], name?: string): string {
    if (!this.names.has(value)) throw new OnnxBuildError(`graph '${this.graphName}': output value '${value}' is not a value of the graph`);
    let v = value;
    if (name !== undefined && name !== value) v = this.op('Identity', [value], {}, { outputs: [name] });
    if (this.outputs.some((o) => o.name === v)) throw new OnnxBuildError(`graph '${this.graphName}': '${v}' is already an output`);
    this.outputs.push(valueInfo(v, dtype, dims, `graph '${this.graphName}' output`));
    return v;
  }

  /** The GraphProto as a plain object (for encodeModel). */
  build(): GraphProtoObj {
    if (this.outputs.length === 0) throw new OnnxBuildError(`graph '${this.graphName}' has no outputs`);
    const g: GraphProtoObj = { name: this.graphName, node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs };
    if (this.docString !== undefined) g.doc_string = this.docString;
    return g;
  }
}

export interface ModelOptions {
  readonly opset?: number;
  readonly irVersion?: number;
  readonly producerName?: string;
  readonly producerVersion?: string;
  readonly docString?: string;
  /** ModelProto.metadata_props, written in key order. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** Encodes a graph as a ModelProto (one default-domain opset import). Same input, same bytes. */
export function encodeModel(graph: GraphBuilder | GraphProtoObj, o: ModelOptions = {}): Uint8Array {
  const g = graph instanceof GraphBuilder ? graph.build() : graph;
  const meta = o.metadata ?? {};
  const model: Record<string, unknown> = {
    ir_version: o.irVersion ?? DEFAULT_IR_VERSION,
    opset_import: [{ domain: '', version: o.opset ?? DEFAULT_OPSET }],
    producer_name: o.producerName ?? 'cil-video',
    producer_version: o.producerVersion ?? '0.1.0',
    graph: g,
    metadata_props: Object.keys(meta)
      .sort()
      .map((key) => ({ key, value: meta[key] })),
  };
  if (o.docString !== undefined) model.doc_string = o.docString;
  const T = modelProtoType();
  const err = T.verify(model);
  if (err) throw new OnnxBuildError(`graph '${g.name}': ModelProto does not verify: ${err}`);
  return T.encode(T.fromObject(model)).finish();
}
