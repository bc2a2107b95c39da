"""Training parity on the real classes (issue 20): one training step of the CIL authors' own code
against our launcher's recipe (tools/finetune/recipes.py) on the same tiny model, batch and noise.
This module: the training configs and DynamiCrafter / VideoCrafter1; SVD is training_svd.py, the
random-draw tap (below, "Noise") tap.py.

Models. DynamiCrafter and VideoCrafter1: the authors' *training* YAMLs (configs/train_512.yaml,
configs/train.yaml), widths shrunk exactly as the inference parity case (lvdm_build.shrunk_config),
instantiated by their `utils.utils.instantiate_from_config`, weights re-drawn from a seed. SVD:
diffusers' UNetSpatioTemporalConditionModel, temporal VAE and CLIP tower at tools/reference/svd.py's
tiny sizes, as the authors' train.py builds them (its UNet is their copy of diffusers 0.25's class;
both sides here use diffusers' own, see svd.py on why).

Sides.
  * theirs — DynamiCrafter: their LatentVisualDiffusion.shared_step(batch, random_uncond=True), whose
    TimeNoise is inside the model (DiffusionWrapper.forward: c_concat; get_batch_input: the image
    embedding, clip_type 1 = + β_s·z, clip_type 2 = 95 % replacement). VideoCrafter1: their
    ddpm3d_videocrafter_ve.LatentVisualDiffusion.shared_step (embedding + β_s·z, μ_max = 4). SVD:
    their EDMLossTimeNoise (svd/training/loss.py) on latents from their pixel2latent and the
    embedding from their encode_image, as their train.py calls it.
  * ours — the recipe our launcher builds (LvdmRecipe / SvdRecipe) and its loss(batch, timenoise)
    with our TimeNoise: DynamiCrafter on the same fork class, whose own TimeNoise the recipe switches
    off (recipes.disable_builtin_timenoise); VideoCrafter1 on the base class of the same checkout
    (lvdm.models.ddpm3d.LatentVisualDiffusion: identical but for the TimeNoise lines); SVD with the
    authors' settings (β_m 15, σ_data 1, fps 3, motion bucket 20, the noise as one scalar per video,
    no embedding treatment: their SVD code leaves the embedding alone).

Noise. Every random draw of either side — torch.randn / randn_like / rand / randint and Python's
random.random / randint — is routed by *role* (the timestep t, the diffusion noise, the VAE
posterior, the classifier-free coin, β_s's normal and z for the concat condition and for the
embedding, the replacement coin) to a stream of our generator's Python port (tools/reference/rng.py)
seeded per role. The two codes draw in different orders (ours corrupts inside apply_model, theirs
partly in get_batch_input), so a single stream would pair different draws; per role, the values
pair up as the maths does. A draw whose role is not known fails the run. Dropout (the DynamiCrafter
training UNet has 0.1) draws from torch's global generator, seeded the same on both sides.

Harness patches (recorded in the result's "patches"):
  * none for input mutation: their DiffusionWrapper writes the corrupted latent back into the
    caller's c_concat list, but within one shared_step nothing reuses that list;
  * VideoCrafter1's TimeNoise class cannot run as released: shared_step reads a module global `BS`
    that ddpm3d_videocrafter_ve.py never defines (ddpm3d.py defines BS = 1), and get_batch_input
    reads self.a / self.beta_m, which only its DiffusionWrapper has. The harness defines BS = 1 (the
    batch here is 1, as BS = 1 requires) and copies a, beta_m from the wrapper.
"""

import json
import os
import sys

import torch

from . import lvdm_build as build
from . import lvdm_reference as ref
from .tap import RoleTap, TapError, _err, capture_forward, tapped  # noqa: F401 (TapError: the harness's error)

SEED = 20240620
TRAIN_YAML = {"dynamicrafter": "configs/train_512.yaml", "videocrafter": "configs/train.yaml"}
VC_BASE_TARGET = "lvdm.models.ddpm3d.LatentVisualDiffusion"
TOY_DATASET = "tools.finetune.toyvideos.LvdmShapes"


# ------------------------------------------------------------------------------------- configs


