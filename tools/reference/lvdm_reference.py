"""Runs the authors' own DynamiCrafter / VideoCrafter1 inference code on our noise.

The entry point is their script's `run_inference(args, gpu_num, gpu_no)`, with `args` parsed by
their own `get_parser()` from the flags their `inference_CIL_512.sh` passes (values shrunk to the
tiny model): model construction, checkpoint loading, image loading, conditioning, Analytic-Init,
their DDIMSampler and decoding all run as written. The harness only patches, for the duration of the
run, what cannot run here or what the comparison must control; every patch is listed in
`PATCHES[family]` and recorded in settings.json:

* CUDA → CPU (`.cuda()`, `.to('cuda')`, the sampler's `register_buffer`), CUDA autocast off;
* `torch.randn` / `torch.randn_like` → our generator (tools/reference/rng.py), enabled only after the
  checkpoint is loaded (the Resampler draws its initial queries at construction), and every draw is
  logged so the stream order is checked: x_T first, then one latent-sized draw per DDIM step;
* the VAE posterior's `.sample()` → its mean (see `_POSTERIOR_REASON`);
* VideoCrafter1: its sampler's timestep grid spans M, not always 1000 (docs/reference-differences.md §2);
* outputs captured instead of written as mp4 (`torchvision.io.write_video`), absent packages stubbed.
"""

import contextlib
import importlib.util
import os
import sys
import time
import types

import numpy as np
import torch

from .rng import NormalGenerator, torch_randn

_POSTERIOR_REASON = (
    "VAE posterior .sample() -> .mean: the reference encodes the conditioning frame with a posterior "
    "*sample* (mean + std·randn from torch's global generator, drawn for every one of the F repeated "
    "frames, only frame 0 used); our vae_encoder returns the posterior mean (the mode), as diffusers' "
    "SVD pipeline does. The lvdm VAE (Stable Diffusion kl-f8) was trained with KL weight 1e-6 (a nearly deterministic "
    "posterior), so the choice barely matters for real weights but does for a bit-level comparison "
    "(docs/reference-differences.md §8)"
)

PATCHES = {
    "common": [
        "CUDA -> CPU: Module.cuda/Tensor.cuda are no-ops and Tensor.to('cuda') stays on the CPU (the scripts hard-code CUDA; DDIMSampler.register_buffer moves buffers to CUDA)",
        "torch.cuda.amp.autocast -> nullcontext: the reference scripts sample under CUDA float16 autocast; the harness compares in float32",
        "torch.randn/torch.randn_like -> our generator (tools/reference/rng.py) after the checkpoint is loaded: x_T (Analytic-Init's eps) first, then DDIM's per-step noise, in the worker's order",
        _POSTERIOR_REASON,
        "open_clip >= 2.23 compatibility (tools/export/loaders.open_clip_compat, also applied by the exporter): sequence-first attention in the text blocks and the vision transformer, input_patchnorm=False",
        "torchvision.io.write_video captured (torchvision 0.29 no longer has it, and there is no mp4 encoder here): frames_u8.npy is the uint8 tensor their save function hands to the encoder",
    ],
    "dynamicrafter": [],
    "videocrafter": [
        "VideoCrafter1's DDIMSampler builds its 'uniform' grid over 1000 steps whatever M (docs/reference-differences.md §2): the harness passes num_ddpm_timesteps=M (ddpm_from), the paper's schedule that our worker uses (compat 'paper')",
        "decord stubbed (only used for .mp4 conditioning inputs; ours is a .png)",
    ],
}


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_REPOS = set()


def use_repo(frepo):
    """Makes `frepo` the one lvdm checkout on sys.path (DynamiCrafter and VideoCrafter1 both ship
    top-level `lvdm` and `utils` packages)."""
    for k in [k for k in sys.modules if k in ("lvdm", "utils", "funcs") or k.startswith(("lvdm.", "utils."))]:
        del sys.modules[k]
    ours = {os.path.join(frepo, "scripts", "evaluation"), frepo}
    others = {os.path.join(r, "scripts", "evaluation") for r in _REPOS} | set(_REPOS)
    sys.path[:] = [p for p in sys.path if p not in others | ours]
    _REPOS.add(frepo)
    sys.path.insert(0, frepo)


