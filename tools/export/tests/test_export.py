"""Exports tiny stand-ins of all three families (tools/export/tests/standins.py) through the same
code the CLI runs, and checks the bundles: manifest fields, the contract's tensor names, onnx.checker,
hashes, parity files, the float16 conversion, and the loaders' checkpoint handling.

Run from the repository root:  .venv/bin/python -m unittest discover -s tools/export/tests
With CIL_EXPORT_TEST_OUT=<dir> the bundles are left in <dir>/<name> (test/export.test.ts then
loads them with the worker and runs onnxruntime on them); otherwise a temporary folder is removed.
"""

import hashlib
import json
import os
import shutil
import sys
import textwrap
import tempfile
import unittest
import warnings

import numpy as np
import onnx
import torch

from tools.export import cli
from tools.export.build import Geometry, parse_default_overrides, vp_manifest
from tools.export.bundle import ExportError
from tools.export.contract import CONTRACT, FAMILY_TABLE, ContractError
from tools.export.fp16 import FLOAT, FLOAT16, value_types
from tools.export.loaders import LoadError, load_cil_unet_weights, load_lvdm, lvdm_state_dict, parts_from_lvdm
from tools.export.tests import standins as S
from tools.export.wrappers import ClipImageEncoder, OpenClipVisionTokens

VOCAB = 2 + len(S.WORDS)
QUIET = {"log": lambda *a: None}
# A stand-in model checkout, shared with the fine-tuning tests.
FAKE_CHECKOUT = os.path.join(os.path.dirname(__file__), "..", "..", "finetune", "tests", "fake_checkout")
# Stand-in weights are tiny: treat tensors over 16 elements as weights in the float16 pass, so the
# sinusoidal-embedding constants (4 elements) are not, as the 160-element ones of real UNets are not.
SMALL = ["--fp16-min-elements", "16"]

# float16 (with the transformer optimiser on the UNet) is the default; --fp32 and --no-optimize give
# the exporter's earlier outputs (test/fixtures/golden/bundles were exported by these arguments).
BUNDLES = {
    "dynamicrafter": ("dynamicrafter", ["--fp32"]),
    "dynamicrafter-cil-fp16": ("dynamicrafter", ["--cil", "--fp32-components", "vae_encoder"] + SMALL),
    "videocrafter": ("videocrafter", ["--dynamic-frames", "--fp32"]),
    "svd": ("svd", ["--dynamic-frames", "--external-data", "--fp32"]),
    "svd-cil-fp16": ("svd", ["--cil", "--fp16", "--no-optimize"] + SMALL),
}


def _quiet_warnings():
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def export(name, family, extra, root, tokenizer):
    out = os.path.join(root, name)
    if family == "svd":
        argv = ["--ckpt", "stand-in-svd", "--out", out, "--height", "64", "--width", "64"] + extra
        return cli.export_svd(S.svd_parts(), cli.parser(family).parse_args(argv), **QUIET)
    argv = ["--repo", "x", "--ckpt", "stand-in.ckpt", "--config", "x.yaml", "--tokenizer-json", tokenizer, "--out", out] + extra
    return cli.export_vp(family, S.vp_parts(family, VOCAB), cli.parser(family).parse_args(argv), **QUIET)


