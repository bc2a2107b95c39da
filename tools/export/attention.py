"""Einsum attention → onnxruntime's fused MultiHeadAttention.

onnxruntime's transformer optimiser (optimize.py) knows diffusers' attention graphs (SVD's) but
not the lvdm attention DynamiCrafter and VideoCrafter use, which torch exports as

    Qp, Kp, Vp = x·Wq, ctx·Wk, ctx·Wv                          [b, n, h·d]
    Q3 = Reshape(Transpose(Reshape(Qp, [b, n, h, d]), 0213), [b·h, n, d])   (likewise K3, V3)
    S  = Softmax(Mul(Einsum('bid,bjd->bij', Q3, K3), scale))
    O  = Reshape(Transpose(Reshape(Einsum('bij,bjd->bid', S, V3), [b, h, n, d]), 0213), [b, n, h·d])

so the real DynamiCrafter UNet kept all 82 of its attentions unfused: every [b·h, n, n] score
matrix materialised, a dozen kernels each. This pass rewrites each such chain into one
`com.microsoft.MultiHeadAttention(Qp, Kp, Vp)` with `num_heads` h and `scale` (the same softmax of
the scaled scores; flash / memory-efficient attention on CUDA, a blocked kernel on the CPU). A
chain that differs anywhere (a mask before the softmax, another equation, a head count that is not
a constant) is left as it is. Hand-written because no library fuses this pattern.
"""

import numpy as np
from onnx import helper, numpy_helper

from .fp16 import MS_DOMAIN

_QK = "bid,bjd->bij"
_AV = "bij,bjd->bid"


class _Graph:
    def __init__(self, g):
        self.g = g
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.inits = {i.name: i for i in g.initializer}

    def const(self, name):
        """The value of a constant (initializer or Constant node), else None."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def node(self, name, op):
        n = self.producer.get(name)
        return n if n is not None and n.op_type == op else None


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _equation(node):
    e = _attr(node, "equation")
    return (e.decode() if isinstance(e, bytes) else e or "").replace(" ", "")


def _rank_ok(gr, shape, rank):
    """Whether a Reshape's shape input has `rank` entries (a constant, or a Concat of as many)."""
    c = gr.const(shape)
    if c is not None:
        return c.size == rank
    concat = gr.node(shape, "Concat")
    return concat is not None and len(concat.input) == rank


def _dim(gr, shape, rank, axis):
    """Entry `axis` of a Reshape's shape input of `rank` entries when it is a constant, else None:
    the shape is a constant (after onnxruntime's folding) or a Concat of per-axis values."""
    c = gr.const(shape)
    if c is not None:
        return int(c.reshape(-1)[axis]) if c.size == rank else None
    concat = gr.node(shape, "Concat")
    if concat is None or len(concat.input) != rank:
        return None
    v = gr.const(concat.input[axis])
    return int(v.reshape(-1)[0]) if v is not None and v.size == 1 else None


def _heads_split(gr, name):
    """Q3-style value: Reshape(Transpose(Reshape(P, [b, n, h, d]), 0213), ·) → (P, h), else None."""
    r2 = gr.node(name, "Reshape")
    t = r2 and gr.node(r2.input[0], "Transpose")
    r1 = t and gr.node(t.input[0], "Reshape")
    if not r1 or list(_attr(t, "perm") or []) != [0, 2, 1, 3]:
        return None
    h = _dim(gr, r1.input[1], 4, 2)
    return (r1.input[0], h) if h and h > 0 else None


def _heads_merge(gr, name):
    """The output chain Reshape([b, h, n, d]) → Transpose(0213) → Reshape([b, n, h·d]) read
    from the AV einsum's output `name`: the final value's name, else None."""
    r1 = [c for c in gr.consumers.get(name, []) if c.op_type == "Reshape" and c.input[0] == name]
    others = [c for c in gr.consumers.get(name, []) if c.op_type not in ("Reshape", "Shape")]
    if len(r1) != 1 or others:
        return None
    if not _rank_ok(gr, r1[0].input[1], 4):
        return None
    t = gr.consumers.get(r1[0].output[0], [])
    if len(t) != 1 or t[0].op_type != "Transpose" or list(_attr(t[0], "perm") or []) != [0, 2, 1, 3]:
        return None
    r2 = gr.consumers.get(t[0].output[0], [])
    if len(r2) != 1 or r2[0].op_type != "Reshape" or not _rank_ok(gr, r2[0].input[1], 3):
        return None
    return r2[0].output[0]


def _match(gr, softmax):
    """(query, key, value, heads, scale, output name) for one attention around `softmax`, else None."""
    if softmax.op_type != "Softmax" or _attr(softmax, "axis") not in (-1, 2):
        return None
    mul = gr.node(softmax.input[0], "Mul")
    if mul is None:
        return None
    qk, scale = None, None
    for a, b in ((0, 1), (1, 0)):
        e = gr.node(mul.input[a], "Einsum")
        s = gr.const(mul.input[b])
        if e is not None and s is not None and s.size == 1:
            qk, scale = e, float(s.reshape(-1)[0])
    if qk is None or _equation(qk) != _QK:
        return None
    av = gr.consumers.get(softmax.output[0], [])
    if len(av) != 1 or av[0].op_type != "Einsum" or _equation(av[0]) != _AV or av[0].input[0] != softmax.output[0]:
        return None
    q, k, v = (_heads_split(gr, n) for n in (qk.input[0], qk.input[1], av[0].input[1]))
    if not (q and k and v) or not q[1] == k[1] == v[1]:
        return None
    out = _heads_merge(gr, av[0].output[0])
    if out is None:
        return None
    return q[0], k[0], v[0], q[1], scale, out


def _prune(g, keep):
    """Drops nodes whose outputs nothing reads (the chains the fusion replaced), in place."""
    while True:
        read = set(keep)
        for n in g.node:
            read.update(n.input)
        dead = [i for i, n in enumerate(g.node) if not any(o in read for o in n.output if o)]
        if not dead:
            return
        for i in reversed(dead):
            del g.node[i]


def fuse_einsum_attention(model):
    """Rewrites every matching einsum attention of `model` (modified in place) into
    MultiHeadAttention; returns how many."""
    g = model.graph
    gr = _Graph(g)
    fused = []
    for s in list(g.node):
        m = _match(gr, s)
        if m is not None:
            fused.append((s, m))
    if not fused:
        return 0
    replace = {}  # the final Reshape's output → the fused node that now produces it
    for k, (s, (q, key, v, heads, scale, out)) in enumerate(fused):
        replace[out] = helper.make_node(
            "MultiHeadAttention", [q, key, v], [out], name=f"{s.name or 'attention'}_mha{k}", domain=MS_DOMAIN,
            num_heads=heads, scale=np.float32(scale).item(),
        )
    nodes = []
    for n in g.node:
        if any(o in replace for o in n.output):
            nodes.append(replace.pop(n.output[0]))  # same place in the order: its inputs come earlier
        else:
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    _prune(g, {o.name for o in g.output})
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.add(domain=MS_DOMAIN, version=1)
    return len(fused)
