"""The AWS Batch steps (tools/finetune/batch.py) end to end over a fake S3: `train` (the launcher
spawning the loop), `export` (tools/export → models/_staging/<run>/), `publish` (→ models/<id>/ and
statistics/<id>.safetensors) — the chain the CDK workflow runs — plus the spec checks and the node
layout of multi-node jobs. With CIL_FINETUNE_TEST_OUT, the published DynamiCrafter stand-in bundle
is copied to <dir>/bundles/dynamicrafter-finetuned for test/timenoise.test.ts (the worker samples it).
"""

import contextlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import unittest

from tools.finetune import batch
from tools.finetune.tests.helpers import FAKE_CHECKOUT, FakeS3, out_dir, write_lvdm_inputs

BUCKET = "cil-data-test"
RUN = "ft-run-1"


def base_spec(**over):
    spec = {
        "bucket": BUCKET, "runId": RUN, "modelId": "dc-tiny-cil", "family": "dynamicrafter",
        "code": "finetune/inputs/code/dc.tar.gz", "checkpoint": "finetune/inputs/ckpt/base.ckpt",
        "trainConfig": "finetune/inputs/configs/train.json", "inferenceConfig": "finetune/inputs/configs/inference.json",
        "tokenizer": "finetune/inputs/tokenizer.json",
        "train": {"steps": 2, "batchSize": 2, "checkpointEvery": 1, "seed": 1, "extraArgs": ["--num-workers", "0"]},
        "export": {"fp16": False},
        "statistics": {"videosPrefix": "statistics/datasets/tiny/", "shards": 2},
    }
    spec.update(over)
    return spec


def quiet_main(step, spec, scratch):
    env = dict(os.environ)
    env[batch.SPEC_ENV] = json.dumps(spec)
    env["PYTHONPATH"] = os.getcwd()
    env["PYTHONWARNINGS"] = "ignore"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = batch.main([step, "--scratch", scratch], env=env)
    return code, out.getvalue(), err.getvalue()


