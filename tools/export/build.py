"""Per family: the contract wrappers with their trace and parity inputs, and the manifest fields.

Pure functions of the loaded model pieces (`VpParts`, `SvdParts` from loaders.py, or stand-ins in
the tests) and plain config dicts (the checkpoint's YAML / diffusers JSON, already parsed).
"""

import json
import math
import os
import re
from dataclasses import dataclass

import torch

from .bundle import ComponentExport
from .contract import CLIP_SIZE, FAMILY_TABLE, MANIFEST_FORMAT, TEXT_LENGTH, ContractError, statistics_id
from .wrappers import (
    ClipImageEncoder,
    DynamiCrafterUNet,
    HfClipImageEmbeds,
    OpenClipVisionTokens,
    SvdUNet,
    TextEncoder,
    VaeDecoder,
    VaeEncoder,
    VideoCrafterUNet,
)


@dataclass
class VpParts:
    """The pieces of an lvdm LatentVisualDiffusion (DynamiCrafter, VideoCrafter1)."""

    unet: torch.nn.Module  # model.model.diffusion_model: unet(x, timesteps, context=, fs=/fps=)
    vae: torch.nn.Module  # model.first_stage_model: encode(x).mean, decode(z)
    text: torch.nn.Module  # model.cond_stage_model: encode_with_transformer(tokens)
    image_embedder: torch.nn.Module  # model.embedder: encode_with_vision_transformer(x), preprocess(x)
    image_proj: torch.nn.Module  # model.image_proj_model (Resampler)
    params: dict  # the config's model.params


@dataclass
class SvdParts:
    """The pieces of a diffusers StableVideoDiffusionPipeline folder."""

    unet: torch.nn.Module  # UNetSpatioTemporalConditionModel
    vae: torch.nn.Module  # AutoencoderKLTemporalDecoder
    image_encoder: torch.nn.Module  # CLIPVisionModelWithProjection: model(pixel_values=).image_embeds
    image_mean: tuple
    image_std: tuple
    unet_config: dict
    vae_config: dict
    scheduler_config: dict


@dataclass
class Geometry:
    height: int
    width: int
    frames: int
    channels: int = 4
    downsample: int = 8
    dynamic_frames: bool = False
    static_batch: bool = False

    @property
    def h(self):
        return self.height // self.downsample

    @property
    def w(self):
        return self.width // self.downsample

    @property
    def trace_batch(self):
        # batch 2 (not 1) so the tracer cannot specialise a size-1 axis into a broadcast
        return 1 if self.static_batch else 2

    @property
    def parity_frames(self):
        # With dynamic frames the parity check runs at another frame count than the trace.
        if not self.dynamic_frames:
            return self.frames
        return self.frames - 2 if self.frames > 2 else self.frames + 1

    def check(self, family):
        for k in ("height", "width"):
            v = getattr(self, k)
            if v <= 0 or v % (self.downsample * 8) != 0:
                raise ContractError(f"--{k} {v}: must be a positive multiple of {self.downsample * 8} (the VAE downsamples by {self.downsample}, the UNet three more times)")
        if not 1 <= self.frames <= 64:
            raise ContractError(f"--frames {self.frames}: must be in [1, 64]")


def _axes(geom, frames_axis=None):
    a = {} if geom.static_batch else {0: "batch"}
    if frames_axis is not None and geom.dynamic_frames:
        a[frames_axis] = "frames"
    return a


def _on(device, d):
    return {k: v.to(device) for k, v in d.items()}


def _uniform(g, *shape):
    return torch.rand(*shape, generator=g) * 2 - 1