def training_config(repo, family, clip_type=None, base=False, data_params=None):
    """The authors' training YAML, shrunk as the inference parity case; `base` (VideoCrafter1) swaps
    in the same checkout's class without TimeNoise; the dataset is our synthetic clips."""
    cfg, oc = build.shrunk_config(repo, family, yaml=TRAIN_YAML[family])
    m = cfg.model
    m.pop("pretrained_checkpoint", None)
    if family == "videocrafter" and base:
        m.target = VC_BASE_TARGET
        for k in ("a", "beta_m"):
            m.params.pop(k, None)
    if clip_type is not None:
        m.params.clip_type = clip_type
    f = build.FAMILIES[family]
    params = {"count": 8, "frames": f["frames"], "height": build.HEIGHT, "width": build.WIDTH, "seed": 0}
    params.update(data_params or {})
    cfg.data = {"target": "utils_data.DataModuleFromConfig", "params": {"batch_size": 1, "train": {"target": TOY_DATASET, "params": params}}}
    cfg.pop("lightning", None)
    return cfg, oc


def write_lvdm_training(out_dir, repo, family, clip_type=None, base=False, data_params=None, log=print):
    """ckpt/{train.yaml, inference.yaml, model.ckpt, <arch>.json}: the tiny checkpoint (the same
    weights for the fork and the base class: identical architectures) and both configs."""
    from omegaconf import OmegaConf

    frepo = build.family_repo(repo, family)
    ref.use_repo(frepo)
    ck = os.path.join(out_dir, "ckpt")
    os.makedirs(ck, exist_ok=True)
    cfg, oc = training_config(repo, family, clip_type=clip_type, base=base, data_params=data_params)
    oc_paths = []
    for tower, arch_cfg in oc.items():
        oc_paths.append(os.path.join(ck, f"{build.arch_name(family, tower)}.json"))
        with open(oc_paths[-1], "w", encoding="utf-8") as f:
            json.dump(arch_cfg, f, indent=2)
        build.register_open_clip(oc_paths[-1])
    paths = {"config": os.path.join(ck, "train.yaml"), "inference": os.path.join(ck, "inference.yaml"),
             "ckpt": os.path.join(ck, "model.ckpt"), "open_clip": oc_paths, "repo": frepo}
    OmegaConf.save(cfg, paths["config"])
    inf, _ = build.shrunk_config(repo, family)
    OmegaConf.save(inf, paths["inference"])
    model = build.build_model(repo, family, cfg)
    torch.save({"state_dict": model.state_dict()}, paths["ckpt"])
    log(f"{family}: tiny training model {type(model).__module__}.{type(model).__name__}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M values → {paths['ckpt']}")
    return model, paths


def lvdm_recipe_args(paths, **over):
    from tools.finetune.train import parser

    argv = ["--recipe", "lvdm", "--repo", paths["repo"], "--config", paths["config"], "--ckpt", paths["ckpt"],
            "--steps", "1", "--out", "unused"]
    for p in paths["open_clip"]:
        argv += ["--open-clip-config", p]
    args = parser().parse_args(argv)
    for k, v in over.items():
        setattr(args, k, v)
    return args


# ------------------------------------------------------------------------------------- lvdm


def lvdm_batch(family, batch_size, seed=SEED):
    from tools.finetune.toyvideos import LvdmShapes

    f = build.FAMILIES[family]
    ds = LvdmShapes(count=batch_size, frames=f["frames"], height=build.HEIGHT, width=build.WIDTH, seed=seed)
    return torch.utils.data.default_collate([ds[i] for i in range(batch_size)])


VC_PATCHES = [
    "ddpm3d_videocrafter_ve.BS = 1: its shared_step reads a module global BS that the module never defines (ddpm3d.py defines BS = 1)",
    "model.a, model.beta_m = model.model.a, model.model.beta_m: its get_batch_input reads them from the LatentVisualDiffusion, which never sets them (its DiffusionWrapper has them)",
]