class NoiseTap:
    """Our generator behind torch.randn / torch.randn_like, with a log of every draw."""

    def __init__(self, seed):
        self.gen = NormalGenerator.from_seed(seed)
        self.enabled = False
        self.calls = []

    def randn(self, shape):
        shape = tuple(int(s) for s in shape)
        self.calls.append(list(shape))
        return torch_randn(self.gen, shape)


_MISSING = object()


@contextlib.contextmanager
def _patched(obj, name, value):
    old = getattr(obj, name, _MISSING)
    setattr(obj, name, value)
    try:
        yield old
    finally:
        if old is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


def _is_cuda(d):
    return (isinstance(d, str) and d.startswith("cuda")) or (isinstance(d, torch.device) and d.type == "cuda") or isinstance(d, int)


@contextlib.contextmanager
def cpu_only_and_noise(tap):
    """CUDA calls → CPU; torch.randn/randn_like → `tap` once `tap.enabled`."""
    orig_to = torch.Tensor.to
    orig_randn, orig_randn_like = torch.randn, torch.randn_like

    def to(self, *args, **kwargs):
        args = tuple("cpu" if i == 0 and _is_cuda(a) else a for i, a in enumerate(args))
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = "cpu"
        return orig_to(self, *args, **kwargs)

    def randn(*size, **kwargs):
        if not tap.enabled:
            return orig_randn(*size, **kwargs)
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        out = tap.randn(shape)
        return out.to(kwargs["dtype"]) if kwargs.get("dtype") is not None else out

    def randn_like(t, **kwargs):
        if not tap.enabled:
            return orig_randn_like(t, **kwargs)
        return tap.randn(t.shape).to(dtype=t.dtype)

    with contextlib.ExitStack() as st:
        st.enter_context(_patched(torch.Tensor, "to", to))
        st.enter_context(_patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
        st.enter_context(_patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
        try:  # LightningModule keeps its own .device, set by its own .cuda()
            from lightning_fabric.utilities.device_dtype_mixin import _DeviceDtypeModuleMixin

            st.enter_context(_patched(_DeviceDtypeModuleMixin, "cuda", lambda self, *a, **k: self))
        except ImportError:
            pass
        st.enter_context(_patched(torch.cuda.amp, "autocast", lambda *a, **k: contextlib.nullcontext()))
        st.enter_context(_patched(torch, "randn", randn))
        st.enter_context(_patched(torch, "randn_like", randn_like))
        yield


def _stub_modules(names):
    for n in names:
        if n not in sys.modules:
            try:
                importlib.import_module(n)
            except ImportError:
                m = types.ModuleType(n)
                m.VideoReader = None
                m.cpu = lambda *a, **k: None
                sys.modules[n] = m


def run(family, frepo, work, s, tap, log=print):
    """Runs the authors' inference for settings `s` (our settings.json) and returns the captures:
    {x_T, latent, frames (float, [F,3,H,W]), frames_u8, timesteps}."""
    from tools.export.loaders import open_clip_compat

    use_repo(frepo)
    from lvdm import distributions

    cap = {}
    prompt_dir = os.path.join(work, "prompts")
    os.makedirs(prompt_dir, exist_ok=True)
    for f in os.listdir(prompt_dir):
        os.remove(os.path.join(prompt_dir, f))
    import shutil

    shutil.copyfile(s["_image"], os.path.join(prompt_dir, "input.png"))
    with open(os.path.join(prompt_dir, "prompts.txt"), "w", encoding="utf-8") as f:
        f.write((s["prompt"] or "placeholder (the text is not used: no --text_input)") + "\n")

    def write_video(path, grid, fps=None, **kw):
        cap["frames_u8"] = grid.detach().cpu().numpy().copy()

    with contextlib.ExitStack() as st:
        st.enter_context(cpu_only_and_noise(tap))
        st.enter_context(_patched(distributions.DiagonalGaussianDistribution, "sample", lambda self, noise=None: self.mean))
        import torchvision.io

        st.enter_context(_patched(torchvision.io, "write_video", write_video))
        if family == "dynamicrafter":
            inf = _load_module("dc_inference", os.path.join(frepo, "scripts", "evaluation", "inference.py"))
            sampler_mod = importlib.import_module("lvdm.models.samplers.ddim")
            argv = [
                "--seed", str(s["seed"]), "--ckpt_path", s["_ckpt"], "--config", s["_config"],
                "--savedir", os.path.join(work, "results"), "--n_samples", "1", "--bs", "1",
                "--height", str(s["height"]), "--width", str(s["width"]),
                "--unconditional_guidance_scale", str(s["guidanceScale"]), "--ddim_steps", str(s["steps"]),
                "--ddim_eta", str(s["eta"]), "--prompt_dir", prompt_dir,
                "--video_length", str(s["frames"]), "--frame_stride", str(s["frameStride"]),
                "--timestep_spacing", "uniform_trailing", "--guidance_rescale", str(s["guidanceRescale"]),
                "--perframe_ae", "--M", str(s["start"]), "--whether_analytic_init", "1",
                "--analytic_init_path", s["_stats"],
            ] + (["--text_input"] if s["prompt"] else [])
            synth_name = "image_guided_synthesis_analytic"
        else:
            _stub_modules(["decord"])
            sys.path.insert(0, os.path.join(frepo, "scripts", "evaluation"))
            inf = _load_module("vc_inference", os.path.join(frepo, "scripts", "evaluation", "inference.py"))
            sampler_mod = importlib.import_module("lvdm.models.samplers.ddim_videocrafter")
            with open(os.path.join(prompt_dir, "prompts.txt"), "w", encoding="utf-8") as f:
                f.write(s["prompt"] + "\n")
            argv = [
                "--seed", str(s["seed"]), "--mode", "i2v", "--ckpt_path", s["_ckpt"], "--config", s["_config"],
                "--savedir", os.path.join(work, "results"), "--n_samples", "1", "--bs", "1",
                "--height", str(s["height"]), "--width", str(s["width"]),
                "--unconditional_guidance_scale", str(s["guidanceScale"]), "--ddim_steps", str(s["steps"]),
                "--ddim_eta", str(s["eta"]), "--prompt_file", os.path.join(prompt_dir, "prompts.txt"),
                "--cond_input", prompt_dir, "--fps", str(s["fps"]), "--savefps", "8",
                "--frames", str(s["frames"]), "--M", str(s["start"]), "--analytic_init_path", s["_stats"],
            ]
            synth_name = "batch_ddim_sampling"
            if not s["prompt"]:  # their prompt file cannot hold an empty line
                st.enter_context(_patched(inf, "load_prompts", lambda path: [""]))
            # Paper schedule: the grid spans M (their make_schedule always passes 1000).
            orig_mdt = sampler_mod.make_ddim_timesteps
            st.enter_context(_patched(sampler_mod, "make_ddim_timesteps", lambda ddim_discr_method, num_ddim_timesteps, num_ddpm_timesteps, verbose=True: orig_mdt(ddim_discr_method, num_ddim_timesteps, s["start"], verbose)))

        orig_load = inf.load_model_checkpoint

        def load_then_tap(model, ckpt):
            open_clip_compat(model)  # open_clip 3.x: see tools/export/loaders.py
            model = orig_load(model, ckpt)
            tap.enabled = True  # construction is over: from here on, every normal is ours
            return model

        st.enter_context(_patched(inf, "load_model_checkpoint", load_then_tap))
        orig_sample = sampler_mod.DDIMSampler.sample

        def sample(self, *a, **kw):
            cap["x_T"] = kw["x_T"].detach().cpu().numpy().copy()
            cap["calls_before_sampling"] = len(tap.calls)
            out = orig_sample(self, *a, **kw)
            cap["latent"] = out[0].detach().cpu().float().numpy().copy()
            cap["timesteps"] = [int(t) for t in np.flip(self.ddim_timesteps)]
            return out

        st.enter_context(_patched(sampler_mod.DDIMSampler, "sample", sample))
        orig_synth = getattr(inf, synth_name)

        def synth(*a, **kw):
            out = orig_synth(*a, **kw)  # b, n_samples, c, t, h, w
            cap["frames"] = out[0, 0].detach().cpu().float().permute(1, 0, 2, 3).numpy().copy()
            return out

        st.enter_context(_patched(inf, synth_name, synth))
        args = inf.get_parser().parse_args(argv)
        t0 = time.time()
        with torch.no_grad():
            inf.run_inference(args, 1, 0)
        cap["seconds"] = time.time() - t0
    return cap
