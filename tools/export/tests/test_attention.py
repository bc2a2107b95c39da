"""attention.py: lvdm-style einsum attention (DynamiCrafter's and VideoCrafter's, written here the
way torch traces it: per-head split by reshape/permute, einsum scores, scaled softmax, einsum
values, heads merged back) becomes com.microsoft.MultiHeadAttention through the exporter's
transformer-optimiser step, and onnxruntime's output stays the torch module's; a variant the
fused operator cannot express (a mask before the softmax) is left alone.

Run from the repository root:  .venv/bin/python -m unittest tools.export.tests.test_attention
"""

import os
import tempfile
import unittest

import numpy as np
import onnx
import torch

from tools.export.bundle import _torch_export
from tools.export.optimize import fuse_transformer_ops


def _split(t, h):
    b, n, _ = t.shape
    return t.reshape(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1)


class EinsumAttention(torch.nn.Module):
    def __init__(self, dim, ctx_dim, heads, masked=False):
        super().__init__()
        self.heads, self.scale, self.masked = heads, (dim // heads) ** -0.5, masked
        self.q = torch.nn.Linear(dim, dim, bias=False)
        self.k = torch.nn.Linear(ctx_dim, dim, bias=False)
        self.v = torch.nn.Linear(ctx_dim, dim, bias=False)
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x, ctx):
        h = self.heads
        q, k, v = _split(self.q(x), h), _split(self.k(ctx), h), _split(self.v(ctx), h)
        sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
        if self.masked:  # causal, as a temporal attention may be
            n = sim.shape[-1]
            sim = sim.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), -torch.finfo(sim.dtype).max)
        o = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
        b = x.shape[0]
        o = o.reshape(b, h, o.shape[1], -1).permute(0, 2, 1, 3).reshape(b, o.shape[1], -1)
        return self.out(o)


class Block(torch.nn.Module):
    """Self-attention then cross-attention on a context, as an lvdm transformer block."""

    def __init__(self, masked=False):
        super().__init__()
        self.norm = torch.nn.LayerNorm(32)
        self.attn1 = EinsumAttention(32, 32, 4, masked=masked)
        self.attn2 = EinsumAttention(32, 24, 4)

    def forward(self, x, ctx):
        x = self.attn1(self.norm(x), self.norm(x)) + x
        return self.attn2(self.norm(x), ctx) + x


def _export(module, inputs):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        with torch.no_grad():
            _torch_export(module, inputs, list(inputs), ["y"], {k: {0: "batch"} for k in [*inputs, "y"]}, path, 17)
        return onnx.load(path)


def _ops(model):
    return [n.op_type for n in model.graph.node]


class EinsumAttentionFusion(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.inputs = {"x": torch.randn(2, 10, 32), "ctx": torch.randn(2, 7, 24)}

    def run_ort(self, model):
        import onnxruntime as ort

        s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {k: v.numpy() for k, v in self.inputs.items()})[0]

    def test_fused_into_multi_head_attention_with_the_same_output(self):
        block = Block().eval()
        model = _export(block, self.inputs)
        self.assertEqual(_ops(model).count("Einsum"), 4)
        fused, counts = fuse_transformer_ops(model)
        ops = _ops(fused)
        self.assertEqual(counts.get("MultiHeadAttention"), 2, counts)
        self.assertEqual(ops.count("MultiHeadAttention"), 2)
        self.assertEqual(ops.count("Einsum") + ops.count("Softmax"), 0, "the unfused chains are pruned")
        heads = {a.i for n in fused.graph.node if n.op_type == "MultiHeadAttention" for a in n.attribute if a.name == "num_heads"}
        self.assertEqual(heads, {4})
        onnx.checker.check_model(fused)
        with torch.no_grad():
            want = block(*self.inputs.values()).numpy()
        got = self.run_ort(fused)
        self.assertLessEqual(float(np.abs(got - want).max() / np.abs(want).max()), 1e-5)

    def test_a_masked_attention_is_left_alone(self):
        block = Block(masked=True).eval()
        fused, counts = fuse_transformer_ops(_export(block, self.inputs))
        self.assertEqual(counts.get("MultiHeadAttention"), 1, "only the unmasked cross-attention")
        self.assertEqual(_ops(fused).count("Einsum"), 2)
        with torch.no_grad():
            want = block(*self.inputs.values()).numpy()
        self.assertLessEqual(float(np.abs(self.run_ort(fused) - want).max() / np.abs(want).max()), 1e-5)


if __name__ == "__main__":
    unittest.main()