def lvdm_parity(work, repo, family, mode, t, coin=None, batch_size=None, log=print):
    """One training step of theirs and ours on the tiny real model. mode: 'scaled' | 'replace'
    (DynamiCrafter's clip_type 1 | 2; VideoCrafter1 has 'scaled' only). Returns the errors of the
    corrupted c_concat and image tokens (the UNet's inputs), of the noisy latent, and the losses."""
    clip_type = {"scaled": 1, "replace": 2}[mode]
    if family == "videocrafter" and mode != "scaled":
        raise ValueError("VideoCrafter1's reference has only the scaled embedding treatment")
    bs = batch_size or (1 if family == "videocrafter" else 2)
    theirs_model, paths = write_lvdm_training(os.path.join(work, family), repo, family, clip_type=clip_type if family == "dynamicrafter" else None, log=log)
    from tools.export.loaders import open_clip_compat
    from tools.finetune.recipes import LvdmRecipe
    from tools.finetune.timenoise import TimeNoise

    patches = []
    if family == "videocrafter":
        mod = sys.modules[type(theirs_model).__module__]
        mod.BS = 1
        theirs_model.a, theirs_model.beta_m = theirs_model.model.a, theirs_model.model.beta_m
        patches += VC_PATCHES
        # Ours: the base class of the same checkout, the same weights.
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(paths["config"])
        cfg.model.target = VC_BASE_TARGET
        for k in ("a", "beta_m"):
            cfg.model.params.pop(k, None)
        paths = dict(paths, config=os.path.join(os.path.dirname(paths["config"]), "train-base.yaml"))
        OmegaConf.save(cfg, paths["config"])
    open_clip_compat(theirs_model)
    theirs_model.train()
    args = lvdm_recipe_args(paths, image_embedding=mode, mu_max=4.0 if family == "videocrafter" else 1.0)
    recipe = LvdmRecipe(args, torch.device("cpu"))
    recipe.model.train()
    batch = lvdm_batch(family, bs)
    coins = {"emb.coin": coin} if coin is not None else {}
    tn = TimeNoise(a=5, beta_m=100, image_embedding=mode, mu_max=args.mu_max)

    out = {}
    for side, model in (("theirs", theirs_model), ("ours", recipe.model)):
        seen = []
        tap = RoleTap(SEED, t, coins=coins, side=side)
        torch.manual_seed(SEED)  # dropout's masks: the global generator, the same on both sides
        with capture_forward(model.model.diffusion_model, seen), tapped(tap):
            if side == "theirs":
                loss = model.shared_step(batch, random_uncond=True)[0]
            else:
                loss = recipe.loss(batch, tn)
        (x, *_), kw = seen[0]
        out[side] = {"x": x, "context": kw["context"], "loss": loss, "log": tap.log}
    a, b = out["theirs"], out["ours"]
    lat = 4
    res = {
        "family": family, "mode": mode, "t": list(t), "batch": bs, "coin": coin,
        "class": {"theirs": f"{type(theirs_model).__module__}.{type(theirs_model).__name__}", "ours": f"{type(recipe.model).__module__}.{type(recipe.model).__name__}"},
        "noisyLatent": _err(a["x"][:, :lat], b["x"][:, :lat]),
        "imageTokens": _err(a["context"][:, 77:], b["context"][:, 77:]),
        "textTokens": _err(a["context"][:, :77], b["context"][:, :77]),
        "loss": {"theirs": float(a["loss"]), "ours": float(b["loss"]), "rel": abs(float(a["loss"]) - float(b["loss"])) / abs(float(a["loss"]))},
        "roles": {"theirs": sorted({r for r, _, _ in a["log"]}), "ours": sorted({r for r, _, _ in b["log"]})},
        "recipeNotes": recipe.notes, "patches": patches,
    }
    if family == "dynamicrafter":
        res["cConcat"] = _err(a["x"][:, lat:], b["x"][:, lat:])
        # What the corruption did (a non-vacuous comparison): its size next to the clean latent.
        res["cConcatCorruption"] = float((a["x"][:, lat:] - a["x"][:, lat:][:, :, :1]).abs().max())
    return res


def main(argv=None):
    import argparse
    import tempfile

    from .training_svd import svd_parity

    p = argparse.ArgumentParser(prog="python -m tools.reference.training", description="Training parity (TimeNoise corruption and loss) against the authors' code.")
    p.add_argument("--repo", default=os.environ.get("CIL_REFERENCE_REPO"))
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    if not a.repo:
        p.error("--repo or CIL_REFERENCE_REPO: the authors' checkout")
    results = []
    with tempfile.TemporaryDirectory(prefix="cil-training-parity-") as work:
        for mode, coin in (("scaled", None), ("replace", 0.5), ("replace", 0.97)):
            results.append(lvdm_parity(work, a.repo, "dynamicrafter", mode, [930, 120], coin=coin))
        results.append(lvdm_parity(work, a.repo, "videocrafter", "scaled", [870]))
        for coin in (0.5, 0.05):
            results.append(svd_parity(a.repo, coin))
    text = json.dumps(results, indent=2)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
