"""Recipes: what the generic training loop (train.py) needs from a model family.

A recipe is any object with:
    family                     'dynamicrafter' | 'videocrafter' | 'svd' | anything (recorded)
    root                       the torch.nn.Module that is trained and checkpointed
    trainable_parameters()     [(name, parameter)] of `root` to optimise (the rest is frozen)
    dataset()                  a map-style torch Dataset of training items
    collate                    a DataLoader collate_fn, or None for torch's default
    loss(batch, timenoise)     the model's own diffusion loss on a batch (already on the device),
                               with the condition corrupted by `timenoise` (timenoise.TimeNoise)
    export_name                file name of the exported weights ('model.ckpt', 'unet.ckpt')
    export_checkpoint(ema, step)  the weights in the layout tools/export loads; `ema` maps the
                               trainable names to EMA values (or is None)

Built in:
  * `lvdm` — DynamiCrafter and VideoCrafter1 (and other lvdm LatentVisualDiffusion models): the
    model built by the checkout's own `utils.utils.instantiate_from_config` from the training config
    (`--repo`, `--config`, `--ckpt`), its dataset from the config's data.params.train, and its own
    loss, `model.shared_step(batch, random_uncond=True)`, with TimeNoise installed on
    `model.apply_model` for the duration of the call (TimeNoise.patch_lvdm_apply_model). Trains
    the diffusion UNet and the image projection, as the reference does. Export: Lightning layout
    {"state_dict": …} for `python3 -m tools.export.<family> --ckpt … --cil`.
  * `svd` — Stable Video Diffusion from a diffusers folder (`--pretrained`, or `--parts` naming a
    function that returns tools.export.build.SvdParts), the dataset from `--dataset` (an import path)
    yielding {"pixel_values": [F, 3, H, W] in [−1, 1]}, and the EDM v-prediction loss of the CIL
    authors' SVD training (log σ ~ N(P_mean, P_std²), weight (σ² + σ_d²)/(σ·σ_d)²) with TimeNoise on
    the image latents (u = σ/σ_max), the CLIP embedding treatment and added_time_ids' noise column.
    Trains the UNet. Export: the CIL authors' layout {"state_dict", "ema_state"} for
    `python3 -m tools.export.svd --unet-ckpt … --cil`.
  * `package.module:function` — your own: function(args, device) returns a recipe object.
"""

import importlib
import inspect
import json
import os
import random

import torch
import torch.nn.functional as F


class RecipeError(ValueError):
    """A recipe could not be built from the arguments; the message names the argument and why."""


def import_object(path, what):
    """`package.module:attribute` → the attribute."""
    if ":" not in path:
        raise RecipeError(f"{what} {path!r}: expected package.module:name")
    mod, _, name = path.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise RecipeError(f"{what} {path!r}: cannot import ({e})") from e
    return obj


def to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def build_recipe(args, device):
    if args.recipe == "lvdm":
        return LvdmRecipe(args, device)
    if args.recipe == "svd":
        return SvdRecipe(args, device)
    factory = import_object(args.recipe, "--recipe")
    return factory(args, device)


# --------------------------------------------------------------------------- lvdm


