"""Stable Video Diffusion parity case: tiny random-weight diffusers/transformers classes, run through
the authors' CIL pipeline (variant "cil") or stock diffusers' StableVideoDiffusionPipeline (variant
"base"), on exactly the noise our worker draws.

`prepare(out_dir, repo, log, variant)` writes what the driver needs (the per-family interface of
tools/reference): `ckpt/` (a diffusers StableVideoDiffusionPipeline folder, plus for "cil" a CIL
fine-tune `checkpoint-step-1.ckpt` with EMA shadow weights, as the authors' inference.py loads it),
`input.png`, `stats.pt` (the authors' key names), `settings.json`, `export.json` and `reference/`.

Noise: our worker draws the noise-augmentation noise of the conditioning image first, then x_T
(gpu-worker/src/conditioning.ts svdConditioning, generate.ts). Both pipelines draw them through the
module-level `randn_tensor`, in the same order, so the harness replaces that name in the pipeline's
module with a queue of our generator's tensors (a shape check guards the order).

Harness patches (each is recorded in settings.json "patches"):
* the authors' pipeline module imports `decord` (video reading, used only when the statistics are
  estimated from a folder of videos): a stub module stands in when decord is not installed;
* the UNet class: the authors' inference.py builds the fine-tuned UNet with their copy of diffusers
  0.25's class (svd/models), whose temporal transformer broadcasts `time_context` pixel-major
  instead of batch-major, so under classifier-free guidance each pixel's temporal cross-attention
  sees the other branch's image embedding every other pixel (output depends on the batch's
  composition and order; diffusers 0.26 fixed it, Stability's sgm code was always batch-major).
  We keep the batch-independent model (the exporter refuses a UNet that is not:
  tools/export/build.py check_batch_independent), so the reference runs their pipeline with
  diffusers' own class holding the same fine-tuned EMA weights;
* Analytic-Init: the authors' estimator returns (trCov_d, E[X0]) and its caller unpacks
  (E[X0], trCov_d) (docs/reference-differences.md §4). We implement the paper's formula
  x = E[X0] + √(σ_init² + trCov_d)·z, so the reference is handed a statistics file with the two
  keys exchanged (reference/stats_paper_order.pt): after the pipeline's swap it computes the
  paper's formula. stats.pt keeps the authors' own key meaning (what our importer reads);
* the noise: `randn_tensor` in the pipeline module (above).

CPU, float32 throughout: the authors' script runs the UNet in float16 on CUDA; the comparison is
about the pipeline's arithmetic, and float32 is the precision our fp32 bundles are held to.
"""

import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
import types

import numpy as np
import torch

from .rng import NormalGenerator, torch_randn

HEIGHT, WIDTH, FRAMES = 64, 128, 6
LATENT_CHANNELS, DOWNSAMPLE = 4, 8
SEED = 20240614
STEPS = 10
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
UNET_CKPT = "checkpoint-step-1.ckpt"

# Per variant: the CIL settings of the authors' config/inference512.yaml (fps 5, motion bucket 20,
# σ_max 100 with Analytic-Init, the CIL pipeline's default noise_aug_strength 0.002) and stock
# diffusers' defaults (fps 7, motion bucket 127, noise_aug_strength 0.02, σ_max 700).
VARIANTS = {
    "cil": {"sigmaMax": 100, "fps": 5, "motionBucketId": 20, "noiseAugStrength": 0.002, "analyticInit": True, "cil": True, "scheduler": "scheduler_config100.json"},
    "base": {"sigmaMax": 700, "fps": 7, "motionBucketId": 127, "noiseAugStrength": 0.02, "analyticInit": False, "cil": False, "scheduler": "scheduler_config700.json"},
}


# Stock SVD's scheduler (stabilityai/stable-video-diffusion-img2vid scheduler/scheduler_config.json),
# the same values as the authors' schedulers/scheduler_config700.json: the base case needs no checkout.
STOCK_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "v_prediction",
    "set_alpha_to_one": False, "sigma_max": 700.0, "sigma_min": 0.002, "skip_prk_steps": True,
    "steps_offset": 1, "timestep_spacing": "leading", "timestep_type": "continuous", "trained_betas": None,
    "use_karras_sigmas": True,
}


