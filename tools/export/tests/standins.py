"""Tiny stand-ins with the call signatures of the real modules (tiny widths, a few thousand weights).

Each mimics the interface the exporter's wrappers rely on, and the op kinds the real networks
export to (convolutions, group/layer norm, attention with softmax, sinusoidal embeddings,
repeat_interleave over frames — a Loop in ONNX —, nearest upsampling — Resize —, temporal mixing):

  TinyLvdmUNet            lvdm UNetModel: forward(x [b,c,t,h,w], timesteps, context=, fs= | fps=)
  TinyAutoencoderKL       lvdm AutoencoderKL: encode(x) -> distribution (.mean), decode(z)
  TinyOpenClipText        FrozenOpenCLIPEmbedder: encode_with_transformer(tokens)
  TinyOpenClipImage       FrozenOpenCLIPImageEmbedderV2: preprocess(x), encode_with_vision_transformer(x)
  TinyResampler           lvdm Resampler (image projection), with video_length like DynamiCrafter's
  TinySvdUNet             diffusers UNetSpatioTemporalConditionModel: (sample, timestep,
                          encoder_hidden_states, added_time_ids, return_dict=) -> .sample / tuple
  TinyTemporalVae         diffusers AutoencoderKLTemporalDecoder: encode(x).latent_dist.mean,
                          decode(z, num_frames=).sample (mixes the frames of a chunk)
  TinyClipVision          transformers CLIPVisionModelWithProjection: (pixel_values=) -> .image_embeds
"""

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from tools.export.build import SvdParts


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _attend(q, k, v):
    w = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


class _TinyVideoCore(nn.Module):
    """The body both stand-in UNets share: conv in with the embedding added, attention to the
    context, a temporal convolution, conv out. Built after each UNet's own embeddings, so the
    parameters are created (and randomly initialised) in the same order as always."""

    def _init_core(self, in_ch, out_ch, ch, context_dim):
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.emb_proj = nn.Linear(4 * ch, ch)
        self.norm = nn.GroupNorm(4, ch)
        self.q = nn.Linear(ch, ch)
        self.k = nn.Linear(context_dim, ch)
        self.v = nn.Linear(context_dim, ch)
        self.temporal = nn.Conv3d(ch, ch, (3, 1, 1), padding=(1, 0, 0))
        self.conv_out = nn.Conv2d(ch, out_ch, 3, padding=1)

    def _core(self, x, emb, context, b, t):
        """x: (b·t, in, h, w), emb: (b·t, 4·ch), context: (b·t, tokens, context_dim) → (b, t, out, h, w)."""
        ch = self.conv_in.out_channels
        h, w = x.shape[2:]
        y = F.silu(self.norm(self.conv_in(x) + self.emb_proj(emb)[:, :, None, None]))
        q = self.q(y.flatten(2).transpose(1, 2))
        y = y + _attend(q, self.k(context), self.v(context)).transpose(1, 2).reshape(b * t, ch, h, w)
        y5 = y.reshape(b, t, ch, h, w).permute(0, 2, 1, 3, 4)
        y = (y5 + self.temporal(y5)).permute(0, 2, 1, 3, 4).reshape(b * t, ch, h, w)
        return self.conv_out(y).reshape(b, t, -1, h, w)


class TinyLvdmUNet(_TinyVideoCore):
    def __init__(self, in_ch, out_ch, ch=8, context_dim=16):
        super().__init__()
        self.model_channels = ch
        self.time_embed = nn.Sequential(nn.Linear(ch, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, 4 * ch))
        self.cond_embed = nn.Sequential(nn.Linear(ch, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, 4 * ch))
        self._init_core(in_ch, out_ch, ch, context_dim)

    def forward(self, x, timesteps, context=None, features_adapter=None, fs=None, fps=None):
        b, _, t, h, w = x.shape
        ch = self.model_channels
        emb = self.time_embed(timestep_embedding(timesteps, ch))
        cond = fs if fs is not None else fps
        emb = emb + self.cond_embed(timestep_embedding(cond, ch))
        context = context.repeat_interleave(repeats=t, dim=0)
        emb = emb.repeat_interleave(repeats=t, dim=0)
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w)
        return self._core(y, emb, context, b, t).permute(0, 2, 1, 3, 4)


