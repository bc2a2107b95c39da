"""Shared pieces of the fine-tuning tests: the stand-in checkout, its configs and base checkpoint,
a fake S3 behind a fake `aws`, and the output folder test/timenoise.test.ts reads."""

import json
import os
import shutil
import stat
import sys
import tempfile

import torch

from tools.export.tests import standins as S

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_CHECKOUT = os.path.join(HERE, "fake_checkout")
VOCAB = 2 + len(S.WORDS)
FRAMES = 4


def out_dir():
    """$CIL_FINETUNE_TEST_OUT (kept for the TypeScript side) or None."""
    d = os.environ.get("CIL_FINETUNE_TEST_OUT")
    if d:
        os.makedirs(d, exist_ok=True)
    return d


def model_config():
    return {"target": "lvdm.models.LatentVisualDiffusion", "params": dict(S.dynamicrafter_params(FRAMES, 64), vocab=VOCAB)}


def write_lvdm_inputs(folder, count=6):
    """train.json, inference.json, tokenizer.json and base.ckpt (the stand-in's initial weights)."""
    os.makedirs(folder, exist_ok=True)
    train = {"model": model_config(), "data": {"params": {"train": {"target": "lvdm.data.TinyVideos", "params": {"count": count, "frames": FRAMES, "vocab": VOCAB}}}}}
    files = {"train": os.path.join(folder, "train.json"), "inference": os.path.join(folder, "inference.json"),
             "tokenizer": os.path.join(folder, "tokenizer.json"), "ckpt": os.path.join(folder, "base.ckpt")}
    with open(files["train"], "w", encoding="utf-8") as f:
        json.dump(train, f)
    with open(files["inference"], "w", encoding="utf-8") as f:
        json.dump({"model": model_config()}, f)
    with open(files["tokenizer"], "w", encoding="utf-8") as f:
        json.dump(S.tokenizer_json(), f)
    with checkout_on_path():
        from lvdm.models import LatentVisualDiffusion

        base = LatentVisualDiffusion(**model_config()["params"])
    torch.save({"state_dict": base.state_dict(), "global_step": 0}, files["ckpt"])
    return files


class checkout_on_path:
    def __enter__(self):
        if FAKE_CHECKOUT not in sys.path:
            sys.path.insert(0, FAKE_CHECKOUT)

    def __exit__(self, *exc):
        return False


class FakeS3:
    """A temporary folder as S3, with an `aws` wrapper; `env()` points CIL_AWS_CLI at it."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="cil-fake-s3-")
        self.cli = os.path.join(self.root, "aws")
        with open(self.cli, "w", encoding="utf-8") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} {os.path.join(HERE, "fake_aws.py")} "$@"\n')
        os.chmod(self.cli, os.stat(self.cli).st_mode | stat.S_IXUSR)
        self._saved = {}

    def env(self):
        return {"CIL_AWS_CLI": self.cli, "FAKE_S3_ROOT": self.root}

    def __enter__(self):
        for k, v in self.env().items():
            self._saved[k] = os.environ.get(k)
            os.environ[k] = v
        return self

    def __exit__(self, *exc):
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        return False

    def path(self, bucket, key):
        return os.path.join(self.root, bucket, key)

    def put(self, bucket, key, local):
        dest = self.path(bucket, key)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(local, dest)

    def calls(self):
        p = os.path.join(self.root, "calls.log")
        if not os.path.isfile(p):
            return []
        with open(p, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)
