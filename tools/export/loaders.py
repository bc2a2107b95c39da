"""Loading REAL checkpoints: the model's own code, from the checkout the user names.

Nothing here runs in this repository's tests (no checkpoints, no network, and the models' own
dependencies — omegaconf, open_clip, einops, kornia, diffusers, transformers — are not ours): the
tests feed stand-ins straight into build.py. Run these in the model's own Python environment (its
requirements.txt plus `onnx`); docs/models.md walks through it per family.

  DynamiCrafter / VideoCrafter1 (lvdm): config YAML → `utils.utils.instantiate_from_config` →
  LatentVisualDiffusion → the checkpoint's state_dict, exactly as the reference inference scripts
  do (use_checkpoint off, xformers off: neither traces to ONNX).
  SVD (diffusers folder): `from_pretrained` for unet / vae / image_encoder, optionally the CIL
  repo's fine-tuned UNet checkpoint (`checkpoint-step-N.ckpt`: state_dict + EMA shadow params).
"""

import importlib
import json
import os
import sys
from collections import OrderedDict

import torch

from .build import SvdParts, VpParts


class LoadError(Exception):
    """A checkpoint, config or model checkout could not be loaded (names the file and why)."""


def deterministic_reference():
    """Parity references in true float32: TF32 matmuls/convolutions (on by default for cuDNN on
    Ampere and newer) would differ from onnxruntime by ~1e-3."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def pick_device(name=None):
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def import_repo(repo, must_have):
    """Puts the model checkout first on sys.path (its packages are top-level: lvdm, utils, svd)."""
    repo = os.path.abspath(repo)
    if not os.path.isdir(os.path.join(repo, must_have)):
        raise LoadError(f"--repo {repo}: no '{must_have}/' folder; point --repo at the model's code checkout (see docs/models.md)")
    if repo not in sys.path:
        sys.path.insert(0, repo)
    return repo


def load_yaml(path):
    try:
        from omegaconf import OmegaConf  # the lvdm code's own dependency
    except ImportError as e:
        raise LoadError("omegaconf is not installed: run the exporter in the model's own environment (pip install -r requirements.txt)") from e
    if not os.path.isfile(path):
        raise LoadError(f"--config {path}: no such file")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def _disable_xformers():
    # lvdm picks CrossAttention.efficient_forward (xformers) at construction when xformers imports;
    # xformers kernels do not export to ONNX, the plain attention path does.
    for name in ("lvdm.modules.attention", "lvdm.modules.attention_videocrafter"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "XFORMERS_IS_AVAILBLE"):
            mod.XFORMERS_IS_AVAILBLE = False


def lvdm_state_dict(ckpt):
    """The reference loaders' logic (DynamiCrafter's and VideoCrafter's load_model_checkpoint):
    Lightning checkpoints hold `state_dict`, DeepSpeed ones `module` with a `_forward_module.` prefix."""
    if not os.path.isfile(ckpt):
        raise LoadError(f"--ckpt {ckpt}: no such file")
    sd = torch.load(ckpt, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd:
        return sd["state_dict"]
    if isinstance(sd, dict) and "module" in sd:
        prefix = "_forward_module."
        return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v) for k, v in sd["module"].items())
    return sd


def _load_strict(model, sd, ckpt):
    try:
        model.load_state_dict(sd, strict=True)
        return
    except RuntimeError as first:
        # DynamiCrafter's 256×256 checkpoint names the frame-stride embedding differently.
        renamed = OrderedDict((k.replace("framestride_embed", "fps_embedding"), v) for k, v in sd.items())
        try:
            model.load_state_dict(renamed, strict=True)
        except RuntimeError:
            raise LoadError(f"--ckpt {ckpt}: does not fit the model built from --config: {str(first)[:2000]}") from first


# The lvdm configs' open_clip embedders (text tower, image tower).
_OPEN_CLIP_KEYS = ("cond_stage_config", "img_cond_stage_config", "cond_img_config")


def register_open_clip_configs(paths):
    """Registers open_clip model-config JSON files (the file name is the architecture name), for
    checkpoints whose config names an architecture open_clip does not ship."""
    if not paths:
        return
    try:
        import open_clip
    except ImportError as e:
        raise LoadError(f"--open-clip-config: open_clip is not importable ({e})") from e
    for p in paths:
        if not os.path.isfile(p):
            raise LoadError(f"--open-clip-config {p}: no such file")
        open_clip.add_model_config(p)


def open_clip_compat(model):
    """Lets lvdm's open_clip embedders run on open_clip >= 2.23 exactly as on the 2.22 it pins.

    lvdm calls open_clip's transformers sequence-first (it permutes to [L, N, D] itself, and the
    text embedder calls the residual blocks one by one); open_clip 2.23 made them batch-first, which
    breaks the text tower (the causal mask no longer fits) and, silently, the image tower (at batch
    1 every token attends only to itself). Newer open_clip also dropped `input_patchnorm` (dual
    patchnorm), which lvdm's image embedder reads. Both are restored here; a no-op on old open_clip.
    """
    text = getattr(getattr(model, "cond_stage_model", None), "model", None)
    blocks = getattr(getattr(text, "transformer", None), "resblocks", None) or []
    for block in blocks:
        attn = getattr(block, "attn", None)
        if isinstance(attn, torch.nn.MultiheadAttention) and attn.batch_first:
            attn.batch_first = False
    visual = getattr(getattr(getattr(model, "embedder", None), "model", None), "visual", None)
    if visual is not None:
        if not hasattr(visual, "input_patchnorm"):
            visual.input_patchnorm = False
        if getattr(getattr(visual, "transformer", None), "batch_first", False):
            visual.transformer.batch_first = False
    return model


def load_lvdm(repo, ckpt, config, device, open_clip_configs=()):
    """DynamiCrafter or VideoCrafter1 (base or CIL: the same architecture, other weights)."""
    import_repo(repo, "lvdm")
    cfg = load_yaml(config)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict) or "target" not in model_cfg:
        raise LoadError(f"--config {config}: no model.target; expected the repository's configs/inference_*.yaml")
    unet_params = model_cfg.setdefault("params", {}).setdefault("unet_config", {}).setdefault("params", {})
    unet_params["use_checkpoint"] = False  # as the reference inference script does
    # open_clip would fetch the pretrained CLIP-H weights the config names on construction, and the
    # strict checkpoint load below overwrites every one of them: build the towers randomly instead.
    for key in _OPEN_CLIP_KEYS:
        sub = model_cfg["params"].get(key)
        if isinstance(sub, dict) and "OpenCLIP" in str(sub.get("target", "")):
            sub.setdefault("params", {})["version"] = None
    register_open_clip_configs(open_clip_configs)
    _disable_xformers()
    try:
        from omegaconf import OmegaConf
        from utils.utils import instantiate_from_config  # the checkout's own helper
    except ImportError as e:
        raise LoadError(f"--repo {repo}: cannot import utils.utils.instantiate_from_config ({e})") from e
    # As the reference scripts: an OmegaConf node (lvdm reads some config values as attributes).
    model = instantiate_from_config(OmegaConf.create(model_cfg))
    open_clip_compat(model)
    _load_strict(model, lvdm_state_dict(ckpt), ckpt)
    model = model.eval().to(device)
    return parts_from_lvdm(model, model_cfg["params"])


def parts_from_lvdm(model, params):
    missing = [a for a in ("model", "first_stage_model", "cond_stage_model", "embedder", "image_proj_model") if not hasattr(model, a)]
    if missing:
        raise LoadError(f"the model ({type(model).__name__}) has no {', '.join(missing)}: is this an image-to-video LatentVisualDiffusion config?")
    return VpParts(
        unet=model.model.diffusion_model,
        vae=model.first_stage_model,
        text=model.cond_stage_model,
        image_embedder=model.embedder,
        image_proj=model.image_proj_model,
        params=params,
    )


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LoadError(f"{path}: cannot read ({e}); --ckpt must be a diffusers StableVideoDiffusionPipeline folder") from e


def load_cil_unet_weights(unet, path, use_ema=True):
    """The CIL repo's SVD fine-tune (examples/SVD/inference.py load_model): `state_dict`, and with
    EMA the `ema_state.shadow_params`, in `unet.parameters()` order (diffusers' EMAModel.copy_to)."""
    if not os.path.isfile(path):
        raise LoadError(f"--unet-ckpt {path}: no such file")
    ck = torch.load(path, map_location="cpu")
    sd = ck.get("state_dict", ck) if isinstance(ck, dict) else ck
    unet.load_state_dict(sd, strict=True)
    if use_ema and isinstance(ck, dict) and "ema_state" in ck:
        shadow = ck["ema_state"].get("shadow_params")
        params = list(unet.parameters())
        if not shadow or len(shadow) != len(params):
            raise LoadError(f"--unet-ckpt {path}: ema_state has {len(shadow or [])} shadow params, the UNet {len(params)}")
        with torch.no_grad():
            for p, s in zip(params, shadow):
                p.copy_(s.to(p.dtype))


def _alias_moved_diffusers_modules():
    """The CIL repo's UNet copy (written for diffusers 0.25) imports
    `diffusers.models.dual_transformer_2d`, which diffusers 0.26 moved under `models.transformers`;
    SVD never uses that class, so the new location stands in for the old name."""
    try:
        importlib.import_module("diffusers.models.dual_transformer_2d")
    except ImportError:
        try:
            sys.modules["diffusers.models.dual_transformer_2d"] = importlib.import_module("diffusers.models.transformers.dual_transformer_2d")
        except ImportError:
            pass  # neither location: the import below reports it


def load_svd(folder, device, unet_ckpt=None, use_ema=True, repo=None):
    """Stable Video Diffusion from a diffusers folder (stabilityai/stable-video-diffusion-img2vid[-xt])."""
    try:
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection
    except ImportError as e:
        raise LoadError(f"diffusers/transformers not importable ({e}): run the exporter in an SVD environment") from e
    if repo:  # the CIL repo's examples/SVD ships its own copy of the UNet class
        import_repo(repo, "svd")
        _alias_moved_diffusers_modules()
        try:
            from svd.models.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel  # noqa: F811
        except ImportError as e:
            raise LoadError(f"--repo {repo}: cannot import svd.models.unet_spatio_temporal_condition ({e}); the CIL repo pins diffusers==0.25.1") from e
    for sub in ("unet", "vae", "image_encoder"):
        if not os.path.isdir(os.path.join(folder, sub)):
            raise LoadError(f"--ckpt {folder}: no '{sub}/' folder; expected a diffusers StableVideoDiffusionPipeline folder")
    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    if unet_ckpt:
        load_cil_unet_weights(unet, unet_ckpt, use_ema)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
    for m in (unet, vae):
        if hasattr(m, "set_default_attn_processor"):
            m.set_default_attn_processor()  # plain attention: exports on every torch version
    try:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", torch_dtype=torch.float32, attn_implementation="eager")
    except TypeError:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", torch_dtype=torch.float32)
    fe_path = os.path.join(folder, "feature_extractor", "preprocessor_config.json")
    fe = _read_json(fe_path) if os.path.isfile(fe_path) else {}
    sched = _read_json(os.path.join(folder, "scheduler", "scheduler_config.json"))
    from .contract import CLIP_MEAN, CLIP_STD

    return SvdParts(
        unet=unet.eval().to(device),
        vae=vae.eval().to(device),
        image_encoder=image_encoder.eval().to(device),
        image_mean=tuple(fe.get("image_mean", CLIP_MEAN)),
        image_std=tuple(fe.get("image_std", CLIP_STD)),
        unet_config=dict(unet.config),
        vae_config=dict(vae.config),
        scheduler_config=sched,
    )
