"""Training parity on the real classes (issue 20): one training step of the CIL authors' own code
against our launcher's recipe (tools/finetune/recipes.py) on the same tiny model, batch and noise.

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

import contextlib
import json
import math
import os
import random
import sys
import types
import zlib

import numpy as np
import torch

from . import lvdm_build as build
from . import lvdm_reference as ref
from .rng import NormalGenerator

SEED = 20240620
TRAIN_YAML = {"dynamicrafter": "configs/train_512.yaml", "videocrafter": "configs/train.yaml"}
VC_BASE_TARGET = "lvdm.models.ddpm3d.LatentVisualDiffusion"
TOY_DATASET = "tools.finetune.toyvideos.LvdmShapes"


class TapError(RuntimeError):
    """A random draw the harness cannot attribute to a role, or a stream used inconsistently."""


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


# ------------------------------------------------------------------------------------- the tap

_OURS = {"timenoise.py", "recipes.py"}
_THEIRS = {"ddpm3d.py", "ddpm3d_videocrafter_ve.py", "loss.py", "edm.py", "utils.py", "distributions.py"}


class RoleTap:
    """Routes every random draw to a per-role stream of our generator (see the module docstring).

    t: the timesteps the authors' shared_step draws; coins: fixed values of the uniform coins
    ('emb.coin': the replacement draw, 'cfg.coin': SVD's classifier-free drop), so both branches
    can be exercised. side: 'theirs' or 'ours' — on our side, draws at the authors' TimeNoise sites
    (switched off in the fork) go to their own 'off.*' streams."""

    def __init__(self, seed, t, coins=None, side="theirs"):
        self.seed = seed
        self.t = [int(v) for v in t]
        self.coins = dict(coins or {})
        self.side = side
        self.streams = {}
        self.log = []

    def _gen(self, role):
        if role not in self.streams:
            self.streams[role] = NormalGenerator.from_seed(self.seed * 7919 + zlib.crc32(role.encode()) % 1_000_003)
        return self.streams[role]

    def normals(self, role, shape):
        shape = tuple(int(s) for s in shape)
        self.log.append((role, "normal", list(shape)))
        return torch.from_numpy(self._gen(role).randn(shape))

    def uniforms(self, role, n):
        self.log.append((role, "uniform", [n]))
        if role in self.coins:
            return np.full(n, self.coins[role], dtype=np.float64)
        g = self._gen(role)
        return np.array([g.uniform() for _ in range(n)], dtype=np.float64)

    # Which role a draw plays, from the calling frames.
    def role(self, kind):
        frames = []
        f = sys._getframe(2)
        while f is not None:
            base = os.path.basename(f.f_code.co_filename)
            frames.append((base, f.f_code.co_name, f))
            f = f.f_back
        names = [(b, n) for b, n, _ in frames]

        def outer(name, files):
            return any(n == name and b in files for b, n in names)

        for base, name, frame in frames:
            if base in _OURS and self.side == "ours":
                if base == "timenoise.py" and name in ("sample_beta", "_randn", "treat_image_embedding"):
                    where = "emb" if outer("treat_image_embedding", _OURS) else "concat"
                    return f"{where}.{'beta' if name == 'sample_beta' else ('coin' if kind == 'rand' else 'z')}"
                if base == "recipes.py" and name == "loss":
                    line = _line(frame)
                    if "latent_dist.sample" in line:  # the VAE posterior (diffusers draws it with torch.randn)
                        return "cond.posterior" if "px[:, 0]" in line else "posterior"
                    if kind == "randn_like":
                        return "noise"
                    if kind == "randn":
                        return "sigma"
                    if kind == "rand":
                        return "cfg.coin"
            if base in _THEIRS:
                if name == "logit_normal_sampler":
                    where = "emb" if outer("get_batch_input", _THEIRS) else "concat"
                    return self._theirs_tn(f"{where}.beta")
                if name == "get_batch_input":
                    if kind == "randn_like":
                        return self._theirs_tn("emb.z")
                    if kind == "random":
                        return self._theirs_tn("emb.coin")
                    if kind == "rand":
                        return "uncond"
                    if kind == "randint_py":
                        return "cond_frame"
                if name == "forward" and kind == "randn_like":
                    return self._theirs_tn("concat.z")
                if name == "p_losses":
                    return "noise"
                if name == "shared_step" and kind == "randint":
                    return "t"
                if name == "sample" and base == "distributions.py":
                    return "posterior"
                if name == "add_noise":
                    return "noise" if kind == "randn_like" else "sigma"
                if name == "__call__" and base == "loss.py":
                    return "concat.z" if kind == "randn" else "cfg.coin"
                if name == "pixel2latent":
                    return "cond.posterior" if outer("__call__", {"loss.py"}) else "posterior"
        raise TapError(f"a {kind} draw with no known role; call stack (innermost first): {names[:12]}")

    def _theirs_tn(self, role):
        return f"off.{role}" if self.side == "ours" else role


def _line(frame):
    import linecache

    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def _shape_of(args, kwargs):
    if "size" in kwargs:
        s = kwargs["size"]
        return tuple(s) if isinstance(s, (tuple, list, torch.Size)) else (s,)
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(int(a) for a in args)


@contextlib.contextmanager
def tapped(tap):
    """torch.randn / randn_like / rand / randint and random.random / randint through `tap`."""
    o = {n: getattr(torch, n) for n in ("randn", "randn_like", "rand", "randint")}
    o_random, o_randint = random.random, random.randint

    def _finish(x, kwargs, like=None):
        dtype = kwargs.get("dtype") or (like.dtype if like is not None else torch.float32)
        device = kwargs.get("device") or (like.device if like is not None else "cpu")
        return x.to(dtype=dtype, device=device)

    def randn(*args, **kwargs):
        return _finish(tap.normals(tap.role("randn"), _shape_of(args, {k: v for k, v in kwargs.items() if k == "size"})), kwargs)

    def randn_like(x, **kwargs):
        return _finish(tap.normals(tap.role("randn_like"), x.shape), kwargs, like=x)

    def rand(*args, **kwargs):
        shape = _shape_of(args, {k: v for k, v in kwargs.items() if k == "size"})
        n = int(np.prod(shape)) if shape else 1
        return _finish(torch.from_numpy(tap.uniforms(tap.role("rand"), n).reshape(shape)), kwargs)

    def randint(*args, **kwargs):
        role = tap.role("randint")
        shape = kwargs.get("size", args[-1] if args else None)
        n = int(np.prod(tuple(shape)))
        if role != "t" or n != len(tap.t):
            raise TapError(f"randint ({role}, {n} values): the harness provides t = {tap.t}")
        tap.log.append(("t", "fixed", [n]))
        return torch.tensor(tap.t, dtype=torch.long, device=kwargs.get("device") or "cpu")

    def py_random():
        return float(tap.uniforms(tap.role("random"), 1)[0])

    def py_randint(a, b):
        u = float(tap.uniforms(tap.role("randint_py"), 1)[0])
        return a + min(b - a, int(math.floor(u * (b - a + 1))))

    torch.randn, torch.randn_like, torch.rand, torch.randint = randn, randn_like, rand, randint
    random.random, random.randint = py_random, py_randint
    try:
        yield tap
    finally:
        for n, v in o.items():
            setattr(torch, n, v)
        random.random, random.randint = o_random, o_randint


@contextlib.contextmanager
def capture_forward(module, store):
    """Records the positional/keyword inputs of every module(...) call (the UNet's inputs)."""
    orig = module.forward

    def forward(*args, **kwargs):
        store.append((args, kwargs))
        return orig(*args, **kwargs)

    module.forward = forward
    try:
        yield store
    finally:
        del module.forward


def _err(a, b):
    a, b = a.detach().double(), b.detach().double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return {"maxAbs": float((a - b).abs().max()), "scale": scale, "rel": float((a - b).abs().max()) / scale}


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


# ------------------------------------------------------------------------------------- svd

SVD_SETTINGS = {"beta_m": 15.0, "a": 5.0, "P_mean": -1.2, "P_std": 1.2, "sigma_data": 1.0, "fps": 3, "motion_bucket_id": 20.0, "cfg": 0.1}


def tiny_svd_parts():
    """tools.reference.svd's tiny diffusers models as the SvdParts our recipe trains."""
    from tools.export.build import SvdParts

    from . import svd as S

    unet, vae, clip, _ = S.build_models()
    return SvdParts(unet=unet, vae=vae, image_encoder=clip, image_mean=tuple(S.CLIP_MEAN), image_std=tuple(S.CLIP_STD),
                    unet_config=dict(unet.config), vae_config=dict(vae.config), scheduler_config=dict(S.STOCK_SCHEDULER))


def svd_batch(batch_size, seed=SEED):
    from tools.finetune.toyvideos import SvdShapes

    from . import svd as S

    ds = SvdShapes(count=batch_size, frames=S.FRAMES, height=S.HEIGHT, width=S.WIDTH, seed=seed)
    return torch.utils.data.default_collate([ds[i] for i in range(batch_size)])


def _their_svd(repo):
    from . import svd as S

    root = S.svd_root(repo)
    if root not in sys.path:
        sys.path.insert(0, root)
    for k in [k for k in sys.modules if k == "svd" or k.startswith("svd.")]:
        del sys.modules[k]
    from svd.models.utils import encode_image, pixel2latent
    from svd.training.loss import EDMLossTimeNoise

    return EDMLossTimeNoise, pixel2latent, encode_image


def svd_parity(repo, coin, batch_size=2, log=print):
    """One step of the authors' EDMLossTimeNoise (as their train.py feeds it) and of our SvdRecipe
    with their settings, on the same tiny diffusers models, batch and noise."""
    from transformers import CLIPImageProcessor

    from tools.finetune.recipes import SvdRecipe
    from tools.finetune.train import parser
    from tools.finetune.timenoise import TimeNoise

    from . import svd as S

    EDMLossTimeNoise, pixel2latent, encode_image = _their_svd(repo)
    s = SVD_SETTINGS
    args = parser().parse_args([
        "--recipe", "svd", "--parts", "tools.reference.training:tiny_svd_parts", "--dataset", "tools.finetune.toyvideos:SvdShapes",
        "--steps", "1", "--out", "unused", "--beta-m", str(s["beta_m"]), "--a", str(s["a"]), "--p-mean", str(s["P_mean"]), "--p-std", str(s["P_std"]),
        "--sigma-data", str(s["sigma_data"]), "--fps", str(s["fps"] + 1), "--motion-bucket-id", str(s["motion_bucket_id"]),
        "--cfg-drop", str(s["cfg"]), "--image-embedding", "none", "--svd-condition-noise", "sample"])
    recipe = SvdRecipe(args, torch.device("cpu"))
    unet, vae, clip = recipe.unet.train(), recipe.vae, recipe.image_encoder
    fe = CLIPImageProcessor(crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}, do_center_crop=True, do_normalize=True,
                            do_resize=True, do_rescale=True, image_mean=S.CLIP_MEAN, image_std=S.CLIP_STD, resample=3)
    loss_fn = EDMLossTimeNoise(P_mean=s["P_mean"], P_std=s["P_std"], sigma_data=s["sigma_data"], beta_m=s["beta_m"], a=s["a"])
    batch = svd_batch(batch_size)
    px = batch["pixel_values"]
    tn = TimeNoise(a=s["a"], beta_m=s["beta_m"], image_embedding="none")
    out = {}
    for side in ("theirs", "ours"):
        seen = []
        tap = RoleTap(SEED, [], coins={"cfg.coin": coin}, side=side)
        torch.manual_seed(SEED)
        with capture_forward(unet, seen), tapped(tap):
            if side == "theirs":
                # Their train.py: latents and the CLIP embedding outside the loss, then the loss.
                latents = pixel2latent(px, vae)
                ehs = encode_image(px[:, 0, :, :, :].float(), fe, clip)
                loss = loss_fn(unet, latents, ehs, False, px, vae, s["cfg"], motion_bucket_id=s["motion_bucket_id"], fps=s["fps"])
            else:
                loss = recipe.loss(batch, tn)
        (sample, c_noise, ehs_in), kw = seen[0][0][:3], seen[0][1]
        out[side] = {"sample": sample, "c_noise": c_noise, "ehs": ehs_in, "ids": kw["added_time_ids"], "loss": loss, "log": tap.log}
    a, b = out["theirs"], out["ours"]
    c = S.LATENT_CHANNELS
    return {
        "family": "svd", "coin": coin, "batch": batch_size, "settings": s,
        "scaledNoisyLatent": _err(a["sample"][:, :, :c], b["sample"][:, :, :c]),
        "cConcat": _err(a["sample"][:, :, c:], b["sample"][:, :, c:]),
        "imageEmbedding": _err(a["ehs"], b["ehs"]),
        "addedTimeIds": _err(a["ids"], b["ids"]),
        "cNoise": _err(a["c_noise"].reshape(-1), b["c_noise"].reshape(-1)),
        "loss": {"theirs": float(a["loss"]), "ours": float(b["loss"]), "rel": abs(float(a["loss"]) - float(b["loss"])) / abs(float(a["loss"]))},
        "roles": {"theirs": sorted({r for r, _, _ in a["log"]}), "ours": sorted({r for r, _, _ in b["log"]})},
        "patches": ["both sides run diffusers' UNetSpatioTemporalConditionModel (their train.py imports their copy of diffusers 0.25's, whose temporal cross-attention mixes the batch's items: tools/reference/svd.py)"],
    }


def main(argv=None):
    import argparse
    import tempfile

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