class Spec(unittest.TestCase):
    def test_a_valid_spec(self):
        s = batch.parse_spec(json.dumps(base_spec()))
        self.assertEqual(s["export"], {"fp16": False, "extraArgs": []})
        self.assertEqual(batch.statistics_id(s), "dc-tiny-cil")
        self.assertEqual(batch.locations(s)["stagingModel"], f"models/_staging/{RUN}/")
        self.assertEqual(batch.locations(s)["stagingStatistics"], f"statistics/_staging/{RUN}.safetensors")
        reuse = batch.parse_spec(base_spec(statistics=None, statisticsId="dynamicrafter-320x512"))
        self.assertEqual(batch.statistics_id(reuse), "dynamicrafter-320x512")
        self.assertIsNone(batch.statistics_id(batch.parse_spec(base_spec(statistics=None))))

    def test_export_precision_is_explicit(self):
        # float16 (with the transformer optimiser) is the exporter's default: fp16 false must ask
        # for float32, not fall through to the default.
        local = {"bundle": "b", "code": "c", "weights": "w", "inferenceConfig": "i", "tokenizer": "t"}
        fp32 = batch.export_argv(batch.parse_spec(json.dumps(base_spec())), local)
        fp16 = batch.export_argv(batch.parse_spec(json.dumps(base_spec(export={"fp16": True}))), local)
        self.assertIn("--fp32", fp32)
        self.assertNotIn("--fp16", fp32)
        self.assertIn("--fp16", fp16)
        self.assertNotIn("--fp32", fp16)

    def test_bad_fields_are_named(self):
        bad = [
            ({"modelId": "_staging"}, "modelId"),
            ({"modelId": "Has Caps"}, "modelId"),
            ({"family": "sora"}, "family"),
            ({"code": "models/other/x.tar.gz"}, "code: .* must be under finetune/inputs/"),
            ({"code": "finetune/inputs/../models/x"}, "code: must be an S3 key"),
            ({"checkpoint": "finetune/inputs/ckpt/"}, "checkpoint: .* object key"),
            ({"data": "finetune/inputs/data"}, "data: .* prefix ending"),
            ({"train": {"steps": 0}}, "train.steps"),
            ({"train": {"steps": 5, "lr2": 1}}, "unknown field"),
            ({"train": {"steps": 5, "extraArgs": "--x"}}, "train.extraArgs"),
            ({"statistics": {"videosPrefix": "inputs/x/", "shards": 4}}, "videosPrefix"),
            ({"statistics": {"videosPrefix": "statistics/datasets/x/", "shards": 1}}, "statistics.shards"),
            ({"statisticsId": "x"}, "give one"),
            ({"runId": "a/b"}, "runId"),
            ({"bucket": "B"}, "bucket"),
        ]
        for over, msg in bad:
            with self.assertRaisesRegex(batch.SpecError, msg, msg=json.dumps(over)):
                batch.parse_spec(base_spec(**over))
        with self.assertRaisesRegex(batch.SpecError, "train.dataset"):
            batch.parse_spec(base_spec(family="svd", checkpoint="finetune/inputs/svd/", code=None))
        with self.assertRaisesRegex(batch.SpecError, "not JSON"):
            batch.parse_spec("{")
        scratch = tempfile.mkdtemp(prefix="cil-finetune-spec-")
        try:
            code, _, err = quiet_main("train", {"bucket": BUCKET}, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.assertEqual(code, batch.EXIT_REFUSED)
        self.assertIn("train refused: runId", err)

    def test_multi_node_layout_gives_every_process_a_unique_contiguous_rank(self):
        for main in (0, 2):
            ranks, masters = [], set()
            for index in range(3):
                env = {"AWS_BATCH_JOB_NUM_NODES": "3", "AWS_BATCH_JOB_NODE_INDEX": str(index), "AWS_BATCH_JOB_MAIN_NODE_INDEX": str(main), "CIL_MAIN_ADDR": "10.0.0.5"}
                if index != main:
                    env["AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"] = "10.0.0.5"
                layout = batch.node_layout(env, gpus=8)
                envs = batch.process_envs(layout, {})
                self.assertEqual(len(envs), 8)
                ranks += [int(e["RANK"]) for e in envs]
                masters |= {(e["MASTER_ADDR"], e["MASTER_PORT"], e["WORLD_SIZE"]) for e in envs}
                if index == main:
                    self.assertEqual([e["RANK"] for e in envs[:2]], ["0", "1"], "the main node holds rank 0 (the store)")
            self.assertEqual(sorted(ranks), list(range(24)))
            self.assertEqual(masters, {("10.0.0.5", "29500", "24")})
        with self.assertRaisesRegex(batch.SpecError, "MAIN_NODE_PRIVATE"):
            batch.node_layout({"AWS_BATCH_JOB_NUM_NODES": "2", "AWS_BATCH_JOB_NODE_INDEX": "1"}, 8)
        single = batch.process_envs(batch.node_layout({}, 0), {"X": "1"})
        self.assertEqual(single, [{"X": "1", "MASTER_ADDR": single[0]["MASTER_ADDR"], "MASTER_PORT": "29500"}])

    def test_code_archives_cannot_escape_their_folder(self):
        tmp = tempfile.mkdtemp()
        try:
            evil = os.path.join(tmp, "evil.tar.gz")
            with tarfile.open(evil, "w:gz") as tar:
                info = tarfile.TarInfo("../outside.py")
                data = b"x = 1\n"
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            with self.assertRaisesRegex(batch.SpecError, "outside"):
                batch.safe_extract(evil, os.path.join(tmp, "code"))
            self.assertFalse(os.path.exists(os.path.join(tmp, "outside.py")))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Chain(unittest.TestCase):
    """train → export → (the statistics workflow, simulated) → publish, as the state machine runs them."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="cil-finetune-batch-")
        cls.s3 = FakeS3()
        files = write_lvdm_inputs(os.path.join(cls.tmp, "inputs"))
        spec = base_spec()
        archive = os.path.join(cls.tmp, "dc.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:  # as `git archive --prefix=DynamiCrafter/` makes it
            tar.add(FAKE_CHECKOUT, arcname="DynamiCrafter", filter=lambda i: None if "__pycache__" in i.name else i)
        for field, local in (("code", archive), ("checkpoint", files["ckpt"]), ("trainConfig", files["train"]),
                             ("inferenceConfig", files["inference"]), ("tokenizer", files["tokenizer"])):
            cls.s3.put(BUCKET, spec[field], local)
        cls.spec = spec
        cls.results = {}
        with cls.s3:  # CIL_AWS_CLI → the fake `aws` for this process and the ones it starts
            cls.results["train"] = quiet_main("train", spec, os.path.join(cls.tmp, "node0"))
            cls.results["export"] = quiet_main("export", spec, os.path.join(cls.tmp, "export"))
            # The statistics workflow writes statistics/<output>.safetensors for output "_staging/<run>".
            stats = os.path.join(cls.tmp, "stats.safetensors")
            with open(stats, "wb") as f:
                f.write(b"stand-in statistics")
            cls.s3.put(BUCKET, f"statistics/_staging/{RUN}.safetensors", stats)
            cls.results["publish"] = quiet_main("publish", spec, os.path.join(cls.tmp, "publish"))
            cls.results["republish"] = quiet_main("publish", spec, os.path.join(cls.tmp, "publish2"))
        d = out_dir()
        if d and cls.results["publish"][0] == 0:
            dest = os.path.join(d, "bundles", "dynamicrafter-finetuned")
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(cls.s3.path(BUCKET, "models/dc-tiny-cil"), dest)

    @classmethod
    def tearDownClass(cls):
        cls.s3.cleanup()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def object(self, key):
        return self.s3.path(BUCKET, key)

    def test_train_writes_checkpoints_and_the_export_to_the_run_prefix(self):
        code, out, err = self.results["train"]
        self.assertEqual(code, 0, err[-3000:])
        run = f"finetune/runs/{RUN}/"
        for key in ("latest.json", "checkpoints/step-000000002.pt", "export/model.ckpt", "cil-finetune.json"):
            self.assertTrue(os.path.isfile(self.object(run + key)), key)
        with open(self.object(run + "cil-finetune.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f)["steps"], 2)

    def test_export_stages_a_cil_bundle_with_its_parity_data_apart(self):
        code, out, err = self.results["export"]
        self.assertEqual(code, 0, err[-3000:])
        # publish removed the staging copy; the published one is the same files.
        with open(self.object("models/dc-tiny-cil/manifest.json"), encoding="utf-8") as f:
            m = json.load(f)
        self.assertEqual((m["id"], m["family"], m["cil"]), ("dc-tiny-cil", "dynamicrafter", True))
        self.assertEqual(m["defaults"]["statistics"], "dc-tiny-cil")
        self.assertEqual(m["defaults"]["start"], 1000, "DynamiCrafter-CIL starts at M = 1000")
        self.assertTrue(os.path.isfile(self.object(f"finetune/runs/{RUN}/parity/index.json")))
        self.assertFalse(os.path.exists(self.object("models/dc-tiny-cil/parity")), "parity data stays out of models/")
        uploads = [c for c in self.s3.calls() if c[:2] in (["s3", "sync"], ["s3", "cp"]) and "_staging/" + RUN in c[-1] if c]
        self.assertTrue(uploads[-1][-1].endswith("manifest.json"), "manifest.json is uploaded last")

    def test_publish_copies_bundle_and_statistics_under_the_model_id(self):
        code, out, err = self.results["publish"]
        self.assertEqual(code, 0, err[-3000:])
        for comp in ("unet", "vae_encoder", "vae_decoder", "text_encoder", "image_encoder"):
            self.assertTrue(os.path.isfile(self.object(f"models/dc-tiny-cil/{comp}.onnx")), comp)
        with open(self.object("statistics/dc-tiny-cil.safetensors"), "rb") as f:
            self.assertEqual(f.read(), b"stand-in statistics")
        with open(self.object(f"finetune/runs/{RUN}/published.json"), encoding="utf-8") as f:
            rec = json.load(f)
        self.assertEqual((rec["modelId"], rec["bundle"], rec["statistics"]), ("dc-tiny-cil", "models/dc-tiny-cil/", "statistics/dc-tiny-cil.safetensors"))
        self.assertFalse(os.path.exists(self.object(f"models/_staging/{RUN}")), "staging removed")
        self.assertFalse(os.path.exists(self.object(f"statistics/_staging/{RUN}.safetensors")))
        # Order: statistics, then the bundle's files, then its manifest.
        dests = [c[-1] if c[-2] != "--exclude" else c[-3] for c in self.s3.calls() if c[:2] == ["s3", "cp"] and "/models/dc-tiny-cil/" in " ".join(c) or (c[:2] == ["s3", "cp"] and c[-1].endswith("statistics/dc-tiny-cil.safetensors"))]
        self.assertEqual(len(dests), 3)
        self.assertTrue(dests[0].endswith("statistics/dc-tiny-cil.safetensors"))
        self.assertTrue(dests[2].endswith("models/dc-tiny-cil/manifest.json"))

    def test_publishing_over_an_existing_model_id_is_refused(self):
        code, out, err = self.results["republish"]
        self.assertEqual(code, batch.EXIT_REFUSED)
        self.assertIn("already published", err)


if __name__ == "__main__":
    unittest.main()