class Bundles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        _quiet_warnings()
        cls.keep = os.environ.get("CIL_EXPORT_TEST_OUT")
        cls.root = cls.keep or tempfile.mkdtemp(prefix="cil-export-test-")
        os.makedirs(cls.root, exist_ok=True)
        cls.tokenizer = os.path.join(cls.root, "stand-in-tokenizer.json")
        with open(cls.tokenizer, "w", encoding="utf-8") as f:
            json.dump(S.tokenizer_json(), f)
        cls.manifests = {name: export(name, fam, extra, cls.root, cls.tokenizer) for name, (fam, extra) in BUNDLES.items()}

    @classmethod
    def tearDownClass(cls):
        if not cls.keep:
            shutil.rmtree(cls.root, ignore_errors=True)

    def path(self, bundle, *rest):
        return os.path.join(self.root, bundle, *rest)

    def load(self, bundle, component):
        return onnx.load(self.path(bundle, self.manifests[bundle]["components"][component]["file"]))

    def test_manifest_written_matches_returned(self):
        for name, m in self.manifests.items():
            with open(self.path(name, "manifest.json"), encoding="utf-8") as f:
                self.assertEqual(json.load(f), m, name)

    def test_gpu_memory_estimate_recorded_at_the_bundle_resolution(self):
        from tools.export.bundle import estimate_gpu_memory
        for name, m in self.manifests.items():
            res = f"{m['resolution']['height']}x{m['resolution']['width']}"
            self.assertEqual(list(m["gpuMemory"]), [res], name)
            need = m["gpuMemory"][res]
            self.assertEqual((need["source"], need["frames"], need["batch"]), ("estimated", m["frames"], 2), name)
            weights = sum(os.path.getsize(self.path(name, f)) for c in m["components"].values() for f in [c["file"]] + c.get("externalData", []))
            self.assertGreater(need["gib"] * 2**30, weights, name)
        # The documented sizes (docs/models.md §5): a 576×1024 DynamiCrafter needs the 48 GB class, 320×512 fits 24 GB.
        big = estimate_gpu_memory({"height": 576, "width": 1024}, 16, 8, 5e9, True)["576x1024"]["gib"]
        small = estimate_gpu_memory({"height": 320, "width": 512}, 16, 8, 5e9, True)["320x512"]["gib"]
        self.assertTrue(23 < big < 44, big)
        self.assertTrue(small < 21, small)

    def test_dynamicrafter_manifest(self):
        m = self.manifests["dynamicrafter"]
        self.assertEqual(m["format"], "cil-bundle/1")
        self.assertEqual((m["id"], m["family"], m["cil"], m["frames"]), ("dynamicrafter-64x64", "dynamicrafter", False, 4))
        self.assertEqual(m["resolution"], {"height": 64, "width": 64})
        self.assertEqual(m["latent"], {"channels": 4, "downsample": 8, "scaleFactor": 0.18215})
        self.assertEqual(m["schedule"], {
            "kind": "vp-ddim", "betaSchedule": "linear", "linearStart": 0.00085, "linearEnd": 0.012, "timesteps": 1000,
            "rescaleZeroSnr": True, "parameterization": "v", "spacing": "uniform_trailing",
            "dynamicRescale": {"enabled": True, "base": 0.7, "rampSteps": 400, "finalPrev": "tau0"},
        })
        self.assertEqual(m["tokenizer"], {"file": "tokenizer.json", "maxLength": 77})
        self.assertEqual(m["defaults"], {
            "steps": 50, "start": 940, "analyticInit": True, "statistics": "dynamicrafter-64x64",
            "guidanceScale": 7.5, "guidanceRescale": 0.7, "eta": 1, "frameStride": 24, "fps": 8,
        })
        unet = m["components"]["unet"]
        self.assertEqual([i["name"] for i in unet["inputs"]], ["x", "timestep", "context", "fs"])
        # DynamiCrafter's frames are fixed (its image tokens are per frame); batch is dynamic.
        self.assertEqual(unet["inputs"][0]["dims"], ["batch", 8, 4, 8, 8])
        self.assertEqual(unet["inputs"][1], {"name": "timestep", "dtype": "int64", "dims": ["batch"]})
        # context = 77 text tokens + 2 queries × 4 frames of image tokens, width 16
        self.assertEqual(unet["inputs"][2]["dims"], ["batch", 85, 16])
        self.assertEqual(unet["outputs"], [{"name": "out", "dtype": "float32", "dims": ["batch", 4, 4, 8, 8]}])
        self.assertEqual(m["components"]["image_encoder"]["inputs"][0]["dims"], ["batch", 3, 224, 224])
        self.assertEqual(m["components"]["vae_decoder"]["outputs"][0]["dims"], ["batch", 3, 64, 64])

    def test_cil_fp16_manifest_and_graphs(self):
        m = self.manifests["dynamicrafter-cil-fp16"]
        self.assertTrue(m["cil"])
        self.assertEqual(m["id"], "dynamicrafter-64x64-cil-fp16")
        self.assertEqual(m["defaults"]["start"], FAMILY_TABLE["dynamicrafter"]["startCil"])
        self.assertIn("CIL", m["description"])
        with open(self.path("dynamicrafter-cil-fp16", "parity", "index.json"), encoding="utf-8") as f:
            index = json.load(f)
        for comp in CONTRACT["dynamicrafter"]:
            model = self.load("dynamicrafter-cil-fp16", comp)
            dtypes = {i.data_type for i in model.graph.initializer if len(i.dims) and int(np.prod(i.dims)) > 16}
            io = [v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)]
            self.assertNotIn(FLOAT16, io, f"{comp}: graph inputs/outputs stay float32/int64")
            if comp == "vae_encoder":  # --fp32-components vae_encoder
                self.assertEqual(dtypes, {FLOAT}, comp)
                self.assertEqual(index["components"][comp]["tolerance"], 1e-4)
            else:
                self.assertEqual(dtypes, {FLOAT16}, f"{comp}: weights are float16")
                self.assertTrue(index["components"][comp]["fp16"])
                self.assertEqual(index["components"][comp]["tolerance"], 1e-2)

    def test_fp16_keeps_sinusoidal_embeddings_float32(self):
        for bundle in ("dynamicrafter-cil-fp16", "svd-cil-fp16"):
            model = self.load(bundle, "unet")
            types = value_types(model)
            trig = [n for n in model.graph.node if n.op_type in ("Cos", "Sin")]
            self.assertGreater(len(trig), 0)
            for n in trig:
                self.assertEqual(types[n.input[0]], FLOAT, f"{bundle}: {n.op_type} runs in float32")
            half_nodes = [n for n in model.graph.node if any(types.get(o) == FLOAT16 for o in n.output)]
            self.assertGreater(len(half_nodes), 10, f"{bundle}: the network body runs in float16")
        # SVD: timestep and added_time_ids are not cast to float16 on entry.
        model = self.load("svd-cil-fp16", "unet")
        # --no-optimize: the float16 pass alone, no onnxruntime fused operators
        self.assertFalse([n.op_type for n in model.graph.node if n.domain == "com.microsoft"])
        for n in model.graph.node:
            if n.op_type == "Cast" and n.input[0] in ("timestep", "added_time_ids"):
                self.assertNotEqual(next(a.i for a in n.attribute if a.name == "to"), FLOAT16)

    def test_fp16_resize_scales_stay_float32(self):
        model = self.load("dynamicrafter-cil-fp16", "vae_decoder")
        types = value_types(model)
        resize = [n for n in model.graph.node if n.op_type == "Resize"]
        self.assertEqual(len(resize), 3)
        for n in resize:
            self.assertEqual(types[n.input[0]], FLOAT16)
            self.assertEqual(types[n.input[2]], FLOAT)

    def test_videocrafter_manifest(self):
        m = self.manifests["videocrafter"]
        self.assertEqual(m["schedule"]["parameterization"], "eps")
        self.assertEqual(m["schedule"]["spacing"], "uniform")
        self.assertFalse(m["schedule"]["rescaleZeroSnr"])
        self.assertEqual(m["schedule"]["dynamicRescale"], {"enabled": True, "base": 0.7, "rampSteps": 400, "finalPrev": "index0"})
        self.assertEqual(m["defaults"], {"steps": 50, "start": 940, "analyticInit": True, "statistics": "videocrafter-64x64", "guidanceScale": 12, "eta": 1, "fps": 24})
        unet = m["components"]["unet"]
        self.assertEqual([i["name"] for i in unet["inputs"]], ["x", "timestep", "context", "fps"])
        self.assertEqual(unet["inputs"][0]["dims"], ["batch", 4, "frames", 8, 8])  # --dynamic-frames
        self.assertEqual(unet["inputs"][2]["dims"], ["batch", 81, 16])  # 77 + 4 image tokens
        with open(self.path("videocrafter", "parity", "index.json"), encoding="utf-8") as f:
            x = json.load(f)["components"]["unet"]["inputs"][0]
        self.assertEqual(x["dims"], [1, 4, 2, 8, 8], "parity runs at batch 1 and 2 frames (traced at 2 and 4)")

    def test_svd_manifest(self):
        m = self.manifests["svd"]
        self.assertNotIn("tokenizer", m)
        self.assertEqual(m["schedule"], {"kind": "edm-euler", "sigmaMin": 0.002, "sigmaMax": 700.0, "rho": 7.0, "parameterization": "v"})
        self.assertEqual(m["defaults"], {
            "steps": 25, "start": 700, "analyticInit": True, "statistics": "svd-64x64", "minGuidanceScale": 1,
            "maxGuidanceScale": 3, "fps": 7, "motionBucketId": 127, "noiseAugStrength": 0.02,
        })
        unet = m["components"]["unet"]
        self.assertEqual([(i["name"], i["dtype"]) for i in unet["inputs"]], [("sample", "float32"), ("timestep", "float32"), ("encoder_hidden_states", "float32"), ("added_time_ids", "float32")])
        self.assertEqual(unet["inputs"][0]["dims"], ["batch", "frames", 8, 8, 8])
        self.assertEqual(unet["outputs"][0]["dims"], ["batch", "frames", 4, 8, 8])
        self.assertEqual(m["components"]["image_encoder"]["outputs"][0]["dims"], ["batch", 1, 16])
        for comp, c in m["components"].items():  # --external-data
            self.assertEqual(c["externalData"], [f"{comp}.onnx.data"])
            self.assertTrue(os.path.isfile(self.path("svd", c["externalData"][0])))
        self.assertEqual(self.manifests["svd-cil-fp16"]["defaults"]["start"], 100)
        self.assertTrue(self.manifests["svd-cil-fp16"]["cil"])

    def test_every_component_checks_hashes_and_parity(self):
        for name, m in self.manifests.items():
            family = m["family"]
            self.assertEqual(sorted(m["components"]), sorted(CONTRACT[family]), name)
            with open(self.path(name, "parity", "index.json"), encoding="utf-8") as f:
                index = json.load(f)
            self.assertEqual((index["format"], index["family"]), ("cil-parity/1", family))
            for comp, c in m["components"].items():
                path = self.path(name, c["file"])
                onnx.checker.check_model(path)
                with open(path, "rb") as f:
                    self.assertEqual(hashlib.sha256(f.read()).hexdigest(), c["sha256"], f"{name}/{comp}")
                want_in, want_out = CONTRACT[family][comp]
                self.assertEqual(tuple(i["name"] for i in c["inputs"]), want_in)
                self.assertEqual(tuple(o["name"] for o in c["outputs"]), want_out)
                p = index["components"][comp]
                self.assertEqual(tuple(t["name"] for t in p["inputs"]), want_in)
                for t in p["inputs"] + p["outputs"]:
                    arr = np.load(self.path(name, "parity", t["file"]))
                    self.assertEqual(list(arr.shape), t["dims"], t["file"])
                    self.assertEqual(str(arr.dtype), t["dtype"], t["file"])
                    self.assertTrue(np.isfinite(arr).all(), t["file"])
                batch = 3 if comp == "vae_decoder" else 1  # traced at batch 2
                self.assertEqual(p["inputs"][0]["dims"][0], batch, f"{name}/{comp}")

    def test_tokenizer_pads_with_zero(self):
        for name in ("dynamicrafter", "videocrafter"):
            with open(self.path(name, "tokenizer.json"), encoding="utf-8") as f:
                tok = json.load(f)
            self.assertEqual(tok["padding"]["pad_id"], 0)
            self.assertEqual(tok["padding"]["pad_token"], "[PAD]")
            self.assertEqual(tok["padding"]["strategy"], {"Fixed": 77})
            self.assertEqual(tok["truncation"]["max_length"], 77)
            self.assertEqual(tok["model"]["vocab"], S.tokenizer_json()["model"]["vocab"])


