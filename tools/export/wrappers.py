"""torch.nn.Modules whose forward signatures are exactly the bundle contract (docs/bundles.md).

Each wrapper is generic over the module it wraps: it only relies on the call signature the real
model has (the lvdm UNet's ``unet(x, timesteps, context=..., fs=...)``, an autoencoder's
``encode(x)`` returning a distribution with ``.mean`` and ``decode(z)``, open_clip's
``encode_with_transformer(tokens)``, diffusers' ``unet(sample, timestep, encoder_hidden_states,
added_time_ids, return_dict=False)``, ...). The real modules come from tools/export/loaders.py;
the tests pass tiny stand-ins with the same signatures (tools/export/tests/standins.py).
"""

import torch
from torch import nn

from .contract import CLIP_MEAN, CLIP_STD


class _UNetWrapper(nn.Module):
    """Holds the wrapped UNet as ``self.unet`` (its parameters export as ``unet.*``)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet


class DynamiCrafterUNet(_UNetWrapper):
    """x [B, 2C, F, h, w] (noisy latent ‖ image latent), timestep int [B], context [B, 77+T, D],
    fs int [B] → out [B, C, F, h, w] (v)."""

    def forward(self, x, timestep, context, fs):
        return self.unet(x, timestep, context=context, fs=fs)


class VideoCrafterUNet(_UNetWrapper):
    """x [B, C, F, h, w], timestep int [B], context [B, 77+T, D], fps int [B] → out [B, C, F, h, w] (ε)."""

    def forward(self, x, timestep, context, fps):
        return self.unet(x, timestep, context=context, fps=fps)


class SvdUNet(_UNetWrapper):
    """sample [B, F, 2C, h, w], timestep float [B] (c_noise), encoder_hidden_states [B, 1, D],
    added_time_ids [B, 3] → out [B, F, C, h, w] (v)."""

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids):
        out = self.unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)
        return out[0] if isinstance(out, (tuple, list)) else out


def _posterior(encoded):
    # diffusers wraps the distribution in an output object; lvdm returns it directly.
    return getattr(encoded, "latent_dist", encoded)


class VaeEncoder(nn.Module):
    """image [B, 3, H, W] in [-1, 1] → latent [B, C, h, w]: the posterior mean, unscaled."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return _posterior(self.vae.encode(image)).mean


class VaeDecoder(nn.Module):
    """latent [B, C, h, w] (unscaled) → image [B, 3, H, W] in [-1, 1].

    `temporal`: SVD's AutoencoderKLTemporalDecoder mixes frames; the batch axis is then the frames
    of one decode chunk (``decode(z, num_frames=B)``, as diffusers' decode_latents does per chunk)."""

    def __init__(self, vae, temporal=False):
        super().__init__()
        self.vae = vae
        self.temporal = temporal

    def forward(self, latent):
        out = self.vae.decode(latent, num_frames=latent.shape[0]) if self.temporal else self.vae.decode(latent)
        return getattr(out, "sample", out)


class TextEncoder(nn.Module):
    """input_ids int [B, 77] → text_embeds [B, 77, D] (open_clip: the whole sequence, as the
    reference's FrozenOpenCLIPEmbedder.encode_with_transformer returns it)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids):
        return self.encoder.encode_with_transformer(input_ids)


class ClipImageEncoder(nn.Module):
    """image [B, 3, 224, 224] in [-1, 1] → image_embeds.

    The worker resizes to 224×224; this graph maps [-1, 1] to [0, 1] and applies CLIP's
    normalisation, then runs `encode` (a CLIP vision tower taking normalised pixels), then the
    optional `project` (DynamiCrafter's / VideoCrafter1's image projection, a Resampler), then
    optionally adds a token axis (SVD: [B, D] → [B, 1, D])."""

    def __init__(self, encode, project=None, mean=CLIP_MEAN, std=CLIP_STD, token_axis=False):
        super().__init__()
        self.encode = encode
        self.project = project
        self.token_axis = token_axis
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image):
        x = ((image + 1.0) * 0.5 - self.mean) / self.std
        e = self.encode(x)
        if self.project is not None:
            e = self.project(e)
        if self.token_axis:
            e = e.unsqueeze(1)
        return e


def _identity(x):
    return x


class OpenClipVisionTokens(nn.Module):
    """lvdm's FrozenOpenCLIPImageEmbedderV2 on already-normalised 224×224 pixels.

    Its encode_with_vision_transformer starts with `preprocess` (kornia bicubic resize to 224 and
    CLIP normalisation); the worker resizes and ClipImageEncoder normalises, so `preprocess` is
    bypassed for the call (kornia's antialiased resize also does not export cleanly)."""

    def __init__(self, embedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, pixels):
        self.embedder.preprocess = _identity  # an instance attribute shadows the method
        try:
            return self.embedder.encode_with_vision_transformer(pixels)
        finally:
            del self.embedder.preprocess


class HfClipImageEmbeds(nn.Module):
    """transformers' CLIPVisionModelWithProjection → image_embeds [B, D] (what SVD conditions on)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixels):
        return self.model(pixel_values=pixels).image_embeds
