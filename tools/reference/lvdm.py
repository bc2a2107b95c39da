"""DynamiCrafter and VideoCrafter1 parity data: `prepare(out_dir, repo, family)` (the per-family
interface of the reference harness).

Builds the tiny random-weight checkpoint from the authors' classes (lvdm_build.py), runs the
authors' inference script on it with our noise (lvdm_reference.py), and writes what the driver needs
to export the checkpoint with our real loaders and compare `cil generate` with the reference:
ckpt/, input.png, stats.pt, settings.json, export.json and reference/{latent,x_init,frames,
frames_u8}.npy + info.json.

Settings are the CIL scripts' (inference_CIL_512.sh / inference_512.sh: η = 1, start M = 940 with
Analytic-Init, DynamiCrafter guidance 7.5 with rescale 0.7 and frame stride 24, VideoCrafter1
guidance 12 at fps 24) at 10 steps: 10 divides 940, so DynamiCrafter's `uniform_trailing` gives
exactly 10 timesteps (no spurious −1, docs/reference-differences.md §1) and VideoCrafter1's
`uniform` grid over M equals ours (§3).
"""

import json
import os
import sys
import time

import numpy as np
import torch

from . import lvdm_build as build
from . import lvdm_reference as ref
from .rng import NormalGenerator

SEED = 20240614
STEPS = 10
START = 940

_SETTINGS = {
    "dynamicrafter": {"guidanceScale": 7.5, "guidanceRescale": 0.7, "frameStride": 24, "fps": None},
    "videocrafter": {"guidanceScale": 12.0, "guidanceRescale": None, "frameStride": None, "fps": 24},
}
PROMPT = "a red ball rolling on grass"


def settings_for(family, prompt):
    s = {
        "family": family,
        "height": build.HEIGHT,
        "width": build.WIDTH,
        "frames": build.FAMILIES[family]["frames"],
        "seed": SEED,
        "prompt": prompt,
        "steps": STEPS,
        "start": START,
        "analyticInit": True,
        "eta": 1.0,
        "motionBucketId": None,
        "noiseAugStrength": None,
        "minGuidanceScale": None,
        "maxGuidanceScale": None,
        "imageGuidanceScale": None,
        "compat": "paper",
        "cil": False,
    }
    s.update(_SETTINGS[family])
    s["patches"] = ref.PATCHES["common"] + ref.PATCHES[family]
    return s


def prepare(out_dir, repo, family="dynamicrafter", log=print):
    if family not in build.FAMILIES:
        raise ValueError(f"family {family!r}: expected one of {', '.join(build.FAMILIES)}")
    t0 = time.time()
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, "reference"), exist_ok=True)
    frepo = build.family_repo(repo, family)
    ref.use_repo(frepo)
    model, paths = build.write_checkpoint(out_dir, repo, family, log=log)
    del model
    prompt = PROMPT

    img = build.input_image()
    build.write_png(os.path.join(out_dir, "input.png"), img)
    s = settings_for(family, prompt)
    torch.save(build.statistics(family, s["frames"]), os.path.join(out_dir, "stats.pt"))
    with open(os.path.join(out_dir, "settings.json"), "w", encoding="utf-8") as f:
        json.dump(s, f, indent=2)
    args = ["--repo", frepo, "--ckpt", paths["ckpt"], "--config", paths["config"], "--frames", str(s["frames"])]
    for p in paths["open_clip"]:
        args += ["--open-clip-config", p]
    # No --tokenizer-json: the exporter generates open_clip's tokenizer itself (its default path).
    with open(os.path.join(out_dir, "export.json"), "w", encoding="utf-8") as f:
        json.dump({"module": f"tools.export.{family}", "args": args}, f, indent=2)

    run = dict(s, _image=os.path.join(out_dir, "input.png"), _ckpt=paths["ckpt"], _config=paths["config"], _stats=os.path.join(out_dir, "stats.pt"))
    tap = ref.NoiseTap(SEED)
    cap = ref.run(family, frepo, os.path.join(out_dir, "reference", "work"), run, tap, log=log)
    latent_shape = [1, 4, s["frames"], s["height"] // 8, s["width"] // 8]
    expected = [latent_shape] * (1 + STEPS)
    if tap.calls != expected:
        raise RuntimeError(f"{family}: the reference drew normals {tap.calls}, expected x_T then one per step: {expected}")
    r = os.path.join(out_dir, "reference")
    np.save(os.path.join(r, "x_init.npy"), cap["x_T"].astype(np.float32).reshape(latent_shape))
    np.save(os.path.join(r, "latent.npy"), cap["latent"].astype(np.float32).reshape(latent_shape))
    np.save(os.path.join(r, "frames.npy"), cap["frames"].astype(np.float32))
    np.save(os.path.join(r, "frames_u8.npy"), cap["frames_u8"])
    info = {
        "family": family,
        "timesteps": cap["timesteps"],
        "noiseDraws": tap.calls,
        "latentShape": latent_shape,
        "framesShape": list(cap["frames"].shape),
        "frameRange": [float(cap["frames"].min()), float(cap["frames"].max())],
        "latentAbsMax": float(np.abs(cap["latent"]).max()),
        "referenceSeconds": round(cap["seconds"], 2),
        "totalSeconds": round(time.time() - t0, 2),
        "torch": torch.__version__,
        "postprocess": "their save function: clamp to [-1, 1], (x + 1) / 2 * 255, .to(uint8) (truncation); the worker rounds",
    }
    with open(os.path.join(r, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    log(f"{family}: reference done in {info['totalSeconds']} s (timesteps {cap['timesteps']})")
    return s


if __name__ == "__main__":
    fam = sys.argv[2] if len(sys.argv) > 2 else "dynamicrafter"
    prepare(sys.argv[1], os.environ.get("CIL_REFERENCE_REPO", "/tmp/cil-ref"), fam)