class ReferenceSetupError(Exception):
    """The authors' checkout or a dependency the reference run needs is missing or unusable."""


def svd_root(repo):
    """The authors' examples/SVD folder: `repo` may be the repository root or that folder itself."""
    for cand in (os.path.join(repo, "examples", "SVD"), repo):
        if os.path.isfile(os.path.join(cand, "svd", "inference", "pipline_CILsvd.py")):
            return os.path.abspath(cand)
    raise ReferenceSetupError(f"{repo}: no examples/SVD/svd/inference/pipline_CILsvd.py; set CIL_REFERENCE_REPO to a thu-ml/cond-image-leakage checkout")


# ---------------------------------------------------------------------------------------- models


def _perturb(module, gen, scale):
    """Random weights everywhere: default inits leave norms at 1/0 and some layers at constants,
    which would hide a wrongly wired bias or scale."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def build_models():
    """The tiny UNet, temporal VAE and CLIP vision tower (diffusers' pipeline-test sizes, with the
    VAE at SVD's 8× downsampling and the CLIP tower at 224 px as the pipeline resizes to)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    g = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=HEIGHT // DOWNSAMPLE,
        in_channels=2 * LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=96,
        layers_per_block=2,
        cross_attention_dim=32,
        num_attention_heads=(4, 8),
        num_frames=FRAMES,
    )
    _perturb(unet, g, 0.02)
    torch.manual_seed(SEED + 1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        latent_channels=LATENT_CHANNELS,
        layers_per_block=1,
        sample_size=HEIGHT,
    )
    _perturb(vae, g, 0.02)
    torch.manual_seed(SEED + 2)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4, image_size=224, patch_size=32, intermediate_size=37)
    )
    _perturb(clip, g, 0.02)
    return unet.eval(), vae.eval(), clip.eval(), g


