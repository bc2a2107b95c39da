"""Real-architecture UNets with random weights, for timing (`npm run bench -- --real`, bench/gpu.sh)
and the exporter's tests: weights do not change a network's cost, so no checkpoint is needed.

  SVD: diffusers' UNetSpatioTemporalConditionModel, whose constructor defaults ARE Stable Video
  Diffusion's UNet config (320/640/1280/1280 channels, 5/10/20/20 heads, cross-attention 1024).
  DynamiCrafter: the authors' lvdm UNetModel from their inference YAML (CIL_REFERENCE_REPO or
  --repo: the checkout's examples/DynamiCrafter, or DynamiCrafter's own repository), the same class
  loaders.load_lvdm builds for a real checkpoint.

`tiny=True` shrinks the widths (same block structure and operators) so the tests and the bench's
dry runs finish in seconds on a CPU.
"""

import os

import torch

from .loaders import LoadError, _disable_xformers, import_repo, load_yaml
from .wrappers import DynamiCrafterUNet, SvdUNet

# Widths for the tiny variants: two levels, heads of 16 channels, a narrow context.
SVD_TINY = dict(
    block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    num_attention_heads=(2, 4),
    cross_attention_dim=16,
    addition_time_embed_dim=16,
    projection_class_embeddings_input_dim=48,
    layers_per_block=1,
)
DC_TINY = dict(model_channels=32, channel_mult=[1, 2], attention_resolutions=[2, 1], num_res_blocks=1, num_head_channels=16, context_dim=64)
DC_CONFIG = "configs/inference_512_v1.0.yaml"
DC_TEXT_TOKENS = 77


def svd_unet(frames, tiny=False, seed=0):
    """(wrapped UNet, its input dict maker(batch, frames, height, width)) for SVD."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    cfg = dict(SVD_TINY) if tiny else {}
    unet = UNetSpatioTemporalConditionModel(num_frames=frames, **cfg).eval()
    unet.set_default_attn_processor()  # plain attention: exports on every torch version (loaders.load_svd)
    dim = unet.config.cross_attention_dim

    def inputs(b, f, h, w):
        g = torch.Generator().manual_seed(seed + 1)
        return {
            "sample": torch.randn(b, f, 8, h // 8, w // 8, generator=g),
            "timestep": torch.full((b,), 0.25 * 3.0),
            "encoder_hidden_states": torch.randn(b, 1, dim, generator=g),
            "added_time_ids": torch.tensor([[6.0, 127.0, 0.02]] * b),
        }

    return SvdUNet(unet).eval(), inputs


def _unzero(module, seed):
    """lvdm zero-initialises its output convolutions and every transformer's proj_out (so a fresh
    block starts as the identity): with random weights elsewhere the UNet's output would be all
    zeros and no parity check could see a wrong graph. Those weights get small random values
    (std 0.02) instead; the cost is unchanged."""
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def dynamicrafter_unet(repo, frames, tiny=False, seed=0):
    """(wrapped UNet, input maker) for DynamiCrafter 512, built from `repo`'s inference config."""
    if not repo:
        raise LoadError("DynamiCrafter needs the authors' code: set CIL_REFERENCE_REPO to a checkout holding examples/DynamiCrafter (or pass its folder)")
    root = os.path.join(repo, "examples", "DynamiCrafter") if os.path.isdir(os.path.join(repo, "examples", "DynamiCrafter")) else repo
    import_repo(root, "lvdm")
    cfg = load_yaml(os.path.join(root, DC_CONFIG))
    params = dict(cfg["model"]["params"]["unet_config"]["params"])
    params.update(use_checkpoint=False, temporal_length=frames)
    if tiny:
        params.update(DC_TINY)
    _disable_xformers()
    from lvdm.modules.networks.openaimodel3d import UNetModel

    torch.manual_seed(seed)
    unet = UNetModel(**params).eval()
    _unzero(unet, seed)
    ctx_dim = params["context_dim"]
    queries = cfg["model"]["params"].get("image_proj_stage_config", {}).get("params", {}).get("num_queries", 16)

    def inputs(b, f, h, w):
        g = torch.Generator().manual_seed(seed + 1)
        return {
            "x": torch.randn(b, 8, f, h // 8, w // 8, generator=g),
            "timestep": torch.full((b,), 500, dtype=torch.long),
            "context": torch.randn(b, DC_TEXT_TOKENS + queries * f, ctx_dim, generator=g),
            "fs": torch.full((b,), 24, dtype=torch.long),
        }

    return DynamiCrafterUNet(unet).eval(), inputs
