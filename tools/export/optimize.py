"""onnxruntime's transformer optimiser on the exported UNet: attention fusion and friends.

The exported graph spells attention out as MatMul → Mul → Softmax → MatMul with reshapes and
transposes around them, which materialises every [tokens × tokens] score matrix in memory and runs
as a dozen kernels. `onnxruntime.transformers.optimizer` (model_type 'unet', the fusions ONNX
Runtime's own Stable Diffusion pipeline applies) rewrites these into its fused `Attention` /
`MultiHeadAttention` operators (flash / memory-efficient attention on CUDA, a blocked kernel on the
CPU), `LayerNormalization` / `SkipLayerNormalization` and `Gelu`; attention.py then fuses the
lvdm attention it does not recognise (DynamiCrafter's, VideoCrafter's). It runs on the float32 graph,
before the float16 pass (fp16.py): its patterns are written against float32 exports.

Only fusions with kernels on both the CPU and CUDA are switched on, so a bundle still runs
anywhere (the worker falls back to the CPU; `cil verify-bundle` runs there): GroupNorm, SkipGroupNorm,
BiasSplitGelu, BiasAdd and NhwcConv are CUDA-only and stay off. Packed QKV/KV stays off with them.
"""

import sys
from contextlib import contextmanager

from .attention import fuse_einsum_attention
from .fp16 import MS_DOMAIN, light_copy

# CUDA-only fused operators (onnxruntime 1.32): never emitted, see the module docstring.
_CUDA_ONLY = ("enable_nhwc_conv", "enable_group_norm", "enable_skip_group_norm", "enable_bias_splitgelu", "enable_bias_add", "enable_packed_qkv", "enable_packed_kv")


def fusion_options():
    from onnxruntime.transformers.fusion_options import FusionOptions

    opts = FusionOptions("unet")
    for name in _CUDA_ONLY:
        setattr(opts, name, False)
    return opts


@contextmanager
def _light_shape_inference():
    """onnxruntime's symbolic shape inference on fp16.light_copy of its input while the optimiser
    runs: its fusions ask for shapes on the whole model, and each time it copies the model twice,
    weights included (the real DynamiCrafter UNet's float16 export peaked past 24 GB there). Shapes
    and types come out the same. The optimiser imports the class under two module names
    (onnxruntime.tools.symbolic_shape_infer, and symbolic_shape_infer through its sys.path entry)."""
    import onnxruntime.transformers.shape_infer_helper  # noqa: F401 — adds the second name
    from onnxruntime.tools import symbolic_shape_infer

    classes = {symbolic_shape_infer.SymbolicShapeInference}
    if "symbolic_shape_infer" in sys.modules:
        classes.add(sys.modules["symbolic_shape_infer"].SymbolicShapeInference)
    saved = [(c, c.__dict__["_preprocess"]) for c in classes if "_preprocess" in c.__dict__]
    for c, original in saved:
        c._preprocess = lambda self, in_mp, original=original: original(self, light_copy(in_mp))
    try:
        yield
    finally:
        for c, original in saved:
            c._preprocess = original


def fuse_transformer_ops(model):
    """Applies the fusions to `model` (a float32 ModelProto, modified in place); returns
    (model, {fused operator: count})."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: the Python fusions only, no onnxruntime session (which would fold the graph for
    # the machine exporting it).
    with _light_shape_inference():
        optimized = optimize_model(model, model_type="unet", num_heads=0, hidden_size=0, optimization_options=fusion_options(), opt_level=0, use_gpu=False)
    out = optimized.model
    if not any(o.domain == MS_DOMAIN for o in out.opset_import) and any(n.domain == MS_DOMAIN for n in out.graph.node):
        out.opset_import.add(domain=MS_DOMAIN, version=1)
    counts = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    # lvdm's einsum attention (DynamiCrafter, VideoCrafter), which the optimiser does not know
    n = fuse_einsum_attention(out)
    if n:
        counts["MultiHeadAttention"] = counts.get("MultiHeadAttention", 0) + n
    return out, counts
