"""Tiny random-weight DynamiCrafter / VideoCrafter1 checkpoints built from the authors' own classes.

The authors' inference YAML is loaded and only its widths are shrunk (the classes, flags and
conditioning layout stay theirs), the model is instantiated through the checkout's
`utils.utils.instantiate_from_config` — the same call the exporter's real loader makes — and every
parameter is re-drawn from a fixed seed (lvdm zero-initialises the UNet's output convolutions, which
would make the network the identity map and the comparison vacuous). The result is saved as the
exporter reads a real checkpoint: `ckpt/model.ckpt` ({"state_dict": …}) beside the shrunk YAML and
the tiny open_clip architectures it names (`ckpt/<arch>.json`, passed to the exporter as
`--open-clip-config`).

What cannot shrink: VideoCrafter1's LatentVisualDiffusion hard-codes its image projection
(Resampler 1280 → 1024, depth 4, 12 heads), so its text tower is 1024 wide and its image tower 1280
wide (≈ 130 M values, 0.5 GB); the text vocabulary stays open_clip's 49408 ids so real prompts
tokenize.
"""

import copy
import json
import os
import sys

import numpy as np
import torch

# Frame geometry and seeds of the tiny models (pixels; latent = pixels / 8).
HEIGHT, WIDTH = 64, 128
BUILD_SEED = 1400

# open_clip architectures: one for the text embedder, one for the image embedder (each embedder
# builds a whole CLIP and deletes the other tower, so separate configs keep the unused half tiny).
# The UNets keep the 77 text tokens lvdm's attention splits the context at, and the 16 image tokens
# per frame (DynamiCrafter) / per clip (VideoCrafter1) their Resamplers emit.
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
_TINY_VISION = {"image_size": 224, "layers": 1, "width": 64, "head_width": 32, "patch_size": 32}
_OPEN_CLIP = {
    "dynamicrafter": {
        "text": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT},
        "image": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT},
    },
    "videocrafter": {
        "text": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": dict(_TINY_TEXT, width=1024, mlp_ratio=1)},
        "image": {"embed_dim": 32, "vision_cfg": dict(_TINY_VISION, width=1280, head_width=640, mlp_ratio=1), "text_cfg": _TINY_TEXT},
    },
}

FAMILIES = {
    "dynamicrafter": {"sub": "DynamiCrafter", "yaml": "configs/inference_512_v1.0.yaml", "frames": 4, "context": 32},
    "videocrafter": {"sub": "VideoCrafter", "yaml": "configs/inference_i2v_512_v1.0.yaml", "frames": 16, "context": 1024},
}


def arch_name(family, tower):
    return f"cil-tiny-{family}-{tower}"


def family_repo(repo, family):
    """`repo` may be the cond-image-leakage root or the family's examples/<Family> folder."""
    sub = os.path.join(repo, "examples", FAMILIES[family]["sub"])
    return os.path.abspath(sub if os.path.isdir(sub) else repo)


