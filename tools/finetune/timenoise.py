"""TimeNoise (Zhao et al. 2024, §4.2; docs/design.md §3.7): during fine-tuning, corrupt the conditional
image with noise whose scale grows with the diffusion time, so the model cannot lean on it at large t.

    β_s = β_m · sigmoid(y),  y ~ N(μ(u), 1),  μ(u) = μ_max · (2·u^a − 1),  u = t / T
    c   ← c + β_s · z,       z ~ N(0, I),     one β_s per sample

(μ_max = 1 is the paper's μ(t) = 2(t/T)^a − 1; the authors' VideoCrafter1 example uses 4.)

What it corrupts, per family (the adapters below):
  * the concat conditional latent (DynamiCrafter's `c_concat`, SVD's image latents concatenated on
    the UNet input's channels): c + β_s·z;
  * the CLIP image embedding, by the chosen treatment:
      "scaled"  — emb + β'_s·z with its own draw β'_s at the same t (what the reference's
                  get_batch_input does for DynamiCrafter and VideoCrafter1; for VideoCrafter1, whose
                  image enters only through cross-attention, this IS the conditioning TimeNoise),
      "replace" — with probability `replace_prob` (0.95) per sample, emb ← z (pure noise), else kept
                  (the reference's `clip_type` 2),
      "none"    — left as it is.

Unlike the reference's DiffusionWrapper, which assigns the corrupted latent back into the caller's
`c_concat` list (so a condition dict reused across calls accumulates noise), nothing here writes to
its inputs: every adapter returns new containers and new tensors.

Randomness comes from `generator` (a torch.Generator, for reproducible runs) or, when it is None,
from torch's global generator. β_s is computed in float64.
"""

import contextlib
import math

import torch

TIME_NOISE_DEFAULTS = {"a": 5.0, "beta_m": 100.0, "timesteps": 1000, "mu_max": 1.0}
IMAGE_EMBEDDING_MODES = ("scaled", "replace", "none")
# SVD's concat condition: noise per element (the paper) or one scalar per video (the authors' SVD code).
SVD_CONDITION_NOISE = ("element", "sample")
# DynamiCrafter and VideoCrafter1 put the 77 open_clip text tokens first in c_crossattn, then the
# image tokens of the image projection (torch.cat([prompt_emb, img_emb], dim=1)).
TEXT_TOKENS = 77


class TimeNoiseError(ValueError):
    """A TimeNoise parameter or input is not usable; the message names it and what is allowed."""


def timenoise_mean(u, a=5.0, mu_max=1.0):
    """μ(u) = μ_max·(2·u^a − 1) for u = t/T (a float or a tensor)."""
    return mu_max * (2.0 * u**a - 1.0)


def beta_moments(u, a=5.0, beta_m=100.0, mu_max=1.0, intervals=4000):
    """Exact mean and standard deviation of β_s at u = t/T by numerical integration over y ~ N(μ, 1)
    (composite Simpson on μ ± 12): the closed-form reference the sampler is tested against."""
    mu = timenoise_mean(float(u), a, mu_max)
    lo, h = mu - 12.0, 24.0 / intervals
    m1 = m2 = 0.0
    for k in range(intervals + 1):
        y = lo + k * h
        w = 1 if k in (0, intervals) else (4 if k % 2 else 2)
        pdf = math.exp(-0.5 * (y - mu) ** 2) / math.sqrt(2 * math.pi)
        b = beta_m / (1.0 + math.exp(-y)) if y >= 0 else beta_m * math.exp(y) / (1.0 + math.exp(y))
        m1 += w * pdf * b
        m2 += w * pdf * b * b
    m1 *= h / 3
    m2 *= h / 3
    return m1, math.sqrt(max(0.0, m2 - m1 * m1))


