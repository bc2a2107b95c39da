"""A tiny LatentVisualDiffusion with DynamiCrafter's training interface.

What matters for the launcher and the exporter is reproduced: the attribute layout
(model.diffusion_model, first_stage_model, cond_stage_model, embedder, image_proj_model), frozen
VAE / text / image encoders, `get_batch_input` building {'c_concat': [first-frame latent repeated
per frame], 'c_crossattn': [77 text tokens ⧺ image tokens]}, and a loss that samples its own t and
feeds the condition through `apply_model` (v-prediction on a zero-terminal-SNR-free linear schedule).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from tools.export.tests import standins as S


class DiffusionWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet

    def forward(self, x, t, c_concat=None, c_crossattn=None, fs=None):
        xc = torch.cat([x] + list(c_concat), dim=1)
        cc = torch.cat(list(c_crossattn), dim=1)
        return self.diffusion_model(xc, t, context=cc, fs=fs)


def _frozen(m):
    m.eval()
    for p in m.parameters():
        p.requires_grad = False
    return m


class LatentVisualDiffusion(nn.Module):
    def __init__(self, unet_config, vocab=19, seed=0, timesteps=1000, linear_start=0.00085, linear_end=0.012,
                 scale_factor=0.18215, image_proj_model_trainable=True, **params):
        super().__init__()
        frames = unet_config["params"]["temporal_length"]
        torch.manual_seed(seed)
        self.model = DiffusionWrapper(S.TinyLvdmUNet(8, 4))
        self.first_stage_model = _frozen(S.TinyAutoencoderKL())
        self.cond_stage_model = _frozen(S.TinyOpenClipText(vocab))
        self.embedder = _frozen(S.TinyOpenClipImage())
        self.image_proj_model = S.TinyResampler(num_queries=2, video_length=frames)
        self.image_proj_model_trainable = image_proj_model_trainable
        self.scale_factor = scale_factor
        self.num_timesteps = timesteps
        betas = torch.linspace(math.sqrt(linear_start), math.sqrt(linear_end), timesteps, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())
        self.apply_model_calls = 0

    @property
    def device(self):
        return next(self.parameters()).device

    def train(self, mode=True):
        super().train(mode)
        for m in (self.first_stage_model, self.cond_stage_model, self.embedder):
            m.eval()  # as lvdm's disabled_train
        return self

    def get_batch_input(self, batch, random_uncond):
        x = batch["video"]  # b c t h w in [-1, 1]
        b, _, t, h, w = x.shape
        with torch.no_grad():
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, 3, h, w)
            z = self.first_stage_model.encode(frames).sample() * self.scale_factor
            z = z.reshape(b, t, *z.shape[1:]).permute(0, 2, 1, 3, 4)
            text = self.cond_stage_model.encode_with_transformer(batch["caption"])
            img = F.interpolate(x[:, :, 0], size=(224, 224), mode="bilinear", align_corners=False)
            tokens = self.embedder.encode_with_vision_transformer(img / 100.0)
        img_emb = self.image_proj_model(tokens)
        cond = {
            "c_concat": [z[:, :, :1].repeat(1, 1, t, 1, 1)],
            "c_crossattn": [torch.cat([text, img_emb], dim=1)],
        }
        return z, cond, batch["frame_stride"]

    def apply_model(self, x_noisy, t, cond, **kwargs):
        self.apply_model_calls += 1
        return self.model(x_noisy, t, **cond, **kwargs)

    def shared_step(self, batch, random_uncond, **kwargs):
        z, cond, fs = self.get_batch_input(batch, random_uncond)
        t = torch.randint(0, self.num_timesteps, (z.shape[0],), device=z.device).long()
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        noise = torch.randn_like(z)
        x_noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        out = self.apply_model(x_noisy, t, cond, fs=fs.long())
        target = a.sqrt() * noise - (1 - a).sqrt() * z
        loss = F.mse_loss(out, target)
        return loss, {"train/loss": loss.detach()}