def load_config(path):
    """The training config: YAML through omegaconf when the model's environment has it (the lvdm
    code reads its configs as OmegaConf objects), else JSON."""
    if not os.path.isfile(path):
        raise RecipeError(f"--config {path}: no such file")
    try:
        from omegaconf import OmegaConf  # the lvdm checkout's own dependency
    except ImportError:
        OmegaConf = None
    if OmegaConf is not None:
        return OmegaConf.load(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise RecipeError(f"--config {path}: omegaconf is not installed and the file is not JSON ({e})") from e


def _get(cfg, *keys):
    for k in keys:
        try:
            cfg = cfg[k]
        except (KeyError, TypeError, IndexError):
            return None
        if cfg is None:
            return None
    return cfg


class LvdmRecipe:
    export_name = "model.ckpt"

    def __init__(self, args, device):
        from tools.export.loaders import LoadError, import_repo, lvdm_state_dict

        if not args.repo or not args.config:
            raise RecipeError("--recipe lvdm needs --repo (the model's code checkout) and --config (its training config)")
        try:
            import_repo(args.repo, "lvdm")
        except LoadError as e:
            raise RecipeError(str(e)) from e
        cfg = load_config(args.config)
        model_cfg = _get(cfg, "model")
        if model_cfg is None or _get(model_cfg, "target") is None:
            raise RecipeError(f"--config {args.config}: no model.target (expected the checkout's training config, e.g. configs/training_512_v1.0/config.yaml)")
        train_cfg = _get(cfg, "data", "params", "train")
        if train_cfg is None or _get(train_cfg, "target") is None:
            raise RecipeError(f"--config {args.config}: no data.params.train.target (the training dataset)")
        try:
            from utils.utils import instantiate_from_config  # the checkout's own helper
        except ImportError as e:
            raise RecipeError(f"--repo {args.repo}: cannot import utils.utils.instantiate_from_config ({e})") from e
        register_open_clip_configs(getattr(args, "open_clip_config", None) or [])
        self._instantiate = instantiate_from_config
        self._train_cfg = train_cfg
        self.model = instantiate_from_config(model_cfg)
        from tools.export.loaders import open_clip_compat

        open_clip_compat(self.model)  # lvdm's embedders on open_clip >= 2.23, as the exporter runs them
        self.notes = []
        if disable_builtin_timenoise(self.model):
            self.notes.append("the model's class adds the CIL authors' TimeNoise itself (their fork's DiffusionWrapper); "
                              "switched off (beta_m = 0, clip_type 1: it adds exactly 0) so that ours is applied once")
        ckpt = args.ckpt or _get(model_cfg, "pretrained_checkpoint")
        if not ckpt:
            raise RecipeError("--ckpt: the base checkpoint to fine-tune is required (or model.pretrained_checkpoint in the config)")
        try:
            sd = lvdm_state_dict(ckpt)
        except LoadError as e:
            raise RecipeError(str(e)) from e
        missing, unexpected = self.model.load_state_dict(sd, strict=False)
        if missing and not args.allow_partial_load:
            raise RecipeError(f"--ckpt {ckpt}: {len(missing)} weights of the model are not in the checkpoint (e.g. {missing[:5]}); "
                              "pass --allow-partial-load to start those from the config's initialisation")
        self.load_report = {"missing": len(missing), "unexpected": len(unexpected)}
        self.model.to(device)
        self.root = self.model
        self.family = args.family or _family_from_config(model_cfg)
        self.text_tokens = args.text_tokens
        self.collate = None
        self._step_sig = inspect.signature(self.model.shared_step)

    def trainable_parameters(self):
        # As the reference's configure_optimizers: the diffusion model, the image projection when
        # it is trainable (the default), the text encoder only if the config makes it trainable.
        prefixes = ["model."]
        if getattr(self.model, "image_proj_model_trainable", True) and hasattr(self.model, "image_proj_model"):
            prefixes.append("image_proj_model.")
        if getattr(self.model, "cond_stage_trainable", False):
            prefixes.append("cond_stage_model.")
        return [(n, p) for n, p in self.model.named_parameters() if any(n.startswith(x) for x in prefixes)]

    def dataset(self):
        return self._instantiate(self._train_cfg)

    def loss(self, batch, timenoise):
        with timenoise.patch_lvdm_apply_model(self.model, self.text_tokens):
            if "random_uncond" in self._step_sig.parameters:
                out = self.model.shared_step(batch, random_uncond=True)
            else:
                out = self.model.shared_step(batch)
        return out[0] if isinstance(out, (tuple, list)) else out

    def export_checkpoint(self, ema, step):
        sd = self.model.state_dict()
        if ema:
            sd = {k: (ema[k].to(v.dtype) if k in ema else v) for k, v in sd.items()}
        return {"state_dict": {k: v.detach().cpu() for k, v in sd.items()}, "global_step": step}


def register_open_clip_configs(paths):
    """open_clip model architectures (JSON files named like the architecture) the config's
    embedders name with `arch` but open_clip does not ship: the exporter's --open-clip-config,
    its errors as RecipeError."""
    from tools.export.loaders import LoadError, register_open_clip_configs as register
    try:
        register(paths)
    except LoadError as e:
        raise RecipeError(str(e)) from e


def disable_builtin_timenoise(model):
    """The CIL authors' DynamiCrafter fork corrupts the condition inside the model's own code
    (DiffusionWrapper.forward: c_concat + β_s·z; get_batch_input: the image embedding, + β_s·z
    with clip_type 1, 95 % replacement otherwise). Our TimeNoise replaces it: with beta_m = 0 and
    clip_type 1 their code adds exactly 0·z. True when the model had it (base classes do not)."""
    wrapper = getattr(model, "model", None)
    if wrapper is None or not (hasattr(wrapper, "beta_m") and hasattr(wrapper, "a")):
        return False
    wrapper.beta_m = 0.0
    if hasattr(wrapper, "clip_type"):
        wrapper.clip_type = 1
    return True


def _family_from_config(model_cfg):
    key = _get(model_cfg, "params", "conditioning_key")
    return "dynamicrafter" if key == "hybrid" else "videocrafter"


# --------------------------------------------------------------------------- svd


def load_svd_parts_for_training(folder, device):
    """diffusers' UNet, VAE and CLIP image encoder from a StableVideoDiffusionPipeline folder, with
    the attention processors diffusers picks (fused/SDPA: what training wants), in float32."""
    try:
        from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
        from transformers import CLIPVisionModelWithProjection
    except ImportError as e:
        raise RecipeError(f"--recipe svd: diffusers/transformers not importable ({e}); run in an SVD environment") from e
    from tools.export.build import SvdParts
    from tools.export.contract import CLIP_MEAN, CLIP_STD

    for sub in ("unet", "vae", "image_encoder", "scheduler"):
        if not os.path.isdir(os.path.join(folder, sub)):
            raise RecipeError(f"--pretrained {folder}: no '{sub}/' folder; expected a diffusers StableVideoDiffusionPipeline folder")
    unet = UNetSpatioTemporalConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=torch.float32)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32)
    enc = CLIPVisionModelWithProjection.from_pretrained(folder, subfolder="image_encoder", torch_dtype=torch.float32)
    fe_path = os.path.join(folder, "feature_extractor", "preprocessor_config.json")
    fe = json.load(open(fe_path, encoding="utf-8")) if os.path.isfile(fe_path) else {}
    sched = json.load(open(os.path.join(folder, "scheduler", "scheduler_config.json"), encoding="utf-8"))
    return SvdParts(unet=unet.to(device), vae=vae.to(device), image_encoder=enc.to(device),
                    image_mean=tuple(fe.get("image_mean", CLIP_MEAN)), image_std=tuple(fe.get("image_std", CLIP_STD)),
                    unet_config=dict(unet.config), vae_config=dict(vae.config), scheduler_config=sched)