class DiagonalGaussian:
    def __init__(self, moments):
        self.mean, self.logvar = torch.chunk(moments, 2, dim=1)

    def mode(self):
        return self.mean

    def sample(self):
        return self.mean + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mean)


def _encoder(c):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.SiLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
        nn.Conv2d(8, 2 * c, 3, stride=2, padding=1),
    )


def _decoder(c):
    up = lambda: nn.Upsample(scale_factor=2, mode="nearest")  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), up(), nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), up(),
        nn.Conv2d(8, 8, 3, padding=1), nn.GroupNorm(4, 8), nn.SiLU(), up(), nn.Conv2d(8, 3, 3, padding=1), nn.Tanh(),
    )


class TinyAutoencoderKL(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.encoder = _encoder(c)
        self.decoder = _decoder(c)

    def encode(self, x):
        return DiagonalGaussian(self.encoder(x))

    def decode(self, z):
        return self.decoder(z)


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, 2)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x, attn_mask=None):  # LND, as open_clip's ResidualAttentionBlock
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TinyOpenClipText(nn.Module):
    def __init__(self, vocab, d=16, ctx=77):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.positional_embedding = nn.Parameter(torch.randn(ctx, d) * 0.1)
        self.block = _Block(d)
        self.ln_final = nn.LayerNorm(d)
        self.register_buffer("attn_mask", torch.full((ctx, ctx), float("-inf")).triu_(1), persistent=False)

    def encode_with_transformer(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = x.permute(1, 0, 2)
        x = self.block(x, attn_mask=self.attn_mask)
        x = x.permute(1, 0, 2)
        return self.ln_final(x)


class TinyOpenClipImage(nn.Module):
    """encode_with_vision_transformer → all tokens [B, 1 + 7·7, width] (DynamiCrafter's V2 embedder)."""

    def __init__(self, width=24):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 32, stride=32, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn(50, width) * 0.1)
        self.ln = nn.LayerNorm(width)
        self.proj = nn.Linear(width, width)

    def preprocess(self, x):
        # The real one resizes (kornia) and CLIP-normalises; the export must bypass it. This one
        # would change the result if it ran, so a test notices.
        return x * 100.0

    def encode_with_vision_transformer(self, x):
        x = self.preprocess(x)
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        return self.proj(self.ln(x))


class TinyResampler(nn.Module):
    def __init__(self, embedding_dim=24, dim=16, output_dim=16, num_queries=2, video_length=None):
        super().__init__()
        n = num_queries * (video_length or 1)
        self.latents = nn.Parameter(torch.randn(1, n, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)

    def forward(self, x):
        x = self.proj_in(x)
        lat = self.latents.repeat(x.size(0), 1, 1)
        k, v = self.to_kv(torch.cat([x, lat], dim=1)).chunk(2, dim=-1)
        lat = lat + _attend(self.to_q(lat), k, v)
        return self.norm_out(self.proj_out(lat))


class TinySvdUNet(_TinyVideoCore):
    def __init__(self, in_ch=8, out_ch=4, ch=8, cross_dim=16, time_id_dim=4):
        super().__init__()
        self.ch = ch
        self.time_id_dim = time_id_dim
        self.time_embedding = nn.Sequential(nn.Linear(ch, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, 4 * ch))
        self.add_embedding = nn.Sequential(nn.Linear(3 * time_id_dim, 4 * ch), nn.SiLU(), nn.Linear(4 * ch, 4 * ch))
        self._init_core(in_ch, out_ch, ch, cross_dim)

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=True):
        batch, frames = sample.shape[:2]
        timesteps = timestep.expand(batch)
        emb = self.time_embedding(timestep_embedding(timesteps, self.ch))
        time_embeds = timestep_embedding(added_time_ids.flatten(), self.time_id_dim).reshape((batch, -1))
        emb = emb + self.add_embedding(time_embeds)
        emb = emb.repeat_interleave(frames, dim=0)
        ehs = encoder_hidden_states.repeat_interleave(frames, dim=0)
        out = self._core(sample.flatten(0, 1), emb, ehs, batch, frames)
        return SimpleNamespace(sample=out) if return_dict else (out,)