def write_checkpoint(ckpt, variant, log):
    """A diffusers pipeline folder; for "cil" also the fine-tune file the authors' inference.py loads
    (`state_dict` + diffusers EMAModel `ema_state`, EMA weights used)."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from diffusers.training_utils import EMAModel
    from transformers import CLIPImageProcessor

    unet, vae, clip, g = build_models()
    # The base folder carries stock SVD's scheduler (σ_max 700 = the authors' scheduler_config700.json);
    # the CIL run replaces it with scheduler_config100.json, as the authors' inference.py does.
    sched = EulerDiscreteScheduler.from_config(STOCK_SCHEDULER)
    fe = CLIPImageProcessor(
        crop_size={"height": 224, "width": 224}, size={"shortest_edge": 224}, do_center_crop=True, do_normalize=True,
        do_resize=True, do_rescale=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
    )
    pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=clip, unet=unet, scheduler=sched, feature_extractor=fe)
    pipe.save_pretrained(ckpt, safe_serialization=True)
    if variant == "cil":
        # Fine-tuned raw weights and different EMA shadow weights: the EMA ones must win.
        with torch.no_grad():
            sd = {k: v + torch.randn(v.shape, generator=g) * 0.01 for k, v in unet.state_dict().items()}
            ema = EMAModel(unet.parameters())
            ema.shadow_params = [p.detach() + torch.randn(p.shape, generator=g) * 0.01 for p in unet.parameters()]
        torch.save({"state_dict": sd, "ema_state": ema.state_dict()}, os.path.join(ckpt, UNET_CKPT))
    log(f"svd[{variant}]: checkpoint written to {ckpt}")


def write_input_png(path):
    """A smooth, structured picture: colour ramps, a soft disc and low-frequency waves."""
    from PIL import Image

    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    u, v = x / (WIDTH - 1), y / (HEIGHT - 1)
    disc = np.exp(-(((u - 0.62) / 0.18) ** 2 + ((v - 0.45) / 0.3) ** 2))
    r = 0.15 + 0.6 * u + 0.25 * disc
    gch = 0.2 + 0.5 * v + 0.2 * np.sin(2 * np.pi * (u * 1.5 + v * 0.5))
    b = 0.55 - 0.35 * u * v + 0.3 * disc * np.cos(3 * np.pi * v)
    rgb = np.clip(np.stack([r, gch, b], -1), 0, 1)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB").save(path)


def write_stats(out_dir, ref_dir):
    """stats.pt in the authors' format (Expectation_x_0 [F, C, h, w], trCov_d a 0-d tensor), and the
    key-exchanged copy the reference pipeline is given (module docstring)."""
    g = torch.Generator().manual_seed(SEED + 3)
    e = (torch.randn(FRAMES, LATENT_CHANNELS, HEIGHT // DOWNSAMPLE, WIDTH // DOWNSAMPLE, generator=g) * 0.5 + 0.1).float()
    tr = torch.tensor(0.8, dtype=torch.float32)
    torch.save({"Expectation_x_0": e, "trCov_d": tr}, os.path.join(out_dir, "stats.pt"))
    swapped = os.path.join(ref_dir, "stats_paper_order.pt")
    torch.save({"Expectation_x_0": tr, "trCov_d": e}, swapped)
    return e, tr, swapped


# ------------------------------------------------------------------------------- reference runs


def _stub_decord(patches, log):
    if importlib.util.find_spec("decord") is not None:
        return
    import transformers.utils.import_utils  # noqa: F401  (probes find_spec("decord") at import: before the stub)

    mod = types.ModuleType("decord")
    mod.__spec__ = importlib.machinery.ModuleSpec("decord", None)

    def video_reader(*_a, **_k):
        raise ReferenceSetupError("decord stub: the reference run reads statistics from a file, never videos")

    mod.VideoReader = video_reader
    sys.modules["decord"] = mod
    msg = "decord not installed: a stub module stands in (the authors' pipeline uses it only to estimate statistics from videos)"
    log(f"svd: {msg}")
    patches.append(msg)


class _NoiseQueue:
    """Stands in for `randn_tensor` in a pipeline module: hands out our generator's tensors in order."""

    def __init__(self, tensors):
        self.tensors = list(tensors)

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        if not self.tensors:
            raise AssertionError("the pipeline drew more noise than our worker does")
        t = self.tensors.pop(0)
        if tuple(shape) != tuple(t.shape):
            raise AssertionError(f"noise draw order differs: the pipeline asked for {tuple(shape)}, our next draw is {tuple(t.shape)}")
        return t.to(device=device or "cpu", dtype=dtype or torch.float32)


def _instrument(pipe, record):
    """Records x_init (prepare_latents' result), the final latent and the raw decoded frames."""
    prep, dec = pipe.prepare_latents, pipe.decode_latents

    def prepare_latents(*a, **k):
        x = prep(*a, **k)
        record["x_init"] = x.detach().float().cpu().clone()
        return x

    def decode_latents(latents, num_frames, decode_chunk_size=14):
        record["latent"] = latents.detach().float().cpu().clone()
        record["decode_chunk_size"] = int(decode_chunk_size)
        frames = dec(latents, num_frames, decode_chunk_size)
        record["frames"] = frames.detach().float().cpu().clone()  # [B, C, F, H, W], raw decoder output
        return frames

    pipe.prepare_latents = prepare_latents
    pipe.decode_latents = decode_latents


