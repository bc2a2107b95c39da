"""The fine-tuning loop (tools/finetune/train.py) on tiny stand-ins, on CPU: a few steps write a
checkpoint and the export weights; a resumed run continues the step count and ends bit-for-bit where
an uninterrupted one does; two processes train with DDP (gloo); S3 through a fake `aws`; the SVD
recipe with EMA; refusals exit 3. With CIL_FINETUNE_TEST_OUT, the fine-tuned SVD stand-in is exported
(tools/export, --cil) to <dir>/bundles/svd-finetuned for test/timenoise.test.ts.
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import warnings

import torch

from tools.export import cli as export_cli
from tools.export.loaders import load_cil_unet_weights
from tools.export.tests import standins as S
from tools.finetune import batch, train
from tools.finetune.storage import CheckpointStore
from tools.finetune.tests.helpers import FAKE_CHECKOUT, FakeS3, out_dir, write_lvdm_inputs

QUIET = ["--num-workers", "0", "--log-every", "1"]


def run(argv):
    """train.main in this process; returns (exit code, JSON log events)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = train.main(argv + QUIET)
    events = [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]
    return code, events


def lvdm_argv(files, out, steps, *extra):
    return ["--recipe", "lvdm", "--repo", FAKE_CHECKOUT, "--config", files["train"], "--ckpt", files["ckpt"],
            "--out", out, "--steps", str(steps), "--batch-size", "2", "--seed", "3", *extra]


def svd_argv(out, steps, *extra):
    return ["--recipe", "svd", "--parts", "tools.export.tests.standins:svd_parts", "--dataset", "tools.finetune.tests.data:TinyClips",
            "--dataset-args", '{"count": 6}', "--out", out, "--steps", str(steps), "--batch-size", "2", *extra]


def weights(path):
    return torch.load(path, map_location="cpu")


