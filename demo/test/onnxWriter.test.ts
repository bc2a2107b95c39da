/**
 * The ONNX graph writer: small graphs built with GraphBuilder are run in onnxruntime-node and their
 * outputs compared with values computed here by hand; the encoding is checked for determinism and
 * the builder's errors for clarity.
 */
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, OnnxBuildError, attr, encodeModel } from '../src/onnx/graph.ts';
import { modelProtoType } from '../src/onnx/proto.ts';

type Feeds = Record<string, ort.Tensor>;

async function runGraph(g: GraphBuilder, feeds: Feeds): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(encodeModel(g));
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

const f32 = (data: number[], dims: number[]): ort.Tensor => new ort.Tensor('float32', Float32Array.from(data), dims);
const i64 = (data: number[], dims: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(data.map(BigInt)), dims);
const values = (t: ort.Tensor): number[] => Array.from(t.data as Float32Array, Number);

function expectClose(actual: number[], expected: number[], tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((a, i) => expect(Math.abs(a - expected[i]), `element ${i}: ${a} vs ${expected[i]}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(expected[i]))));
}

describe('GraphBuilder in onnxruntime', () => {
  it('Add and Mul broadcast a constant row', async () => {
    const g = new GraphBuilder('add');
    const a = g.input('a', 'float32', [2, 3]);
    const row = g.constFloat32([10, 20, 30], [3]);
    g.output(g.op('Mul', [g.op('Add', [a, row]), g.constFloat32([0.5], [])]), 'float32', [2, 3], 'y');
    const r = await runGraph(g, { a: f32([1, 2, 3, 4, 5, 6], [2, 3]) });
    expect(r.y.dims).toEqual([2, 3]);
    expectClose(values(r.y), [5.5, 11, 16.5, 7, 12.5, 18]);
  });

  it('MatMul with a symbolic batch axis runs at several batch sizes and reports the symbol', async () => {
    const g = new GraphBuilder('mm');
    const a = g.input('a', 'float32', ['batch', 3]);
    const w = g.constFloat32([1, 2, 3, 4, 5, 6], [3, 2]); // [[1,2],[3,4],[5,6]]
    g.output(g.op('MatMul', [a, w]), 'float32', ['batch', 2], 'y');
    const s = await ort.InferenceSession.create(encodeModel(g));
    expect(s.inputNames).toEqual(['a']);
    expect(s.outputNames).toEqual(['y']);
    const meta = s.inputMetadata[0];
    expect(meta.isTensor && meta.shape).toEqual(['batch', 3]);
    const out = s.outputMetadata[0];
    expect(out.isTensor && out.shape).toEqual(['batch', 2]);
    const r1 = await s.run({ a: f32([1, 1, 1], [1, 3]) });
    expectClose(values(r1.y), [9, 12]);
    const r3 = await s.run({ a: f32([1, 0, 0, 0, 1, 0, 2, -1, 0.5], [3, 3]) });
    // Row i of the result is a_i · W, by hand.
    expectClose(values(r3.y), [1, 2, 3, 4, 2 * 1 - 3 + 2.5, 2 * 2 - 4 + 3]);
    await s.release();
  });

  it('Gather picks rows (axis 0) and columns (axis 1) by int64 indices', async () => {
    const g = new GraphBuilder('gather');
    const ids = g.input('ids', 'int64', ['batch', 2]);
    const table = g.constFloat32([0, 1, 10, 11, 20, 21, 30, 31], [4, 2]);
    g.output(g.op('Gather', [table, ids], { axis: 0 }), 'float32', ['batch', 2, 2], 'rows');
    g.output(g.op('Gather', [table, g.constInt64([1, 1, 0])], { axis: 1 }), 'float32', [4, 3], 'cols');
    const r = await runGraph(g, { ids: i64([3, 0, 2, 2], [2, 2]) });
    expect(r.rows.dims).toEqual([2, 2, 2]);
    expectClose(values(r.rows), [30, 31, 0, 1, 20, 21, 20, 21]);
    expectClose(values(r.cols), [1, 1, 0, 11, 11, 10, 21, 21, 20, 31, 31, 30]);
  });

  it('Softmax over the last axis matches a float64 softmax', async () => {
    const x = [1, 2, 3, 4, -1000, 0, 1000, 999];
    const g = new GraphBuilder('softmax');
    const a = g.input('x', 'float32', [2, 4]);
    g.output(g.op('Softmax', [a], { axis: -1 }), 'float32', [2, 4], 'y');
    const r = await runGraph(g, { x: f32(x, [2, 4]) });
    const expected: number[] = [];
    for (let row = 0; row < 2; row++) {
      const v = x.slice(4 * row, 4 * row + 4);
      const m = Math.max(...v);
      const e = v.map((t) => Math.exp(t - m));
      const s = e.reduce((p, q) => p + q, 0);
      expected.push(...e.map((t) => t / s));
    }
    expectClose(values(r.y), expected, 1e-6);
  });

  it('Reshape, Transpose (ints attribute) and Concat', async () => {
    const g = new GraphBuilder('reshape');
    const a = g.input('a', 'float32', [2, 3]);
    const r3 = g.op('Reshape', [a, g.constInt64([3, 2])]); // [[1,2],[3,4],[5,6]]
    const t = g.op('Transpose', [r3], { perm: [1, 0] }); // [[1,3,5],[2,4,6]]
    const cat = g.op('Concat', [t, g.constFloat32([7, 8, 9], [1, 3])], { axis: 0 });
    g.output(cat, 'float32', [3, 3], 'y');
    const r = await runGraph(g, { a: f32([1, 2, 3, 4, 5, 6], [2, 3]) });
    expect(r.y.dims).toEqual([3, 3]);
    expectClose(values(r.y), [1, 3, 5, 2, 4, 6, 7, 8, 9]);
  });

  it('Where with a Less condition is an element-wise minimum; bool and int32 initializers', async () => {
    const g = new GraphBuilder('where');
    const a = g.input('a', 'float32', [4]);
    const b = g.input('b', 'float32', [4]);
    g.output(g.op('Where', [g.op('Less', [a, b]), a, b]), 'float32', [4], 'min');
    const mask = g.initializer({ dtype: 'bool', dims: [4], data: [true, false, false, true] });
    const ints = g.initializer({ dtype: 'int32', dims: [4], data: [-7, 0, 3, 2147483647] });
    g.output(g.op('Where', [mask, g.op('Cast', [ints], { to: 1 }), b]), 'float32', [4], 'masked');
    const r = await runGraph(g, { a: f32([1, 5, -2, 0], [4]), b: f32([3, 4, -3, 0], [4]) });
    expectClose(values(r.min), [1, 4, -3, 0]);
    expectClose(values(r.masked), [-7, 4, -3, 2147483647]);
  });

  it('int64 initializers carry negative and large values (Reshape with −1, Slice ends)', async () => {
    const g = new GraphBuilder('i64');
    const a = g.input('a', 'float32', [2, 3]);
    const flat = g.op('Reshape', [a, g.constInt64([-1])]);
    // Slice from index 1 to "the end" given as 2^40: a large int64 must survive the encoding.
    const tail = g.op('Slice', [flat, g.constInt64([1]), g.constInt64(BigInt64Array.of(1n << 40n)), g.constInt64([0])]);
    g.output(tail, 'float32', [5], 'y');
    const r = await runGraph(g, { a: f32([1, 2, 3, 4, 5, 6], [2, 3]) });
    expectClose(values(r.y), [2, 3, 4, 5, 6]);
  });

  it('float, floats, ints, tensor and string attributes reach the runtime', async () => {
    const g = new GraphBuilder('attrs');
    const x = g.input('x', 'float32', [4]);
    g.output(g.op('LeakyRelu', [x], { alpha: 0.25 }), 'float32', [4], 'leaky');
    // An integral float must be spelled attr.float: Elu's alpha = 2.
    g.output(g.op('Elu', [x], { alpha: attr.float(2) }), 'float32', [4], 'elu');
    g.output(g.op('Constant', [], { value_floats: attr.floats([1, 2.5]) }), 'float32', [2], 'cf');
    g.output(g.op('Constant', [], { value_ints: [-3, 4] }), 'int64', [2], 'ci');
    g.output(g.op('Constant', [], { value: attr.tensor({ dtype: 'float32', dims: [2, 1], data: [0.5, -0.5] }) }), 'float32', [2, 1], 'ct');
    // Resize of [1, 1, 1, 2] by 2 along the last axis: 'nearest' vs 'linear' (STRING attributes).
    const img = g.constFloat32([0, 4], [1, 1, 1, 2]);
    const scales = g.constFloat32([1, 1, 1, 2]);
    g.output(g.op('Resize', [img, '', scales], { mode: 'nearest', nearest_mode: 'floor', coordinate_transformation_mode: 'asymmetric' }), 'float32', [1, 1, 1, 4], 'nearest');
    g.output(g.op('Resize', [img, '', scales], { mode: 'linear', coordinate_transformation_mode: 'asymmetric' }), 'float32', [1, 1, 1, 4], 'linear');
    const r = await runGraph(g, { x: f32([-2, -1, 0, 3], [4]) });
    expectClose(values(r.leaky), [-0.5, -0.25, 0, 3]);
    expectClose(values(r.elu), [2 * (Math.exp(-2) - 1), 2 * (Math.exp(-1) - 1), 0, 3], 1e-6);
    expectClose(values(r.cf), [1, 2.5]);
    expect(Array.from(r.ci.data as BigInt64Array)).toEqual([-3n, 4n]);
    expect(r.ct.dims).toEqual([2, 1]);
    expectClose(values(r.ct), [0.5, -0.5]);
    // asymmetric: source x = dst/2; nearest floor → 0,0,4,4; linear → 0,2,4,4 (clamped at the edge).
    expectClose(values(r.nearest), [0, 0, 4, 4]);
    expectClose(values(r.linear), [0, 2, 4, 4]);
  });
});

describe('encodeModel', () => {
  function tiny(order: 'ab' | 'ba'): GraphBuilder {
    const g = new GraphBuilder('tiny');
    const x = g.input('x', 'float32', ['n']);
    const attrs = order === 'ab' ? { alpha: 0.5, beta: 0.25 } : { beta: 0.25, alpha: 0.5 };
    g.output(g.op('HardSigmoid', [x], attrs), 'float32', ['n'], 'y');
    return g;
  }

  it('is deterministic, independent of attribute key order', () => {
    const a = encodeModel(tiny('ab'), { metadata: { b: '2', a: '1' } });
    const b = encodeModel(tiny('ba'), { metadata: { a: '1', b: '2' } });
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
  });

  it('writes IR version 8, opset 17, producer and metadata', () => {
    const bytes = encodeModel(tiny('ab'), { producerName: 'test', docString: 'doc', metadata: { k: 'v' } });
    const m = modelProtoType().toObject(modelProtoType().decode(bytes), { longs: Number }) as {
      ir_version: number;
      opset_import: { domain?: string; version: number }[];
      producer_name: string;
      doc_string: string;
      metadata_props: { key: string; value: string }[];
      graph: { name: string; node: { op_type: string }[] };
    };
    expect(m.ir_version).toBe(8);
    expect(m.opset_import).toHaveLength(1);
    expect(m.opset_import[0].version).toBe(17);
    expect(m.opset_import[0].domain ?? '').toBe('');
    expect(m.producer_name).toBe('test');
    expect(m.doc_string).toBe('doc');
    expect(m.metadata_props).toEqual([{ key: 'k', value: 'v' }]);
    expect(m.graph.name).toBe('tiny');
    expect(m.graph.node.map((n) => n.op_type)).toEqual(['HardSigmoid', 'Identity']);
  });

  it('a null dim is written as unknown (neither size nor symbol)', async () => {
    const g = new GraphBuilder('unknown');
    const a = g.input('a', 'float32', [null, 3]);
    g.output(g.op('Relu', [a]), 'float32', [null, 3], 'y');
    const s = await ort.InferenceSession.create(encodeModel(g));
    const meta = s.inputMetadata[0];
    expect(meta.isTensor && meta.shape).toEqual(['', 3]);
    const r = await s.run({ a: f32([-1, 2, -3, 4, -5, 6], [2, 3]) });
    expectClose(values(r.y), [0, 2, 0, 4, 0, 6]);
    await s.release();
  });

  it('HardSigmoid graph computes max(0, min(1, αx + β)) in the runtime', async () => {
    const r = await runGraph(tiny('ab'), { x: f32([-4, 0, 1, 4], [4]) });
    expectClose(values(r.y), [0, 0.25, 0.75, 1]);
  });
});

describe('GraphBuilder errors', () => {
  it('names an unknown node input', () => {
    const g = new GraphBuilder('bad');
    g.input('x', 'float32', [1]);
    expect(() => g.op('Relu', ['nope'])).toThrow(OnnxBuildError);
    expect(() => g.op('Relu', ['nope'])).toThrow(/input 0 'nope' is not a value/);
  });

  it('rejects duplicate names, bad dims, mismatched data and untyped empty lists', () => {
    const g = new GraphBuilder('bad');
    const x = g.input('x', 'float32', [2]);
    expect(() => g.input('x', 'float32', [2])).toThrow(/'x' is already used/);
    expect(() => g.input('y', 'float32', [-1])).toThrow(/dim -1/);
    expect(() => g.input('z', 'float32', ['bad dim'])).toThrow(/symbolic dim/);
    expect(() => g.constFloat32([1, 2, 3], [2, 2])).toThrow(/3 float32 values do not fill dims \[2, 2\]/);
    expect(() => g.constInt64([1.5])).toThrow(/not a safe integer/);
    expect(() => g.op('Transpose', [x], { perm: [] })).toThrow(/empty list/);
    expect(() => g.op('Relu', [x], {}, { outputs: ['x'] })).toThrow(/'x' is already used/);
    expect(() => new GraphBuilder('empty').build()).toThrow(/no outputs/);
  });
});