def run_reference(out_dir, repo, variant, settings, patches, log):
    from PIL import Image

    ckpt = os.path.join(out_dir, "ckpt")
    ref_dir = os.path.join(out_dir, "reference")
    image = Image.open(os.path.join(out_dir, "input.png")).convert("RGB")
    gen = NormalGenerator.from_seed(settings["seed"])
    h, w = HEIGHT // DOWNSAMPLE, WIDTH // DOWNSAMPLE
    noise = [torch_randn(gen, (1, 3, HEIGHT, WIDTH)), torch_randn(gen, (1, FRAMES, LATENT_CHANNELS, h, w))]
    queue = _NoiseQueue(noise)
    record = {}
    t0 = time.time()
    if variant == "cil":
        sd = svd_root(repo)
        if sd not in sys.path:
            sys.path.insert(0, sd)
        _stub_decord(patches, log)
        mod = importlib.import_module("svd.inference.pipline_CILsvd")
        from diffusers import UNetSpatioTemporalConditionModel
        from diffusers.training_utils import EMAModel
        from svd.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

        scheduler = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(os.path.join(sd, "schedulers", VARIANTS[variant]["scheduler"])))
        # As the authors' inference.py load_model: the fine-tune's state_dict, then its EMA weights.
        unet = UNetSpatioTemporalConditionModel.from_pretrained(ckpt, subfolder="unet", torch_dtype=torch.float32)
        ema = EMAModel(unet.parameters())
        ck = torch.load(os.path.join(ckpt, UNET_CKPT), map_location="cpu")
        unet.load_state_dict(ck["state_dict"])
        ema.load_state_dict(ck["ema_state"])
        ema.copy_to(unet.parameters())
        patches.append(
            "the fine-tuned UNet is built with diffusers' UNetSpatioTemporalConditionModel, not the authors' copy (svd/models, diffusers 0.25): "
            "theirs broadcasts time_context pixel-major, mixing the two guidance branches' image embeddings (batch-order dependent; fixed in diffusers 0.26)"
        )
        pipe = mod.StableVideoDiffusionCILPipeline.from_pretrained(ckpt, unet=unet, scheduler=scheduler, torch_dtype=torch.float32)
        mod.randn_tensor = queue
        patches.append("randn_tensor in the CIL pipeline module replaced by our generator's draws (noise augmentation, then x_T)")
        _, _, swapped = write_stats(out_dir, ref_dir)
        patches.append("Analytic-Init statistics handed to the CIL pipeline with Expectation_x_0 and trCov_d exchanged (reference/stats_paper_order.pt), so its swapped unpacking computes the paper's x = E[X0] + sqrt(sigma_init^2 + trCov_d)*z (docs/reference-differences.md §4)")
        kwargs = {"analytic_path": swapped}
    else:
        from diffusers import StableVideoDiffusionPipeline

        mod = importlib.import_module("diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion")
        pipe = StableVideoDiffusionPipeline.from_pretrained(ckpt, torch_dtype=torch.float32)
        mod.randn_tensor = queue
        patches.append("randn_tensor in diffusers' StableVideoDiffusionPipeline module replaced by our generator's draws (noise augmentation, then x_T)")
        write_stats(out_dir, ref_dir)  # unused by this variant (analyticInit false); written for the driver's uniform interface
        kwargs = {}
    pipe.set_progress_bar_config(disable=True)
    _instrument(pipe, record)
    with torch.no_grad():
        out = pipe(
            [image], height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=settings["steps"],
            min_guidance_scale=settings["minGuidanceScale"], max_guidance_scale=settings["maxGuidanceScale"],
            fps=settings["fps"], motion_bucket_id=settings["motionBucketId"], noise_aug_strength=settings["noiseAugStrength"],
            generator=torch.manual_seed(settings["seed"]), output_type="pt", **kwargs,
        )
    if queue.tensors:
        raise AssertionError(f"the pipeline drew {2 - len(queue.tensors)} of our 2 noise tensors")
    seconds = time.time() - t0
    frames = record["frames"][0].permute(1, 0, 2, 3).contiguous().numpy()  # [F, 3, H, W] in [-1, 1]
    post = out.frames[0]
    post = (post if isinstance(post, torch.Tensor) else torch.as_tensor(np.asarray(post))).float().cpu().numpy()  # [F, 3, H, W] in [0, 1]
    # The authors' save_videos_grid truncates (x*255).astype(uint8); diffusers' PIL output rounds.
    u8 = (post * 255).astype(np.uint8) if variant == "cil" else np.round(post * 255).astype(np.uint8)
    np.save(os.path.join(ref_dir, "latent.npy"), record["latent"].numpy().astype(np.float32))
    np.save(os.path.join(ref_dir, "x_init.npy"), record["x_init"].numpy().astype(np.float32))
    np.save(os.path.join(ref_dir, "frames.npy"), frames.astype(np.float32))
    np.save(os.path.join(ref_dir, "frames_u8.npy"), np.ascontiguousarray(u8.transpose(0, 2, 3, 1)))
    sched = pipe.scheduler
    info = {
        "variant": variant,
        "pipeline": type(pipe).__module__ + "." + type(pipe).__name__,
        "scheduler": type(sched).__module__ + "." + type(sched).__name__,
        "sigmas": [float(s) for s in sched.sigmas],
        "timesteps": [float(t) for t in sched.timesteps],
        "initNoiseSigma": float(sched.init_noise_sigma),
        "decodeChunkSize": record["decode_chunk_size"],
        "latentShape": list(record["latent"].shape),
        "framesShape": list(frames.shape),
        "seconds": round(seconds, 3),
        "device": "cpu",
        "dtype": "float32",
    }
    with open(os.path.join(ref_dir, "info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    log(f"svd[{variant}]: reference run {seconds:.1f} s, latent {tuple(record['latent'].shape)}, frames {frames.shape}")
    return info


# ------------------------------------------------------------------------------------ interface


def settings_for(variant):
    v = VARIANTS[variant]
    return {
        "family": "svd", "height": HEIGHT, "width": WIDTH, "frames": FRAMES, "seed": SEED, "prompt": None,
        "steps": STEPS, "start": v["sigmaMax"], "analyticInit": v["analyticInit"], "eta": None,
        "guidanceScale": None, "guidanceRescale": None, "frameStride": None, "fps": v["fps"],
        "motionBucketId": v["motionBucketId"], "noiseAugStrength": v["noiseAugStrength"],
        "minGuidanceScale": 1.0, "maxGuidanceScale": 3.0, "imageGuidanceScale": None,
        "compat": "paper", "cil": v["cil"], "patches": [],
    }


def export_args(out_dir, repo, variant):
    ckpt = os.path.abspath(os.path.join(out_dir, "ckpt"))
    args = ["--ckpt", ckpt, "--height", str(HEIGHT), "--width", str(WIDTH), "--frames", str(FRAMES)]
    if variant == "cil":
        # the authors' fine-tune flow: base folder + checkpoint-step-N.ckpt (EMA weights); diffusers'
        # UNet class (no --repo: the exporter refuses their batch-mixing copy, module docstring)
        args += ["--cil", "--unet-ckpt", os.path.join(ckpt, UNET_CKPT)]
    else:
        args += ["--no-analytic-init"]
    return {"module": "tools.export.svd", "args": args}


def prepare(out_dir, repo, log=print, variant="cil"):
    """Builds the checkpoint, runs the reference and writes the driver's files under `out_dir`."""
    if variant not in VARIANTS:
        raise ValueError(f"svd variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant == "cil":
        svd_root(repo)  # fail before building anything; the base case runs stock diffusers only
    out_dir = os.path.abspath(out_dir)
    ref_dir = os.path.join(out_dir, "reference")
    os.makedirs(ref_dir, exist_ok=True)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    write_checkpoint(os.path.join(out_dir, "ckpt"), variant, log)
    write_input_png(os.path.join(out_dir, "input.png"))
    settings = settings_for(variant)
    patches = settings["patches"]
    run_reference(out_dir, repo, variant, settings, patches, log)
    with open(os.path.join(out_dir, "settings.json"), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    with open(os.path.join(out_dir, "export.json"), "w", encoding="utf-8") as f:
        json.dump(export_args(out_dir, repo, variant), f, indent=2)
    return settings


if __name__ == "__main__":  # python -m tools.reference.svd OUT [cil|base]
    prepare(sys.argv[1], os.environ.get("CIL_REFERENCE_REPO", "/tmp/cil-ref"), variant=sys.argv[2] if len(sys.argv) > 2 else "cil")