class Loop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        warnings.filterwarnings("ignore", category=UserWarning)
        cls.tmp = tempfile.mkdtemp(prefix="cil-finetune-test-")
        cls.files = write_lvdm_inputs(os.path.join(cls.tmp, "inputs"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_steps_write_checkpoints_and_the_export(self):
        out = os.path.join(self.tmp, "run-a")
        code, events = run(lvdm_argv(self.files, out, 3, "--checkpoint-every", "2", "--keep-checkpoints", "1"))
        self.assertEqual(code, 0)
        self.assertEqual([e["step"] for e in events if e["event"] == "checkpoint"], [2, 3])
        with open(os.path.join(out, "latest.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"step": 3, "file": "checkpoints/step-000000003.pt"})
        self.assertEqual(os.listdir(os.path.join(out, "checkpoints")), ["step-000000003.pt"], "--keep-checkpoints 1 prunes the older one")
        state = weights(os.path.join(out, "checkpoints", "step-000000003.pt"))
        self.assertEqual(state["step"], 3)
        self.assertEqual(state["timenoise"]["beta_m"], 100.0)
        with open(os.path.join(out, "cil-finetune.json"), encoding="utf-8") as f:
            summary = json.load(f)
        self.assertEqual((summary["format"], summary["family"], summary["steps"], summary["export"]), ("cil-finetune/1", "dynamicrafter", 3, "export/model.ckpt"))
        # The UNet and the image projection moved; the frozen VAE and encoders did not.
        base = weights(self.files["ckpt"])["state_dict"]
        tuned = weights(os.path.join(out, "export", "model.ckpt"))["state_dict"]
        self.assertEqual(sorted(base), sorted(tuned))
        moved = lambda prefix: any(not torch.equal(base[k], tuned[k]) for k in base if k.startswith(prefix))  # noqa: E731
        self.assertTrue(moved("model.diffusion_model."))
        self.assertTrue(moved("image_proj_model."))
        for frozen in ("first_stage_model.", "cond_stage_model.", "embedder."):
            self.assertFalse(moved(frozen), frozen)

    def test_resume_continues_the_step_count_and_matches_an_uninterrupted_run(self):
        straight, split = os.path.join(self.tmp, "straight"), os.path.join(self.tmp, "split")
        self.assertEqual(run(lvdm_argv(self.files, straight, 4, "--checkpoint-every", "10"))[0], 0)
        code, first = run(lvdm_argv(self.files, split, 2))
        self.assertEqual(code, 0)
        code, second = run(lvdm_argv(self.files, split, 4))
        self.assertEqual(code, 0)
        self.assertEqual([e["step"] for e in second if e["event"] == "resume"], [2])
        self.assertEqual([e["step"] for e in second if e["event"] == "step"], [3, 4], "only the remaining steps run")
        a = weights(os.path.join(straight, "export", "model.ckpt"))["state_dict"]
        b = weights(os.path.join(split, "export", "model.ckpt"))["state_dict"]
        for k in a:
            self.assertTrue(torch.equal(a[k], b[k]), f"{k}: resumed run differs from the uninterrupted one")
        # --restart ignores the checkpoints.
        code, again = run(lvdm_argv(self.files, split, 1, "--restart"))
        self.assertEqual((code, [e for e in again if e["event"] == "resume"]), (0, []))

    def test_checkpoints_to_s3_and_resumes_from_s3(self):
        with FakeS3() as s3:
            out = "s3://cil-test-bucket/finetune/runs/r1/"
            self.assertEqual(run(lvdm_argv(self.files, out, 2, "--work-dir", os.path.join(self.tmp, "w1")))[0], 0)
            self.assertTrue(os.path.isfile(s3.path("cil-test-bucket", "finetune/runs/r1/checkpoints/step-000000002.pt")))
            self.assertTrue(os.path.isfile(s3.path("cil-test-bucket", "finetune/runs/r1/export/model.ckpt")))
            code, events = run(lvdm_argv(self.files, out, 3, "--work-dir", os.path.join(self.tmp, "w2"), "--keep-checkpoints", "1"))
            self.assertEqual(code, 0)
            self.assertEqual([e["step"] for e in events if e["event"] in ("resume", "step")], [2, 3])
            with open(s3.path("cil-test-bucket", "finetune/runs/r1/latest.json"), encoding="utf-8") as f:
                self.assertEqual(json.load(f)["step"], 3)
            self.assertEqual(os.listdir(s3.path("cil-test-bucket", "finetune/runs/r1/checkpoints")), ["step-000000003.pt"], "the resumed-from checkpoint is pruned too")
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "w2")), "the resume download is removed, then the emptied staging folder")
            # latest.json is written after the checkpoint it names.
            cps = [c for c in s3.calls() if c[:2] == ["s3", "cp"] and c[-1].endswith(("step-000000003.pt", "latest.json"))]
            self.assertEqual([c[-1].rsplit("/", 1)[1] for c in cps][-2:], ["step-000000003.pt", "latest.json"])
            s3.cleanup()

    def test_runs_leave_nothing_in_the_temp_folder(self):
        # Regression: the launcher's staging folders (cil-finetune-*) were left behind, one per run.
        tmpdir = tempfile.mkdtemp(prefix="cil-finetune-tmpdir-", dir=self.tmp)
        saved = tempfile.tempdir
        tempfile.tempdir = tmpdir
        try:
            with FakeS3() as s3:
                out = "s3://cil-test-bucket/finetune/runs/clean/"
                self.assertEqual(run(lvdm_argv(self.files, out, 1))[0], 0)
                s3.cleanup()
            local = os.path.join(self.tmp, "clean-local")
            self.assertEqual(run(lvdm_argv(self.files, local, 1))[0], 0)
            store = CheckpointStore("s3://cil-test-bucket/x/")
            self.assertTrue(os.path.isdir(store.work_dir))
            store.close()
        finally:
            tempfile.tempdir = saved
        self.assertEqual(os.listdir(tmpdir), [], "nothing left in the temp folder")
        self.assertEqual(sorted(os.listdir(local)), ["checkpoints", "cil-finetune.json", "export", "latest.json"], "no staging folder left in --out")

    def test_store_without_checkpoint_and_without_the_cli(self):
        store = CheckpointStore(os.path.join(self.tmp, "empty"))
        self.assertIsNone(store.load_latest())
        saved = os.environ.pop("CIL_AWS_CLI", None)
        path = os.environ.get("PATH", "")
        os.environ["PATH"] = ""
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                code, _ = run(lvdm_argv(self.files, "s3://cil-test-bucket/x/", 1))
        finally:
            os.environ["PATH"] = path
            if saved is not None:
                os.environ["CIL_AWS_CLI"] = saved
        self.assertEqual(code, 3, "no AWS CLI for an s3:// --out: refused before training")
        self.assertIn("the AWS CLI is not installed", err.getvalue())

    def test_two_processes_train_with_ddp(self):
        out = os.path.join(self.tmp, "ddp")
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
        layout = {"node": 0, "nodes": 1, "procs": 2, "addr": "127.0.0.1"}
        argv = svd_argv(out, 2, "--num-workers", "0", "--log-every", "1", "--device", "cpu")
        code = batch.spawn_workers(argv, batch.process_envs(layout, env, port=29517), stdout=subprocess.DEVNULL)
        self.assertEqual(code, 0)
        state = weights(os.path.join(out, "checkpoints", "step-000000002.pt"))
        self.assertEqual(state["world_size"], 2)
        self.assertEqual(len(state["rng"]), 2, "every rank's RNG state is in the checkpoint")
        self.assertFalse(torch.equal(state["rng"][0]["timenoise"], state["rng"][1]["timenoise"]), "ranks draw different noise")
        with open(os.path.join(out, "cil-finetune.json"), encoding="utf-8") as f:
            summary = json.load(f)
        self.assertEqual((summary["worldSize"], summary["batchSize"]), (2, 4))

    def test_svd_recipe_with_ema_exports_a_cil_bundle(self):
        out = os.path.join(self.tmp, "svd")
        code, _ = run(svd_argv(out, 3, "--ema-decay", "0.5", "--lr", "1e-3"))
        self.assertEqual(code, 0)
        ck = weights(os.path.join(out, "export", "unet.ckpt"))
        self.assertEqual(sorted(ck), ["ema_state", "global_step", "state_dict"])
        self.assertEqual(ck["global_step"], 3)
        parts = S.svd_parts()
        self.assertEqual(len(ck["ema_state"]["shadow_params"]), len(list(parts.unet.parameters())))
        base = {k: v.clone() for k, v in parts.unet.state_dict().items()}
        load_cil_unet_weights(parts.unet, os.path.join(out, "export", "unet.ckpt"), use_ema=True)
        self.assertTrue(any(not torch.equal(base[k], v) for k, v in parts.unet.state_dict().items()), "the EMA weights moved")
        dest = os.path.join(out_dir() or self.tmp, "bundles", "svd-finetuned")
        args = export_cli.parser("svd").parse_args(["--ckpt", "stand-in-svd", "--unet-ckpt", os.path.join(out, "export", "unet.ckpt"), "--cil",
                                                    "--height", "64", "--width", "64", "--id", "svd-64x64-finetuned", "--out", dest, "--fp32"])
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        manifest = export_cli.export_svd(parts, args, log=lambda *a: None)
        self.assertTrue(manifest["cil"])
        self.assertEqual(manifest["defaults"]["start"], 100)

    def test_refusals_exit_3(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(run(["--recipe", "lvdm", "--out", os.path.join(self.tmp, "x"), "--steps", "1"])[0], 3)
            self.assertEqual(run(lvdm_argv(self.files, os.path.join(self.tmp, "y"), 1, "--beta-m", "-1"))[0], 3)
            self.assertEqual(run(["--recipe", "no.such.module:build", "--out", os.path.join(self.tmp, "z"), "--steps", "1"])[0], 3)
        text = err.getvalue()
        self.assertIn("--recipe lvdm needs --repo", text)
        self.assertIn("beta_m=-1", text)
        self.assertIn("cannot import", text)


if __name__ == "__main__":
    unittest.main()