def shrunk_config(repo, family, yaml=None):
    """The authors' inference YAML (or `yaml`, a path inside the family's folder: their training
    YAML) with widths shrunk; returns (OmegaConf config, open_clip cfg)."""
    from omegaconf import OmegaConf

    f = FAMILIES[family]
    cfg = OmegaConf.load(os.path.join(family_repo(repo, family), yaml or f["yaml"]))
    p = cfg.model.params
    p.image_size = [HEIGHT // 8, WIDTH // 8]
    u = p.unet_config.params
    u.model_channels = 32
    u.channel_mult = [1, 2]
    u.attention_resolutions = [1, 2]
    u.num_res_blocks = 1
    u.num_head_channels = 16
    u.context_dim = f["context"]
    u.temporal_length = f["frames"]
    u.use_checkpoint = False
    dd = p.first_stage_config.params.ddconfig
    dd.ch = 32  # lvdm's VAE GroupNorm has 32 groups
    dd.ch_mult = [1, 1, 2, 2]  # four levels: downsample 8, as the inference scripts assume
    dd.num_res_blocks = 1
    for key, tower in (("cond_stage_config", "text"), ("img_cond_stage_config", "image"), ("cond_img_config", "image")):
        if key in p:
            p[key].params.arch = arch_name(family, tower)
            p[key].params.version = None  # random init: never a download
            p[key].params.device = "cpu"
    if family == "dynamicrafter":
        r = p.image_proj_stage_config.params
        r.dim, r.depth, r.dim_head, r.heads = 32, 2, 16, 2
        r.embedding_dim = _OPEN_CLIP[family]["image"]["vision_cfg"]["width"]
        r.output_dim = f["context"]
        r.ff_mult = 2
        r.video_length = f["frames"]
    return cfg, copy.deepcopy(_OPEN_CLIP[family])


def register_open_clip(path):
    import open_clip

    open_clip.add_model_config(path)


def _redraw(model, seed):
    """Every parameter from a seeded normal: matrices/convolutions with std 1/sqrt(fan_in), norm
    weights around 1, everything else (biases, embeddings of one axis) small."""
    g = torch.Generator().manual_seed(seed)
    norms = set()
    for m in model.modules():
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and m.weight is not None:
            norms.add(id(m.weight))
    with torch.no_grad():
        for _, prm in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            z = torch.randn(prm.shape, generator=g, dtype=torch.float32)
            if id(prm) in norms:
                prm.copy_(1 + 0.1 * z)
            elif prm.dim() >= 2:
                fan_in = prm[0].numel()
                prm.copy_(z / max(fan_in, 1) ** 0.5)
            else:
                prm.copy_(0.05 * z)


def build_model(repo, family, cfg, seed=BUILD_SEED):
    from omegaconf import OmegaConf

    frepo = family_repo(repo, family)
    if frepo not in sys.path:
        sys.path.insert(0, frepo)
    from utils.utils import instantiate_from_config

    from tools.export.loaders import open_clip_compat

    torch.manual_seed(seed)
    model = instantiate_from_config(cfg.model)
    _redraw(model, seed)
    open_clip_compat(model)
    return model.eval()


def input_image(height=HEIGHT, width=WIDTH):
    """A smooth, structured RGB picture (gradients, a disc, a soft stripe pattern) as uint8 HWC."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = x / (width - 1), y / (height - 1)
    r = 0.25 + 0.6 * u
    g = 0.2 + 0.5 * v + 0.15 * np.sin(6.0 * u + 2.0 * v)
    b = 0.55 + 0.35 * np.cos(4.0 * v - 3.0 * u)
    d = np.hypot(u - 0.62, (v - 0.45) * height / width * 2.0)
    disc = np.clip((0.22 - d) / 0.04, 0.0, 1.0)
    r = r * (1 - disc) + 0.95 * disc
    g = g * (1 - disc) + 0.3 * disc
    b = b * (1 - disc) + 0.15 * disc
    img = np.stack([r, g, b], axis=-1)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def write_png(path, hwc):
    from PIL import Image

    Image.fromarray(hwc, "RGB").save(path, format="PNG", optimize=False, compress_level=6)


def statistics(family, frames, seed=BUILD_SEED + 1):
    """The authors' Analytic-Init file content (`Expectation_X0` of the latent's shape with a batch
    axis, `Tr_Cov_d` a 0-d tensor), random but of a plausible scale."""
    g = torch.Generator().manual_seed(seed)
    e = 0.3 * torch.randn(1, 4, frames, HEIGHT // 8, WIDTH // 8, generator=g)
    return {"Expectation_X0": e.contiguous(), "Tr_Cov_d": torch.tensor(0.85, dtype=torch.float32)}


def write_checkpoint(out_dir, repo, family, log=print):
    """ckpt/{model.ckpt, inference.yaml, <arch>.json}; returns (model, paths)."""
    from omegaconf import OmegaConf

    ck = os.path.join(out_dir, "ckpt")
    os.makedirs(ck, exist_ok=True)
    cfg, oc = shrunk_config(repo, family)
    oc_paths = []
    for tower, arch_cfg in oc.items():
        oc_paths.append(os.path.join(ck, f"{arch_name(family, tower)}.json"))
        with open(oc_paths[-1], "w", encoding="utf-8") as f:
            json.dump(arch_cfg, f, indent=2)
        register_open_clip(oc_paths[-1])
    yaml_path = os.path.join(ck, "inference.yaml")
    OmegaConf.save(cfg, yaml_path)
    model = build_model(repo, family, cfg)
    sd = model.state_dict()
    n = sum(v.numel() for k, v in sd.items())
    ckpt_path = os.path.join(ck, "model.ckpt")
    torch.save({"state_dict": sd}, ckpt_path)
    log(f"{family}: {n / 1e6:.1f} M values in {len(sd)} tensors → {ckpt_path}")
    return model, {"ckpt": ckpt_path, "config": yaml_path, "open_clip": oc_paths}
