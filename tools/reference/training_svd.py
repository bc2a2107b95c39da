"""Training parity on SVD (issue 20; see tools/reference/training.py for the method): the CIL authors'
EDMLossTimeNoise (examples/svd/training/loss.py), fed as their train.py feeds it, against our
launcher's SvdRecipe with our TimeNoise, on diffusers' classes at tools/reference/svd.py's tiny sizes.
"""

import os
import sys

import numpy as np
import torch

from .tap import RoleTap, _err, capture_forward, tapped
from .training import SEED


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
        "--recipe", "svd", "--parts", "tools.reference.training_svd:tiny_svd_parts", "--dataset", "tools.finetune.toyvideos:SvdShapes",
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