class Units(unittest.TestCase):
    def setUp(self):
        _quiet_warnings()
        self.tmp = tempfile.mkdtemp(prefix="cil-export-unit-")
        self.tok = os.path.join(self.tmp, "tokenizer.json")
        with open(self.tok, "w", encoding="utf-8") as f:
            json.dump(S.tokenizer_json(), f)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def args(self, family, *extra):
        base = ["--repo", "x", "--ckpt", "c.ckpt", "--config", "c.yaml", "--tokenizer-json", self.tok, "--out", os.path.join(self.tmp, "b")]
        return cli.parser(family).parse_args(base + list(extra))

    def test_image_encoder_bypasses_preprocess_and_normalises(self):
        torch.manual_seed(1)
        emb = S.TinyOpenClipImage()
        enc = ClipImageEncoder(OpenClipVisionTokens(emb)).eval()
        x = torch.rand(2, 3, 224, 224) * 2 - 1
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        with torch.no_grad():
            pixels = ((x + 1) / 2 - mean) / std
            t = emb.conv1(pixels).flatten(2).transpose(1, 2)
            t = torch.cat([emb.class_embedding.expand(2, 1, -1), t], dim=1) + emb.positional_embedding
            want = emb.proj(emb.ln(t))
            got = enc(x)
        torch.testing.assert_close(got, want)
        self.assertNotIn("preprocess", emb.__dict__, "the bypass is undone after the call")
        self.assertEqual(emb.preprocess(torch.ones(1))[0].item(), 100.0)

    def test_dynamicrafter_frames_must_match_image_tokens(self):
        with self.assertRaisesRegex(ContractError, "video_length"):
            cli.export_vp("dynamicrafter", S.vp_parts("dynamicrafter", VOCAB), self.args("dynamicrafter", "--frames", "3"), **QUIET)

    def test_bad_arguments_are_refused(self):
        parts = S.vp_parts("videocrafter", VOCAB)
        with self.assertRaisesRegex(ContractError, "multiple of 64"):
            cli.export_vp("videocrafter", parts, self.args("videocrafter", "--height", "60"), **QUIET)
        with self.assertRaisesRegex(ContractError, "not components"):
            cli.export_vp("videocrafter", parts, self.args("videocrafter", "--fp16", "--fp32-components", "vae"), **QUIET)
        with self.assertRaisesRegex(ContractError, "KEY=VALUE"):
            parse_default_overrides(["guidance=3"])
        with self.assertRaisesRegex(ContractError, "--id 'VC 1'"):
            cli.export_vp("videocrafter", parts, self.args("videocrafter", "--id", "VC 1"), **QUIET)
        with self.assertRaisesRegex(ContractError, "statistics id '../x'"):
            cli.export_vp("videocrafter", parts, self.args("videocrafter", "--statistics", "../x"), **QUIET)
        bad = os.path.join(self.tmp, "bad.json")
        with open(bad, "w", encoding="utf-8") as f:
            f.write('{"model": {}}')
        args = self.args("videocrafter")
        args.tokenizer_json = bad
        with self.assertRaisesRegex(ExportError, "model.vocab"):
            cli.export_vp("videocrafter", parts, args, **QUIET)

    def test_tokenizer_generated_from_open_clip_when_not_given(self):
        try:
            import open_clip  # noqa: F401  (the lvdm models' own dependency)
        except ImportError:
            self.skipTest("open_clip is not installed")
        out = os.path.join(self.tmp, "gen")
        args = cli.parser("videocrafter").parse_args(["--repo", "x", "--ckpt", "c.ckpt", "--config", "c.yaml", "--out", out])
        self.assertIsNone(args.tokenizer_json)
        m = cli.export_vp("videocrafter", S.vp_parts("videocrafter", 49408), args, **QUIET)
        self.assertTrue(m["id"].endswith("-fp16"), "float16 is the default")
        self.assertEqual(m["tokenizer"], {"file": "tokenizer.json", "maxLength": 77})
        with open(os.path.join(out, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        self.assertEqual(len(tok["model"]["vocab"]), 49408)
        self.assertEqual(tok["padding"]["pad_id"], 0)
        self.assertEqual(tok["padding"]["strategy"], {"Fixed": 77})
        self.assertEqual(sorted(os.listdir(out)).count("tokenizer.json"), 1)

    def test_default_fp16_fuses_attention_within_tolerance(self):
        """The default export (float16 + onnxruntime's transformer optimiser) of a real-architecture
        SVD UNet (diffusers' class, tiny widths): attention is fused, and onnxruntime on the CPU
        matches the float32 torch module within the float16 tolerance; --no-optimize fuses nothing."""
        try:
            from tools.export.archs import svd_unet
        except ImportError as e:
            self.skipTest(f"diffusers is not installed ({e})")
        import onnxruntime as ort

        from tools.export.bundle import TOLERANCE_FP16

        parts = S.svd_parts()
        parts.unet = svd_unet(4, tiny=True)[0].unet
        out = os.path.join(self.tmp, "svd-real-arch")
        args = cli.parser("svd").parse_args(["--ckpt", "stand-in-svd", "--out", out, "--height", "64", "--width", "64"])
        m = cli.export_svd(parts, args, **QUIET)
        self.assertEqual(m["id"], "svd-64x64-fp16")
        model = onnx.load(os.path.join(out, "unet.onnx"))
        ops = [n.op_type for n in model.graph.node if n.domain == "com.microsoft"]
        self.assertGreater(ops.count("MultiHeadAttention") + ops.count("Attention"), 0, ops)
        with open(os.path.join(out, "parity", "index.json"), encoding="utf-8") as f:
            p = json.load(f)["components"]["unet"]
        self.assertTrue(p["fp16"])
        feeds = {t["name"]: np.load(os.path.join(out, "parity", t["file"])) for t in p["inputs"]}
        want = np.load(os.path.join(out, "parity", p["outputs"][0]["file"]))
        got = ort.InferenceSession(os.path.join(out, "unet.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        self.assertLessEqual(float(np.abs(got - want).max() / np.abs(want).max()), TOLERANCE_FP16)

    def test_wrapper_output_count_is_checked(self):
        parts = S.vp_parts("videocrafter", VOCAB)

        class TwoOutputs(torch.nn.Module):
            def __init__(self, unet):
                super().__init__()
                self.unet = unet

            def forward(self, x, timesteps, context=None, fps=None):
                y = self.unet(x, timesteps, context=context, fps=fps)
                return y, y

        parts.unet = TwoOutputs(parts.unet)
        with self.assertRaisesRegex(ContractError, "returns 2 tensors"):
            cli.export_vp("videocrafter", parts, self.args("videocrafter"), **QUIET)

    def test_defaults_overrides_and_no_analytic_init(self):
        geom = Geometry(320, 512, 16)
        m = vp_manifest("dynamicrafter", S.dynamicrafter_params(16, 320), geom, model_id="dc", cil=True, source="x",
                        analytic_init=False, overrides=parse_default_overrides(["guidanceScale=5", "imageGuidanceScale=7.5"]))
        self.assertEqual(m["defaults"], {"steps": 50, "start": 1000, "analyticInit": False, "guidanceScale": 5, "guidanceRescale": 0.7, "eta": 1, "frameStride": 24, "fps": 8, "imageGuidanceScale": 7.5})
        m = vp_manifest("videocrafter", S.videocrafter_params(16, 320), geom, model_id="vc", cil=False, source="x", statistics="vc-stats")
        self.assertEqual(m["defaults"]["statistics"], "vc-stats")
        with self.assertRaisesRegex(ContractError, "linear"):
            vp_manifest("videocrafter", dict(S.videocrafter_params(), beta_schedule="cosine"), geom, model_id="vc", cil=False, source="x")

    def test_lvdm_state_dict_layouts(self):
        sd = {"model.diffusion_model.w": torch.ones(2), "first_stage_model.b": torch.zeros(1)}
        for name, payload in [
            ("lightning", {"state_dict": sd, "epoch": 3}),
            ("deepspeed", {"module": {f"_forward_module.{k}": v for k, v in sd.items()}}),
            ("plain", sd),
        ]:
            path = os.path.join(self.tmp, f"{name}.ckpt")
            torch.save(payload, path)
            got = lvdm_state_dict(path)
            self.assertEqual(sorted(got), sorted(sd), name)
        with self.assertRaisesRegex(LoadError, "no such file"):
            lvdm_state_dict(os.path.join(self.tmp, "missing.ckpt"))

    def test_cil_svd_unet_checkpoint_with_ema(self):
        torch.manual_seed(0)
        unet = S.TinySvdUNet()
        raw = {k: torch.randn_like(v) for k, v in unet.state_dict().items()}
        shadow = [torch.full_like(p, 0.5).half() for p in unet.parameters()]  # the CIL run trained in float16
        path = os.path.join(self.tmp, "checkpoint-step-20000.ckpt")
        torch.save({"state_dict": raw, "ema_state": {"decay": 0.999, "shadow_params": shadow}}, path)
        load_cil_unet_weights(unet, path, use_ema=False)
        torch.testing.assert_close(unet.state_dict()["conv_in.weight"], raw["conv_in.weight"])
        load_cil_unet_weights(unet, path, use_ema=True)
        for p in unet.parameters():
            self.assertTrue(torch.all(p == 0.5))
            self.assertEqual(p.dtype, torch.float32)

    def test_load_lvdm_from_a_checkout(self):
        """loaders.load_lvdm against a fake model checkout: config → the checkout's
        instantiate_from_config → checkpoint (with DynamiCrafter's 256-model key rename) → parts,
        with gradient checkpointing and xformers switched off before construction."""
        # The fine-tuning tests' stand-in checkout (its instantiate_from_config and omegaconf shim),
        # with a model that records what construction saw.
        repo = os.path.join(self.tmp, "DynamiCrafter")
        shutil.copytree(FAKE_CHECKOUT, repo)
        files = {
            "lvdm/modules/attention.py": "XFORMERS_IS_AVAILBLE = True\n",
            "lvdm/models.py": """
                import torch
                from lvdm.modules import attention
                from tools.export.tests import standins as S

                class LatentVisualDiffusion(torch.nn.Module):
                    def __init__(self, unet_config, vocab=19, **params):
                        super().__init__()
                        m = S.lvdm_model("dynamicrafter", vocab, unet_config["params"]["temporal_length"])
                        self.model = torch.nn.Module()
                        self.model.diffusion_model = m.model.diffusion_model
                        # what construction saw: xformers and gradient checkpointing must be off
                        self.model.diffusion_model.saw = (attention.XFORMERS_IS_AVAILBLE, unet_config["params"]["use_checkpoint"])
                        self.model.diffusion_model.fps_embedding = torch.nn.Linear(2, 2)
                        self.first_stage_model = m.first_stage_model
                        self.cond_stage_model = m.cond_stage_model
                        self.embedder = m.embedder
                        self.image_proj_model = m.image_proj_model
            """,
        }
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(repo, rel)), exist_ok=True)
            with open(os.path.join(repo, rel), "w", encoding="utf-8") as f:
                f.write(textwrap.dedent(text))
        params = dict(S.dynamicrafter_params(), vocab=VOCAB)
        params["unet_config"]["params"]["use_checkpoint"] = True
        config = os.path.join(self.tmp, "inference_512_v1.0.yaml")
        with open(config, "w", encoding="utf-8") as f:
            json.dump({"model": {"target": "lvdm.models.LatentVisualDiffusion", "params": params}}, f)
        saved = list(sys.path)
        try:
            sys.path.insert(0, repo)
            from lvdm.models import LatentVisualDiffusion

            ref = LatentVisualDiffusion(unet_config={"params": {"temporal_length": 4, "use_checkpoint": False}}, vocab=VOCAB)
            with torch.no_grad():
                for p in ref.parameters():
                    p.fill_(0.25)
            sd = {k.replace("fps_embedding", "framestride_embed"): v for k, v in ref.state_dict().items()}
            ckpt = os.path.join(self.tmp, "model.ckpt")
            torch.save({"state_dict": sd, "global_step": 1}, ckpt)
            parts = load_lvdm(repo, ckpt, config, "cpu")
            self.assertEqual(parts.unet.saw, (False, False))
            # the pieces carry the checkpoint's weights (framestride_embed renamed to fps_embedding)
            for piece in (parts.unet, parts.vae, parts.text, parts.image_embedder, parts.image_proj):
                self.assertTrue(all(torch.all(p == 0.25) for p in piece.parameters()))
            self.assertEqual(parts.params["unet_config"]["params"]["use_checkpoint"], False)
            with self.assertRaisesRegex(LoadError, "does not fit"):
                torch.save({"state_dict": {"nope": torch.ones(1)}}, ckpt)
                load_lvdm(repo, ckpt, config, "cpu")
        finally:
            sys.path[:] = saved
            for name in [n for n in sys.modules if n in ("lvdm", "utils", "omegaconf") or n.startswith(("lvdm.", "utils."))]:
                del sys.modules[name]

    def test_parts_from_lvdm_needs_an_i2v_model(self):
        model = S.lvdm_model("videocrafter", VOCAB)
        del model.embedder
        with self.assertRaisesRegex(LoadError, "embedder"):
            parts_from_lvdm(model, {})


if __name__ == "__main__":
    unittest.main()
