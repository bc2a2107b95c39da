"""Float16 conversion of an exported ONNX graph that keeps float32 graph inputs and outputs.

Why here and not torch's `.half()`: tracing a half-precision model runs it, and CPU torch has no
float16 kernels for convolutions and matmuls, so `.half()` exports only work on a GPU. Converting
the float32 graph works on any machine, is what the tests exercise, and gives the layout the worker
prefers (docs/bundles.md): float32 inputs and outputs, casts inside the graph. (onnxconverter-
common's float16 converter does the same job; it is not a dependency we may use here.)

Which nodes run in float16: a node does when one of its float inputs is float16 after conversion,
is a float graph input not listed in `keep_fp32_inputs`, or is a weight (a float initializer or
Constant with more than `min_elements` elements). Everything else stays float32. In practice that
keeps the *conditioning scalars* in float32 up to their first weight: the sinusoidal embeddings of
the timestep, the frame stride / fps and SVD's added time ids (cos/sin of values up to 1000 lose
most of their digits in float16), exactly as diffusers computes them before casting to the model's
dtype. Nodes with subgraphs (Loop, If, Scan: torch exports repeat_interleave as a Loop) stay
float32, and so do their bodies; ONNX's float32-only inputs (Resize's roi and scales) stay float32.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = 65504.0
MS_DOMAIN = "com.microsoft"
# ONNX types these inputs as float32 whatever the precision of the node's data input.
FP32_SLOTS = {"Resize": {1, 2}, "Upsample": {1}}
# Sequence ops stay float32: a sequence's element type is fixed where it is created (SequenceEmpty
# defaults to float32), often outside the Loop body that fills it (torch's repeat_interleave).
FP32_OPS = frozenset({
    "SplitToSequence", "SequenceConstruct", "SequenceEmpty", "SequenceInsert", "SequenceAt",
    "SequenceErase", "SequenceLength", "ConcatFromSequence",
})


class Fp16Error(Exception):
    """The graph cannot be converted (names the node and why)."""


def _numel(dims):
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _subgraphs(node):
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _outer_refs(graph):
    """Names a subgraph reads from enclosing scopes (recursively)."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    refs = set()
    for node in graph.node:
        for n in node.input:
            if n and n not in defined:
                refs.add(n)
        for sub in _subgraphs(node):
            refs |= {r for r in _outer_refs(sub) if r not in defined}
        defined |= set(node.output)
    return refs


def _rename_inputs(graph, old, new):
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for sub in _subgraphs(node):
            _rename_inputs(sub, old, new)


def _all_names(graph, acc):
    acc.update(i.name for i in graph.input)
    acc.update(i.name for i in graph.output)
    acc.update(i.name for i in graph.initializer)
    for node in graph.node:
        acc.update(node.input)
        acc.update(node.output)
        if node.name:
            acc.add(node.name)
        for sub in _subgraphs(node):
            _all_names(sub, acc)
    return acc


def _big_weight(init):
    return init.data_type in (FLOAT, FLOAT16, TensorProto.DOUBLE) and _numel(init.dims) > 64


def _copy_fields(dst, src, skip):
    for fd, val in src.ListFields():
        if fd.name in skip:
            continue
        if hasattr(val, "extend"):  # a repeated field
            getattr(dst, fd.name).extend(val)
        elif hasattr(val, "CopyFrom"):
            getattr(dst, fd.name).CopyFrom(val)
        else:
            setattr(dst, fd.name, val)


def light_copy(model):
    """A copy of `model` for shape inference with its large float weights as typed graph inputs
    instead of initializers: the dtypes and dims inference needs, none of the bytes (5.8 GB for a
    real DynamiCrafter UNet; onnxruntime's inference copies its input model twice per call). Built
    field by field: the weights' bytes are never read, since reading and writing them back would
    grow protobuf's arena by a whole copy each time. Their values are never needed either:
    onnxruntime's inference reads the initializers an arithmetic node takes, so they could not
    simply be left empty."""
    light = onnx.ModelProto()
    _copy_fields(light, model, {"graph"})
    g, lg = model.graph, light.graph
    _copy_fields(lg, g, {"initializer"})
    listed = {i.name for i in g.input}
    lg.initializer.extend(i for i in g.initializer if not _big_weight(i))
    lg.input.extend(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in g.initializer if _big_weight(i) and i.name not in listed)
    return light


def value_types(model):
    """Element type of every value in the main graph, from shape inference on light_copy (a >2 GB
    model cannot be serialised for onnx's inference, and neither needs the weights' bytes)."""
    if any(n.domain == MS_DOMAIN for n in model.graph.node):
        # onnxruntime's fused operators (optimize.py) have no ONNX schema: onnx's inference would
        # leave them and everything after them untyped; onnxruntime's own knows them.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return _types_of(SymbolicShapeInference.infer_shapes(light_copy(model), auto_merge=True, guess_output_rank=True), model)
    return _types_of(onnx.shape_inference.infer_shapes(light_copy(model)), model)


def _types_of(inferred, model):
    types = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    types[node.output[0]] = a.t.data_type
    return types


def _to_fp16_array(arr):
    a = np.asarray(arr, dtype=np.float32)
    finite = np.isfinite(a)
    a = np.where(finite, np.clip(a, -FP16_MAX, FP16_MAX), a)  # keep ±inf (attention masks)
    return a.astype(np.float16)