def vp_components(family, parts, geom, vocab_size, device="cpu", seed=0):
    """DynamiCrafter / VideoCrafter1: unet, vae_encoder, vae_decoder, text_encoder, image_encoder."""
    g = torch.Generator().manual_seed(seed)
    B = geom.trace_batch
    text = TextEncoder(parts.text)
    image = ClipImageEncoder(OpenClipVisionTokens(parts.image_embedder), parts.image_proj)

    def ids(b):
        return torch.randint(0, vocab_size, (b, TEXT_LENGTH), generator=g, dtype=torch.long)

    def img(b, h, w):
        return _uniform(g, b, 3, h, w)

    # Token count and width of the context, from the encoders themselves.
    with torch.no_grad():
        te = text.eval()(ids(1).to(device))
        ie = image.eval()(img(1, CLIP_SIZE, CLIP_SIZE).to(device))
    if te.dim() != 3 or te.shape[1] != TEXT_LENGTH:
        raise ContractError(f"{family}/text_encoder: text_embeds has shape {tuple(te.shape)}; the contract is [batch, {TEXT_LENGTH}, dim]")
    if ie.dim() != 3 or ie.shape[2] != te.shape[2]:
        raise ContractError(f"{family}/image_encoder: image_embeds has shape {tuple(ie.shape)}; the contract is [batch, tokens, {te.shape[2]}] (the text width)")
    ctx, dim = TEXT_LENGTH + ie.shape[1], te.shape[2]
    C = geom.channels
    dc = family == "dynamicrafter"
    cin = 2 * C if dc else C
    cond = "fs" if dc else "fps"
    unet = DynamiCrafterUNet(parts.unet) if dc else VideoCrafterUNet(parts.unet)

    def unet_inputs(b, f):
        return {
            "x": torch.randn(b, cin, f, geom.h, geom.w, generator=g),
            "timestep": torch.randint(1, 1000, (b,), generator=g, dtype=torch.long),
            "context": torch.randn(b, ctx, dim, generator=g),
            cond: torch.randint(1, 31, (b,), generator=g, dtype=torch.long),
        }

    scale = float(parts.params.get("scale_factor", 0.18215))
    ax = _axes(geom)
    return [
        ComponentExport(
            "unet", unet, _on(device, unet_inputs(B, geom.frames)), _on(device, unet_inputs(1, geom.parity_frames)),
            dynamic_axes={"x": _axes(geom, 2), "timestep": ax, "context": ax, cond: ax, "out": _axes(geom, 2)},
        ),
        ComponentExport(
            "vae_encoder", VaeEncoder(parts.vae), _on(device, {"image": img(B, geom.height, geom.width)}), _on(device, {"image": img(1, geom.height, geom.width)}),
            dynamic_axes={"image": ax, "latent": ax},
        ),
        ComponentExport(
            "vae_decoder", VaeDecoder(parts.vae),
            _on(device, {"latent": torch.randn(B, C, geom.h, geom.w, generator=g) / scale}),
            _on(device, {"latent": torch.randn(1 if geom.static_batch else 3, C, geom.h, geom.w, generator=g) / scale}),
            dynamic_axes={"latent": ax, "image": ax},
        ),
        ComponentExport("text_encoder", text, _on(device, {"input_ids": ids(B)}), _on(device, {"input_ids": ids(1)}), dynamic_axes={"input_ids": ax, "text_embeds": ax}),
        ComponentExport(
            "image_encoder", image, _on(device, {"image": img(B, CLIP_SIZE, CLIP_SIZE)}), _on(device, {"image": img(1, CLIP_SIZE, CLIP_SIZE)}),
            dynamic_axes={"image": ax, "image_embeds": ax},
        ),
    ]