class TimeNoise:
    """The TimeNoise corruption, with adapters for lvdm conditioning dicts and SVD UNet inputs.

    a, beta_m, timesteps, mu_max: the distribution above (defaults: the reference's 5, 100, 1000, 1).
    image_embedding: "scaled" | "replace" | "none" (see the module docstring); replace_prob: 0.95.
    generator: a torch.Generator (seed it for reproducible runs), or None for torch's global one.
    """

    def __init__(self, a=5.0, beta_m=100.0, timesteps=1000, image_embedding="scaled", replace_prob=0.95, mu_max=1.0, generator=None):
        for name, v in (("a", a), ("beta_m", beta_m), ("mu_max", mu_max)):
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TimeNoiseError(f"TimeNoise {name}={v!r}: must be a finite number")
        if a <= 0:
            raise TimeNoiseError(f"TimeNoise a={a}: must be > 0 (μ(t) = 2(t/T)^a − 1)")
        if beta_m < 0:
            raise TimeNoiseError(f"TimeNoise beta_m={beta_m}: must be ≥ 0 (the largest noise scale)")
        if not isinstance(timesteps, int) or timesteps < 1:
            raise TimeNoiseError(f"TimeNoise timesteps={timesteps!r}: must be a positive integer (the training T)")
        if image_embedding not in IMAGE_EMBEDDING_MODES:
            raise TimeNoiseError(f"TimeNoise image_embedding={image_embedding!r}: allowed {', '.join(IMAGE_EMBEDDING_MODES)}")
        if not 0.0 <= replace_prob <= 1.0:
            raise TimeNoiseError(f"TimeNoise replace_prob={replace_prob}: must be in [0, 1]")
        self.a = float(a)
        self.beta_m = float(beta_m)
        self.timesteps = timesteps
        self.mu_max = float(mu_max)
        self.image_embedding = image_embedding
        self.replace_prob = float(replace_prob)
        self.generator = generator

    def config(self):
        """The parameters as a JSON-able dict (recorded in checkpoints and in cil-finetune.json)."""
        return {"a": self.a, "beta_m": self.beta_m, "timesteps": self.timesteps, "mu_max": self.mu_max,
                "image_embedding": self.image_embedding, "replace_prob": self.replace_prob}

    # ------------------------------------------------------------------ random draws

    def _device(self):
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _randn(self, shape, like):
        z = torch.randn(shape, generator=self.generator, device=self._device(), dtype=torch.float32)
        return z.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)

    def fraction(self, t):
        """u = t/T as a float64 CPU tensor of shape [B] (t: integer timesteps, tensor or sequence)."""
        t = torch.as_tensor(t)
        if t.dim() != 1:
            raise TimeNoiseError(f"TimeNoise: t must be a 1-D batch of timesteps, got shape {tuple(t.shape)}")
        return t.detach().to("cpu", torch.float64) / self.timesteps

    def sample_beta(self, t=None, *, u=None):
        """One β_s per sample: float64 CPU tensor [B]. Give integer timesteps `t` (u = t/T) or the
        fractions `u` directly (SVD's EDM time: u = σ/σ_max, as the reference)."""
        if (t is None) == (u is None):
            raise TimeNoiseError("TimeNoise.sample_beta: give exactly one of t (timesteps) or u (= t/T)")
        u = self.fraction(t) if u is None else torch.as_tensor(u).detach().to("cpu", torch.float64).reshape(-1)
        z = torch.randn(u.shape, generator=self.generator, device=self._device(), dtype=torch.float64).cpu()
        return self.beta_m * torch.sigmoid(timenoise_mean(u, self.a, self.mu_max) + z)

    # ------------------------------------------------------------------ corruption (never in place)

    def corrupt(self, cond, beta, shared_dims=()):
        """cond + β·z as a new tensor, β [B] broadcast per sample. `shared_dims`: axes along which z
        is the same (e.g. SVD's frame axis: one image's noise, repeated for every frame)."""
        if cond.shape[0] != beta.shape[0]:
            raise TimeNoiseError(f"TimeNoise: condition batch {cond.shape[0]} but {beta.shape[0]} β values")
        zshape = [1 if d in shared_dims else s for d, s in enumerate(cond.shape)]
        z = self._randn(zshape, cond)
        b = beta.to(device=cond.device, dtype=z.dtype).reshape([-1] + [1] * (cond.dim() - 1))
        return cond + b * z

    def treat_image_embedding(self, emb, t=None, *, u=None):
        """The chosen treatment of image-embedding tokens [B, N, D]; a new tensor (or `emb` itself for "none")."""
        if self.image_embedding == "none":
            return emb
        if self.image_embedding == "scaled":
            return self.corrupt(emb, self.sample_beta(t, u=u))
        b = emb.shape[0]
        draw = torch.rand(b, generator=self.generator, device=self._device(), dtype=torch.float64).cpu()
        replace = (draw < self.replace_prob).to(emb.device).reshape([-1] + [1] * (emb.dim() - 1))
        return torch.where(replace, self._randn(emb.shape, emb), emb)

    # ------------------------------------------------------------------ adapters

    def lvdm(self, cond, t, text_tokens=TEXT_TOKENS):
        """DynamiCrafter / VideoCrafter1 conditioning dict {'c_concat': [latent [B,C,F,h,w]],
        'c_crossattn': [text ⧺ image tokens [B, 77+N, D]], …} → a new dict: c_concat[0] + β_s·z
        (z per element, as the reference), the image tokens after the first `text_tokens` by the
        chosen treatment. Other keys and list entries are passed through untouched."""
        if not isinstance(cond, dict):
            raise TimeNoiseError(f"TimeNoise.lvdm: cond must be a dict with 'c_concat'/'c_crossattn', got {type(cond).__name__}")
        out = dict(cond)
        concat = cond.get("c_concat")
        if concat:
            concat = list(concat)
            concat[0] = self.corrupt(concat[0], self.sample_beta(t))
            out["c_concat"] = concat
        cross = cond.get("c_crossattn")
        if cross and self.image_embedding != "none":
            cross = list(cross)
            ctx = cross[0]
            if ctx.dim() != 3 or ctx.shape[1] <= text_tokens:
                raise TimeNoiseError(f"TimeNoise.lvdm: c_crossattn[0] has shape {tuple(ctx.shape)}; expected [B, {text_tokens} text + N image tokens, D]")
            img = self.treat_image_embedding(ctx[:, text_tokens:], t)
            cross[0] = torch.cat([ctx[:, :text_tokens], img], dim=1)
            out["c_crossattn"] = cross
        if not concat and not (cross and self.image_embedding != "none"):
            raise TimeNoiseError("TimeNoise.lvdm: cond has neither a c_concat latent nor (with an image-embedding treatment) c_crossattn image tokens: nothing to corrupt")
        return out

    def svd(self, sample, encoder_hidden_states, sigma, latent_channels=4, sigma_max=700.0, added_time_ids=None, set_noise_aug=True, condition_noise="element"):
        """SVD UNet inputs → new (sample, encoder_hidden_states, added_time_ids).

        sample [B, F, 2C, h, w]: the scaled noisy latents ⧺ the conditional image latents on the
        channel axis (channels C… 2C−1), as diffusers' UNetSpatioTemporalConditionModel takes them.
        The image latents get β_s·z, u = σ/σ_max as the reference's EDM time, with
        condition_noise "element": z per latent element, one per video repeated over frames (the
        paper's c + β_s·z; the reference adds its noise before repeating the latent per frame), or
        "sample": one scalar z per video (what the CIL authors' SVD training code draws:
        randn([B, 1, 1, 1, 1]), a uniform shift of the latent rather than a corruption of it).
        encoder_hidden_states [B, 1, D]: the CLIP image embedding, by the chosen treatment.
        added_time_ids [B, 3] (fps, motion bucket, noise_aug_strength): with set_noise_aug, the
        third column becomes β_s, as the reference conditions the UNet on the noise it added."""
        if sample.dim() != 5 or sample.shape[2] <= latent_channels:
            raise TimeNoiseError(f"TimeNoise.svd: sample has shape {tuple(sample.shape)}; expected [B, F, {latent_channels} + image-latent channels, h, w]")
        u = torch.as_tensor(sigma).detach().to("cpu", torch.float64).reshape(-1) / float(sigma_max)
        if u.numel() == 1 and sample.shape[0] > 1:
            u = u.expand(sample.shape[0]).clone()
        if condition_noise not in SVD_CONDITION_NOISE:
            raise TimeNoiseError(f"TimeNoise.svd: condition_noise={condition_noise!r}; allowed {', '.join(SVD_CONDITION_NOISE)}")
        beta = self.sample_beta(u=u)
        noisy, image = sample[:, :, :latent_channels], sample[:, :, latent_channels:]
        image = self.corrupt(image, beta, shared_dims=(1,) if condition_noise == "element" else (1, 2, 3, 4))
        new_sample = torch.cat([noisy, image], dim=2)
        ehs = self.treat_image_embedding(encoder_hidden_states, u=u)
        ids = added_time_ids
        if ids is not None and set_noise_aug:
            ids = torch.cat([ids[:, :2], beta.to(device=ids.device, dtype=ids.dtype).reshape(-1, 1)], dim=1)
        return new_sample, ehs, ids

    @contextlib.contextmanager
    def patch_lvdm_apply_model(self, model, text_tokens=TEXT_TOKENS):
        """Within the block, `model.apply_model(x_noisy, t, cond, **kw)` (lvdm's LatentDiffusion: the
        one place the training loss feeds the condition to the network) sees the TimeNoise-corrupted
        condition for its own t. The model's code is not edited; the instance attribute is removed
        on exit, so sampling and logging outside the block see the clean condition."""
        original = model.apply_model
        if "apply_model" in vars(model):
            raise TimeNoiseError("TimeNoise.patch_lvdm_apply_model: model.apply_model is already patched")

        def apply_model(x_noisy, t, cond, *args, **kwargs):
            if isinstance(cond, dict):
                cond = self.lvdm(cond, t, text_tokens)
            return original(x_noisy, t, cond, *args, **kwargs)

        model.apply_model = apply_model
        try:
            yield model
        finally:
            del model.apply_model