def convert_to_fp16(model, keep_fp32_inputs=(), min_elements=1024, block_ops=()):
    """Converts `model` (a float32 ModelProto, modified in place and returned) to float16 weights
    and compute; graph inputs and outputs stay float32. Returns (model, stats)."""
    g = model.graph
    types = value_types(model)
    inits = {i.name: i for i in g.initializer}
    init_names = set(inits)
    names = _all_names(g, set())
    keep_fp32_inputs = set(keep_fp32_inputs)
    unknown = [k for k in keep_fp32_inputs if k not in {i.name for i in g.input}]
    if unknown:
        raise Fp16Error(f"keep_fp32_inputs names {unknown}, which are not graph inputs ({[i.name for i in g.input]})")

    def fresh(base):
        name, k = base, 1
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.add(name)
        return name

    seeds = {i.name for i in g.input if types.get(i.name) == FLOAT and i.name not in keep_fp32_inputs and i.name not in init_names}
    seeds |= {n for n, i in inits.items() if i.data_type == FLOAT and _numel(i.dims) > min_elements}
    half = set()  # values that carry float16 after conversion
    out_nodes = []
    cast16, cast32, init16 = {}, {}, {}
    new_inits = []
    stats = {"fp16_nodes": 0, "fp32_nodes": 0, "casts": 0, "fp16_params": 0, "fp32_params": 0}

    def as16(name):
        if name in inits:
            if name not in init16:
                t = numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(inits[name])), fresh(f"{name}__fp16"))
                new_inits.append(t)
                init16[name] = t.name
            return init16[name]
        if name not in cast16:
            o = fresh(f"{name}__fp16")
            out_nodes.append(helper.make_node("Cast", [name], [o], name=fresh(f"cast16_{name}"), to=FLOAT16))
            cast16[name] = o
            half.add(o)
            stats["casts"] += 1
        return cast16[name]

    def as32(name):
        if name not in cast32:
            o = fresh(f"{name}__fp32")
            out_nodes.append(helper.make_node("Cast", [name], [o], name=fresh(f"cast32_{name}"), to=FLOAT))
            cast32[name] = o
            stats["casts"] += 1
        return cast32[name]

    for node in g.node:
        op = node.op_type
        subs = list(_subgraphs(node))
        if op == "Constant":
            attr = next((a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR), None)
            if attr is not None and attr.t.data_type == FLOAT and _numel(attr.t.dims) > min_elements:
                attr.t.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(attr.t)), attr.t.name))
                half.add(node.output[0])
                stats["fp16_nodes"] += 1
            else:
                stats["fp32_nodes"] += 1
            out_nodes.append(node)
            continue
        slots32 = FP32_SLOTS.get(op, set())
        is16 = (
            not subs
            and op not in FP32_OPS
            and op not in block_ops
            and any(n and i not in slots32 and (n in half or n in seeds) for i, n in enumerate(node.input))
        )
        if is16:
            for i, n in enumerate(node.input):
                if not n:
                    continue
                if i in slots32:
                    if n in half:
                        node.input[i] = as32(n)
                elif n not in half and types.get(n) == FLOAT:
                    node.input[i] = as16(n)
            if op == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i == FLOAT:
                        a.i = FLOAT16
            for o in node.output:
                if types.get(o) == FLOAT:
                    half.add(o)
            stats["fp16_nodes"] += 1
        else:
            for i, n in enumerate(node.input):
                if n in half:
                    node.input[i] = as32(n)
            for sub in subs:
                for r in _outer_refs(sub):
                    if r in half:
                        _rename_inputs(sub, r, as32(r))
            stats["fp32_nodes"] += 1
        out_nodes.append(node)

    # Float16 graph outputs: the producer writes `<name>__fp16`, a final Cast restores `<name>`.
    tail = []
    renamed = {}
    for out in g.output:
        if out.name in half:
            h = fresh(f"{out.name}__fp16")
            renamed[out.name] = h
            for node in out_nodes:
                for i, n in enumerate(node.output):
                    if n == out.name:
                        node.output[i] = h
                for i, n in enumerate(node.input):
                    if n == out.name:
                        node.input[i] = h
                for sub in _subgraphs(node):
                    _rename_inputs(sub, out.name, h)
            tail.append(helper.make_node("Cast", [h], [out.name], name=fresh(f"cast32_{out.name}"), to=FLOAT))
            stats["casts"] += 1

    del g.node[:]
    g.node.extend(out_nodes + tail)
    # Drop float32 weights nothing reads any more; add the float16 copies.
    still_read = set()
    for node in g.node:
        still_read.update(node.input)
        for sub in _subgraphs(node):
            still_read |= _outer_refs(sub)
    still_read.update(o.name for o in g.output)
    kept = [i for i in g.initializer if i.name in still_read]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    for i in g.initializer:
        if i.data_type == FLOAT16:
            stats["fp16_params"] += _numel(i.dims)
        elif i.data_type == FLOAT:
            stats["fp32_params"] += _numel(i.dims)
    for vi in g.value_info:
        if vi.name in half and vi.type.HasField("tensor_type"):
            vi.type.tensor_type.elem_type = FLOAT16
            vi.name = renamed.get(vi.name, vi.name)
    return model, stats