def check_batch_independent(name, module, inputs, rtol=1e-4):
    """The worker runs the guidance branches as one batch (or one call each, or in another order
    than a reference pipeline): each batch item's output must depend on that item alone. The CIL
    repo's copy of diffusers 0.25's SVD UNet fails this (its temporal transformer broadcasts
    `time_context` pixel-major, so each pixel attends to another branch's image embedding; diffusers
    0.26 fixed it, and Stability's own code was batch-major): refused rather than baked in."""
    module = module.eval()
    with torch.no_grad():
        out = module(**inputs)
        swapped = module(**{k: v.flip(0) for k, v in inputs.items()}).flip(0)
    err = (out - swapped).abs().max().item()
    scale = max(out.abs().max().item(), 1e-6)
    if not err <= rtol * scale:
        raise ContractError(
            f"{name}: the output of one batch item depends on the other items (max difference {err:.3g} of {scale:.3g} when the batch is reversed). "
            "The worker batches guidance branches, so this would make videos depend on how they are batched. For SVD this is the CIL repo's "
            "UNet copy (diffusers 0.25's time_context broadcast): export without --repo (diffusers' class loads the same weights)"
        )


def svd_components(parts, geom, device="cpu", seed=0):
    """Stable Video Diffusion: unet, vae_encoder, vae_decoder (temporal), image_encoder."""
    g = torch.Generator().manual_seed(seed)
    B = geom.trace_batch
    image = ClipImageEncoder(HfClipImageEmbeds(parts.image_encoder), None, mean=parts.image_mean, std=parts.image_std, token_axis=True)

    def img(b, h, w):
        return _uniform(g, b, 3, h, w)

    with torch.no_grad():
        ie = image.eval()(img(1, CLIP_SIZE, CLIP_SIZE).to(device))
    if ie.dim() != 3 or ie.shape[1] != 1:
        raise ContractError(f"svd/image_encoder: image_embeds has shape {tuple(ie.shape)}; the contract is [batch, 1, dim]")
    dim = ie.shape[2]
    C = geom.channels

    def unet_inputs(b, f, g=g):
        sigma = torch.exp(torch.empty(b).uniform_(math.log(0.002), math.log(700.0), generator=g))
        fps = torch.randint(3, 31, (b,), generator=g).float()
        motion = torch.randint(0, 256, (b,), generator=g).float()
        return {
            "sample": torch.randn(b, f, 2 * C, geom.h, geom.w, generator=g),
            "timestep": 0.25 * torch.log(sigma),  # c_noise
            "encoder_hidden_states": torch.randn(b, 1, dim, generator=g),
            "added_time_ids": torch.stack([fps - 1, motion, torch.full((b,), 0.02)], dim=1),
        }

    unet = SvdUNet(parts.unet)
    if not geom.static_batch:
        # its own generator: the trace and parity inputs stay what they were
        check_batch_independent("svd/unet", unet, _on(device, unet_inputs(2, geom.frames, torch.Generator().manual_seed(seed + 1))))
    scale = float(parts.vae_config.get("scaling_factor", 0.18215))
    ax = _axes(geom)
    return [
        ComponentExport(
            "unet", unet, _on(device, unet_inputs(B, geom.frames)), _on(device, unet_inputs(1, geom.parity_frames)),
            dynamic_axes={"sample": _axes(geom, 1), "timestep": ax, "encoder_hidden_states": ax, "added_time_ids": ax, "out": _axes(geom, 1)},
            # the conditioning scalars stay float32 up to their first weight (fp16.py)
            keep_fp32_inputs=("timestep", "added_time_ids"),
        ),
        ComponentExport(
            "vae_encoder", VaeEncoder(parts.vae), _on(device, {"image": img(B, geom.height, geom.width)}), _on(device, {"image": img(1, geom.height, geom.width)}),
            dynamic_axes={"image": ax, "latent": ax},
        ),
        ComponentExport(
            "vae_decoder", VaeDecoder(parts.vae, temporal=True),
            _on(device, {"latent": torch.randn(B, C, geom.h, geom.w, generator=g) / scale}),
            _on(device, {"latent": torch.randn(1 if geom.static_batch else 3, C, geom.h, geom.w, generator=g) / scale}),
            dynamic_axes={"latent": ax, "image": ax},
        ),
        ComponentExport(
            "image_encoder", image, _on(device, {"image": img(B, CLIP_SIZE, CLIP_SIZE)}), _on(device, {"image": img(1, CLIP_SIZE, CLIP_SIZE)}),
            dynamic_axes={"image": ax, "image_embeds": ax},
        ),
    ]