class SvdRecipe:
    family = "svd"
    export_name = "unet.ckpt"

    def __init__(self, args, device):
        if args.parts:
            parts = import_object(args.parts, "--parts")()
        elif args.pretrained:
            parts = load_svd_parts_for_training(args.pretrained, device)
        else:
            raise RecipeError("--recipe svd needs --pretrained (a diffusers StableVideoDiffusionPipeline folder) or --parts")
        if not args.dataset:
            raise RecipeError("--recipe svd needs --dataset package.module:Class (items {'pixel_values': [F, 3, H, W] in [-1, 1]})")
        try:
            dataset_args = json.loads(args.dataset_args or "{}")
        except ValueError as e:
            raise RecipeError(f"--dataset-args: not JSON ({e})") from e
        if not isinstance(dataset_args, dict):
            raise RecipeError("--dataset-args: must be a JSON object of keyword arguments")
        self._dataset = (import_object(args.dataset, "--dataset"), dataset_args)
        self.parts = parts
        self.unet = parts.unet.to(device)
        self.vae = parts.vae.to(device).eval().requires_grad_(False)
        self.image_encoder = parts.image_encoder.to(device).eval().requires_grad_(False)
        if args.gradient_checkpointing and hasattr(self.unet, "enable_gradient_checkpointing"):
            self.unet.enable_gradient_checkpointing()
        self.root = self.unet
        self.collate = None
        self.scaling = float(parts.vae_config.get("scaling_factor", 0.18215))
        self.latent_channels = int(parts.vae_config.get("latent_channels", 4))
        self.sigma_max = float(args.sigma_max if args.sigma_max else parts.scheduler_config.get("sigma_max", 700.0))
        self.p_mean, self.p_std, self.sigma_data = args.p_mean, args.p_std, args.sigma_data
        self.fps, self.motion_bucket_id = args.fps, args.motion_bucket_id
        self.cfg_drop = args.cfg_drop
        self.condition_noise = getattr(args, "svd_condition_noise", "element")
        self.mean = torch.tensor(parts.image_mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(parts.image_std, device=device).view(1, 3, 1, 1)
        self.ema_decay = args.ema_decay

    def trainable_parameters(self):
        return list(self.unet.named_parameters())

    def dataset(self):
        cls, kw = self._dataset
        return cls(**kw)

    def _clip(self, frame):
        # As the CIL authors' training (svd/models/utils.py encode_image) and diffusers' pipeline:
        # the [-1, 1] frame resized to 224×224 by diffusers' anti-aliased bicubic resize, then to
        # [0, 1], then CLIP-normalised (what the worker does at inference too).
        try:
            from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
        except ImportError as e:
            raise RecipeError(f"--recipe svd: diffusers' _resize_with_antialiasing is not importable ({e}); run in an SVD environment") from e
        x = _resize_with_antialiasing(frame.float(), (224, 224))
        x = (x + 1.0) / 2.0
        return (x - self.mean) / self.std

    def loss(self, batch, timenoise):
        px = batch["pixel_values"]
        if px.dim() != 5 or px.shape[2] != 3:
            raise RecipeError(f"svd dataset item pixel_values: expected [F, 3, H, W] per item, got a batch of shape {tuple(px.shape)}")
        b, f = px.shape[:2]
        with torch.no_grad():
            lat = self.vae.encode(px.flatten(0, 1)).latent_dist.sample() * self.scaling
            latents = lat.reshape(b, f, *lat.shape[1:])
            # The condition: the first frame's latent, unscaled (as the SVD pipeline conditions), a
            # posterior sample as the CIL authors' training draws it (the pipeline takes the mode).
            cond = self.vae.encode(px[:, 0]).latent_dist.sample()
            ehs = self.image_encoder(pixel_values=self._clip(px[:, 0])).image_embeds.unsqueeze(1)
        sigma = torch.exp(torch.randn(b, device=px.device) * self.p_std + self.p_mean)
        s = sigma.view(b, 1, 1, 1, 1)
        noisy = latents + s * torch.randn_like(latents)
        c_skip, c_out, c_in = 1 / (s**2 + 1), -s / torch.sqrt(s**2 + 1), 1 / torch.sqrt(s**2 + 1)
        c_noise = 0.25 * torch.log(sigma)
        sample = torch.cat([noisy * c_in, cond.unsqueeze(1).expand(-1, f, -1, -1, -1)], dim=2)
        ids = torch.tensor([[self.fps - 1, self.motion_bucket_id, 0.0]], device=px.device).expand(b, 3).clone()
        sample, ehs, ids = timenoise.svd(sample, ehs, sigma, latent_channels=self.latent_channels, sigma_max=self.sigma_max,
                                         added_time_ids=ids, condition_noise=self.condition_noise)
        if self.cfg_drop > 0:
            # Classifier-free guidance: the unconditional branch sees zeros for both conditions.
            keep = (torch.rand(b, device=px.device) >= self.cfg_drop).to(sample.dtype)
            mask = torch.ones_like(sample)
            mask[:, :, self.latent_channels:] = keep.view(b, 1, 1, 1, 1)
            sample = sample * mask
            ehs = ehs * keep.view(b, 1, 1)
        out = self.unet(sample, c_noise, ehs, added_time_ids=ids)
        pred = out.sample if hasattr(out, "sample") else out[0]
        x0 = pred * c_out + c_skip * noisy
        weight = (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2
        return torch.mean(weight * (x0.float() - latents.float()) ** 2)

    def export_checkpoint(self, ema, step):
        sd = {k: v.detach().cpu() for k, v in self.unet.state_dict().items()}
        out = {"global_step": step, "state_dict": sd}
        if ema:
            # diffusers' EMAModel layout, which the CIL authors save and tools/export reads:
            # shadow parameters in unet.parameters() order.
            shadow = [ema.get(n, p).detach().cpu().clone() for n, p in self.unet.named_parameters()]
            out["ema_state"] = {"decay": self.ema_decay, "shadow_params": shadow}
        return out


def seed_everything(seed):
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
