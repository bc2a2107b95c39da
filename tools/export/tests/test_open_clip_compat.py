"""open_clip ≥ 2.23 under lvdm's sequence-first calls (loaders.open_clip_compat), and ONNX export of
nn.MultiheadAttention in eval mode (its fused fast path has no ONNX symbolic).

Run from the repository root:  .venv/bin/python -m unittest tools.export.tests.test_open_clip_compat
"""

import os
import tempfile
import types
import unittest

import torch

from tools.export.bundle import _torch_export
from tools.export.loaders import open_clip_compat

try:
    import open_clip
except ImportError:  # pragma: no cover - the project's venv has it
    open_clip = None

_TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 100, "width": 32, "heads": 2, "layers": 2},
}


def _tiny_clip():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "cil-test-tiny.json")
        with open(path, "w", encoding="utf-8") as f:
            import json

            json.dump(_TINY, f)
        open_clip.add_model_config(path)
    torch.manual_seed(0)
    return open_clip.create_model("cil-test-tiny", pretrained=None).eval()


@unittest.skipIf(open_clip is None, "open_clip is not installed")
class OpenClipCompat(unittest.TestCase):
    def test_sequence_first_calls_match_open_clip(self):
        clip = _tiny_clip()
        holder = types.SimpleNamespace(cond_stage_model=types.SimpleNamespace(model=clip), embedder=types.SimpleNamespace(model=clip))
        tokens = torch.randint(1, 100, (2, 77))
        with torch.no_grad():
            x = clip.token_embedding(tokens) + clip.positional_embedding
            want_text = clip.transformer(x, attn_mask=clip.attn_mask)  # open_clip's own (batch-first) call
            pix = torch.randn(2, 17, 32)  # [N, L, D] tokens for the vision transformer
            want_vis = clip.visual.transformer(pix)
            open_clip_compat(holder)
            # lvdm's calls: [L, N, D] into each text block, and into the vision transformer.
            h = x.permute(1, 0, 2)
            for block in clip.transformer.resblocks:
                h = block(h, attn_mask=clip.attn_mask)
            got_vis = clip.visual.transformer(pix.permute(1, 0, 2)).permute(1, 0, 2)
        torch.testing.assert_close(h.permute(1, 0, 2), want_text, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_vis, want_vis, rtol=1e-5, atol=1e-5)
        self.assertFalse(clip.visual.input_patchnorm)


class MhaExport(unittest.TestCase):
    def test_eval_multihead_attention_exports(self):
        mha = torch.nn.MultiheadAttention(16, 2, batch_first=True).eval()

        class Wrap(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.mha = mha

            def forward(self, x):
                return self.mha(x, x, x, need_weights=False)[0]

        with tempfile.TemporaryDirectory() as d, torch.no_grad():
            _torch_export(Wrap().eval(), {"x": torch.randn(1, 5, 16)}, ["x"], ["y"], None, os.path.join(d, "m.onnx"), 17)
            self.assertTrue(os.path.getsize(os.path.join(d, "m.onnx")) > 0)
        if hasattr(torch.backends, "mha"):
            self.assertTrue(torch.backends.mha.get_fastpath_enabled())


if __name__ == "__main__":
    unittest.main()