# ---------------------------------------------------------------------------- manifest fields

DEFAULT_KEYS = (
    "steps", "start", "analyticInit", "statistics", "guidanceScale", "imageGuidanceScale", "guidanceRescale", "eta", "fps",
    "frameStride", "motionBucketId", "noiseAugStrength", "minGuidanceScale", "maxGuidanceScale",
)


def parse_default_overrides(items):
    """`--set-default KEY=VALUE` items → dict (VALUE as JSON when it parses: numbers, true/false)."""
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or key not in DEFAULT_KEYS:
            raise ContractError(f"--set-default {item!r}: expected KEY=VALUE with KEY one of {', '.join(DEFAULT_KEYS)}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def _sub(d, *path):
    for k in path:
        d = d.get(k, {}) if isinstance(d, dict) else {}
    return d


def vp_geometry_defaults(family, params):
    """Native (height, width, frames, channels, downsample) from the lvdm config's model.params."""
    t = FAMILY_TABLE[family]
    ch_mult = _sub(params, "first_stage_config", "params", "ddconfig").get("ch_mult") or [1, 2, 4, 4]
    down = 2 ** (len(ch_mult) - 1)
    size = params.get("image_size") or [t["height"] // down, t["width"] // down]
    if isinstance(size, int):
        size = [size, size]
    frames = _sub(params, "unet_config", "params").get("temporal_length") or t["frames"]
    return int(size[0]) * down, int(size[1]) * down, int(frames), int(params.get("channels", 4)), down


def _description(family_label, geom, cil, source, extra=""):
    kind = "CIL (TimeNoise fine-tuned)" if cil else "base"
    return f"{family_label} {geom.height}x{geom.width}, {geom.frames} frames, {kind} checkpoint{extra}; exported from {source} by tools/export"


def _defaults(base, cil, family, geom, analytic_init, statistics, overrides):
    t = FAMILY_TABLE[family]
    d = {"steps": t["steps"], "start": t["startCil"] if cil else t["start"]}
    if analytic_init:
        d["analyticInit"] = True
        d["statistics"] = statistics or statistics_id(family, geom.height, geom.width)
    else:
        d["analyticInit"] = False
    d.update(base)
    d.update(overrides or {})
    if d.get("analyticInit") is False:
        d.pop("statistics", None)
    return d


def vp_manifest(family, params, geom, *, model_id, cil, source, analytic_init=True, statistics=None, overrides=None, description=None):
    """The manifest without components, from the lvdm config's model.params and the family table."""
    t = FAMILY_TABLE[family]
    if params.get("beta_schedule", "linear") != "linear":
        raise ContractError(f"{family}: beta_schedule {params['beta_schedule']!r}; bundles support the LDM 'linear' schedule only")
    dc = family == "dynamicrafter"
    enabled, base = (params.get("use_dynamic_rescale"), params.get("base_scale")) if dc else (params.get("use_scale"), params.get("scale_b"))
    dr = t["dynamicRescale"]
    schedule = {
        "kind": "vp-ddim",
        "betaSchedule": "linear",
        "linearStart": float(params.get("linear_start", t["schedule"]["linearStart"])),
        "linearEnd": float(params.get("linear_end", t["schedule"]["linearEnd"])),
        "timesteps": int(params.get("timesteps", t["schedule"]["timesteps"])),
        "rescaleZeroSnr": bool(params.get("rescale_betas_zero_snr", False)),
        "parameterization": params.get("parameterization", "eps"),
        "spacing": t["spacing"],
        "dynamicRescale": {"enabled": bool(enabled), "base": float(base if base is not None else dr["base"]), "rampSteps": dr["rampSteps"], "finalPrev": dr["finalPrev"]},
    }
    if dc:
        fs = _sub(params, "unet_config", "params").get("default_fs") or t["frameStride"]
        base_defaults = {"guidanceScale": t["guidanceScale"], "guidanceRescale": t["guidanceRescale"], "eta": t["eta"], "frameStride": int(fs), "fps": t["fps"]}
    else:
        base_defaults = {"guidanceScale": t["guidanceScale"], "eta": t["eta"], "fps": t["fps"]}
    label = "DynamiCrafter" if dc else "VideoCrafter1"
    return {
        "format": MANIFEST_FORMAT,
        "id": model_id,
        "family": family,
        "description": description or _description(label, geom, cil, source),
        "cil": bool(cil),
        "resolution": {"height": geom.height, "width": geom.width},
        "frames": geom.frames,
        "latent": {"channels": geom.channels, "downsample": geom.downsample, "scaleFactor": float(params.get("scale_factor", 0.18215))},
        "schedule": schedule,
        "defaults": _defaults(base_defaults, cil, family, geom, analytic_init, statistics, overrides),
    }


def svd_geometry_defaults(unet_config, vae_config):
    t = FAMILY_TABLE["svd"]
    down = 2 ** (len(vae_config.get("block_out_channels") or [128, 256, 512, 512]) - 1)
    return t["height"], t["width"], int(unet_config.get("num_frames") or t["frames"]), int(vae_config.get("latent_channels", 4)), down


def svd_manifest(parts, geom, *, model_id, cil, source, analytic_init=True, statistics=None, overrides=None, description=None):
    t = FAMILY_TABLE["svd"]
    sc = parts.scheduler_config
    pred = sc.get("prediction_type", "v_prediction")
    if pred != "v_prediction":
        raise ContractError(f"svd: scheduler prediction_type {pred!r}; bundles support v-prediction only")
    schedule = {
        "kind": "edm-euler",
        "sigmaMin": float(sc.get("sigma_min", t["sigmaMin"])),
        "sigmaMax": float(sc.get("sigma_max", t["sigmaMax"])),
        "rho": float(t["rho"]),
        "parameterization": "v",
    }
    base_defaults = {k: t[k] for k in ("minGuidanceScale", "maxGuidanceScale", "fps", "motionBucketId", "noiseAugStrength")}
    return {
        "format": MANIFEST_FORMAT,
        "id": model_id,
        "family": "svd",
        "description": description or _description("Stable Video Diffusion", geom, cil, source),
        "cil": bool(cil),
        "resolution": {"height": geom.height, "width": geom.width},
        "frames": geom.frames,
        "latent": {"channels": geom.channels, "downsample": geom.downsample, "scaleFactor": float(parts.vae_config.get("scaling_factor", 0.18215))},
        "schedule": schedule,
        "defaults": _defaults(base_defaults, cil, "svd", geom, analytic_init, statistics, overrides),
    }


_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def check_ids(manifest):
    """The id and statistics id as the manifest schema (shared/src/schemas) will check them."""
    if not _MODEL_ID.match(manifest["id"]):
        raise ContractError(f"--id {manifest['id']!r}: must be 1–64 characters of a-z 0-9 . _ - starting with a letter or digit")
    stats = manifest["defaults"].get("statistics")
    if stats is not None and (not isinstance(stats, str) or len(stats) > 1024 or not _KEY.match(stats)):
        raise ContractError(f"statistics id {stats!r}: must be '/'-separated segments of A-Z a-z 0-9 . _ - each starting with a letter or digit")
    return manifest


def default_model_id(family, geom, cil, fp16):
    return f"{family}-{geom.height}x{geom.width}{'-cil' if cil else ''}{'-fp16' if fp16 else ''}"


def source_label(path):
    return os.path.basename(os.path.normpath(path)) if path else "stand-in modules"