class TinyTemporalVae(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.encoder = _encoder(c)
        self.decoder = _decoder(c)
        self.time_mix = nn.Conv3d(3, 3, (3, 1, 1), padding=(1, 0, 0))

    def encode(self, x):
        return SimpleNamespace(latent_dist=DiagonalGaussian(self.encoder(x)))

    def decode(self, z, num_frames):
        img = self.decoder(z)
        n, c, h, w = img.shape
        v = img.reshape(n // num_frames, num_frames, c, h, w).permute(0, 2, 1, 3, 4)
        v = v + 0.1 * self.time_mix(v)
        return SimpleNamespace(sample=v.permute(0, 2, 1, 3, 4).reshape(n, c, h, w))


class TinyClipVision(nn.Module):
    def __init__(self, dim=16):
        super().__init__()
        self.patch = nn.Conv2d(3, 12, 32, stride=32)
        self.ln = nn.LayerNorm(12)
        self.visual_projection = nn.Linear(12, dim, bias=False)

    def forward(self, pixel_values):
        x = self.ln(self.patch(pixel_values).flatten(2).mean(-1))
        return SimpleNamespace(image_embeds=self.visual_projection(x))


# --------------------------------------------------------------------------- model assemblies

# Excerpts of the real configs' model.params (configs/inference_512_v1.0.yaml of DynamiCrafter,
# configs/inference_i2v_512_v1.0.yaml of VideoCrafter1), at stand-in size: 64×64, 4 frames.
def dynamicrafter_params(frames=4, size=64):
    return {
        "rescale_betas_zero_snr": True, "parameterization": "v", "linear_start": 0.00085, "linear_end": 0.012,
        "timesteps": 1000, "conditioning_key": "hybrid", "image_size": [size // 8, size // 8], "channels": 4,
        "scale_factor": 0.18215, "use_dynamic_rescale": True, "base_scale": 0.7,
        "unet_config": {"params": {"in_channels": 8, "out_channels": 4, "temporal_length": frames, "default_fs": 24}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
        "image_proj_stage_config": {"params": {"num_queries": 2, "video_length": frames}},
    }


def videocrafter_params(frames=4, size=64):
    return {
        "linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000, "conditioning_key": "crossattn",
        "image_size": [size // 8, size // 8], "channels": 4, "scale_factor": 0.18215, "use_scale": True, "scale_b": 0.7,
        "unet_config": {"params": {"in_channels": 4, "out_channels": 4, "temporal_length": frames}},
        "first_stage_config": {"params": {"ddconfig": {"ch_mult": [1, 2, 4, 4]}}},
    }


def lvdm_model(family, vocab, frames=4, seed=0):
    """A stand-in LatentVisualDiffusion: the attributes loaders.parts_from_lvdm reads."""
    torch.manual_seed(seed)
    dc = family == "dynamicrafter"
    return SimpleNamespace(
        model=SimpleNamespace(diffusion_model=TinyLvdmUNet(8 if dc else 4, 4)),
        first_stage_model=TinyAutoencoderKL(),
        cond_stage_model=TinyOpenClipText(vocab),
        embedder=TinyOpenClipImage(),
        image_proj_model=TinyResampler(num_queries=2 if dc else 4, video_length=frames if dc else None),
    )


def vp_parts(family, vocab, frames=4, size=64, seed=0):
    from tools.export.loaders import parts_from_lvdm

    params = dynamicrafter_params(frames, size) if family == "dynamicrafter" else videocrafter_params(frames, size)
    return parts_from_lvdm(lvdm_model(family, vocab, frames, seed), params)


def svd_parts(frames=4, seed=0):
    torch.manual_seed(seed)
    return SvdParts(
        unet=TinySvdUNet(),
        vae=TinyTemporalVae(),
        image_encoder=TinyClipVision(),
        image_mean=(0.48145466, 0.4578275, 0.40821073),
        image_std=(0.26862954, 0.26130258, 0.27577711),
        unet_config={"in_channels": 8, "out_channels": 4, "num_frames": frames},
        vae_config={"scaling_factor": 0.18215, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512]},
        scheduler_config={"sigma_min": 0.002, "sigma_max": 700.0, "prediction_type": "v_prediction"},
    )


WORDS = ["a", "the", "cat", "dog", "boat", "sea", "moves", "left", "right", "up", "down", "slowly", "camera", "pans", "zoom", "in", "out"]


def tokenizer_json():
    """A small word-level Hugging Face tokenizer.json (WordPiece without continuation pieces, as
    the demo model's: both the Rust library and tokenizers.js load it)."""
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in WORDS:
        vocab[w] = len(vocab)
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}  # noqa: E731
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    }
