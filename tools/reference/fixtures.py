"""Reference fixtures for shared/ and cli/ tests, produced by RUNNING the authors' code.

    python -m tools.reference.fixtures --repo $CIL_REFERENCE_REPO --out test/fixtures/reference

The authors' code (thu-ml/cond-image-leakage, examples/DynamiCrafter and examples/SVD) is imported
from --repo at run time, never copied; only the numbers it computes are written (JSON, committed in
test/fixtures/reference, described by the README.md written beside them). Each schedule is
computed twice: as the reference computes it (float32 buffers) and by the same code with float64
buffers (see `_buffers`), so a float64 implementation can be held to ~1e-12 and float32 to ~1e-6.

What runs, per file:
  dynamicrafter_50steps_M1000.json  lvdm LatentDiffusion.__init__ (register_schedule with
      rescale_zero_terminal_snr, scale_arr) from configs/inference_512_v1.0.yaml, its
      DDIMSampler.make_schedule (make_ddim_timesteps, make_ddim_sampling_parameters), the
      per-index values p_sample_ddim reads, and get_sqrt_alpha_t_bar for Analytic-Init.
  dynamicrafter_ddim_grid.json      the same sampler for several start times M and step counts.
  svd_25steps_sigmamax700.json      the SVD EulerDiscreteScheduler (examples/SVD/svd/schedulers) from
      schedulers/scheduler_config700.json: set_timesteps, scale_model_input and step on probes.
  timenoise_moments.json            DynamiCrafter's TimeNoise (lvdm/models/ddpm3d.py get_beta_s):
      mean/std of beta_s by Gauss-Hermite quadrature over its own sampler (torch.randn patched to
      return the nodes) and, as a check, moments of 10^6 seeded draws per t.

Harness patches (the authors' code is used as is otherwise):
  - DDIMSampler.register_buffer moves every tensor to CUDA; here it only sets the attribute (CPU).
  - lvdm's utils/utils.py imports cv2 (for image helpers these paths never call); where OpenCV is
    not installed an empty stand-in module is registered.
  - The UNet, first-stage and conditioning models are torch.nn.Identity: only the schedule code of
    LatentDiffusion.__init__ is exercised.
"""
import argparse
import contextlib
import importlib
import importlib.machinery
import json
import os
import sys
import types

import numpy as np

DC_CONFIG = "configs/inference_512_v1.0.yaml"
SVD_CONFIG = "schedulers/scheduler_config{}.json"
TIMENOISE_T = (0, 100, 250, 500, 750, 900, 999)
TIMENOISE_A, TIMENOISE_BETA_M = 5, 100
TIMENOISE_SEED, TIMENOISE_DRAWS = 20240917, 1_000_000
QUADRATURE_NODES = 200
GRID_M = (1000, 945, 940, 800, 500)  # 945: the spurious trailing −1 of uniform_trailing (ddim.ts)
GRID_STEPS = (10, 25, 50, 100)
TRCOV_D = (0.0, 0.5, 1.0)


class FixtureError(Exception):
    pass


# ---------------------------------------------------------------- importing the authors' code

def _import_from(root, modules):
    """Imports `modules` with `root` first on sys.path. lvdm and utils exist in several examples of
    the repository under the same names, so earlier imports of them are dropped first."""
    if not os.path.isdir(root):
        raise FixtureError(f"{root}: not found (is --repo the cond-image-leakage checkout?)")
    for name in list(sys.modules):
        if name.split(".")[0] in ("lvdm", "utils", "svd"):
            del sys.modules[name]
    try:
        importlib.import_module("cv2")
    except ImportError:
        # utils/utils.py imports cv2 at the top for helpers unused here (see module doc).
        stub = types.ModuleType("cv2")
        stub.__spec__ = importlib.machinery.ModuleSpec("cv2", None)
        sys.modules["cv2"] = stub
    sys.path.insert(0, root)
    try:
        return [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(root)


@contextlib.contextmanager
def _buffers(dtype_name):
    """float32: the authors' code untouched. float64: the same code with float64 buffers — their
    code names torch.float32 explicitly (to_torch partials, .to(dtype=torch.float32)), so that name
    is pointed at float64 and the default dtype (torch.full, torch.Tensor) set to float64."""
    import torch
    if dtype_name == "float32":
        yield torch.float32
        return
    saved, default = torch.float32, torch.get_default_dtype()
    torch.float32 = torch.float64
    torch.set_default_dtype(torch.float64)
    try:
        yield torch.float64
    finally:
        torch.float32 = saved
        torch.set_default_dtype(default)


def _floats(x):
    """A tensor / array / scalar as JSON numbers (float32 values exactly, as doubles); null where
    the reference computes NaN or ±inf (JSON has neither)."""
    import torch
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x)
    if a.dtype.kind in "iu":
        return a.tolist()
    a = a.astype(np.float64)
    return np.where(np.isfinite(a), a, None).tolist() if not np.isfinite(a).all() else a.tolist()


# ---------------------------------------------------------------- DynamiCrafter (lvdm DDIM)

def _dynamicrafter_model(repo):
    """LatentDiffusion from the authors' inference config, networks replaced by Identity."""
    from omegaconf import OmegaConf
    root = os.path.join(repo, "examples", "DynamiCrafter")
    inference, ddim = _import_from(root, ["lvdm.models.ddpm3dInference", "lvdm.models.samplers.ddim"])
    params = OmegaConf.load(os.path.join(root, DC_CONFIG)).model.params
    identity = {"target": "torch.nn.Identity"}
    params.unet_config = OmegaConf.create({"target": "torch.nn.Identity", "params": {"temporal_length": params.unet_config.params.temporal_length}})
    params.first_stage_config = identity
    params.cond_stage_config = identity
    kwargs = {k: v for k, v in params.items() if k not in ("img_cond_stage_config", "image_proj_stage_config")}
    # DDIMSampler.register_buffer moves tensors to CUDA; on CPU it only needs to set them.
    ddim.DDIMSampler.register_buffer = lambda self, name, attr: setattr(self, name, attr)
    return (lambda: inference.LatentDiffusion(**kwargs)), ddim.DDIMSampler, dict(params)


def _ddim_tables(sampler_cls, model, steps, start, eta, spacing, per_index):
    import torch
    s = sampler_cls(model)
    s.make_schedule(ddim_num_steps=steps, ddim_discretize=spacing, ddim_eta=eta, verbose=False, ddpm_from=start)
    out = {k: _floats(getattr(s, k)) for k in ("ddim_timesteps", "ddim_alphas", "ddim_alphas_prev", "ddim_sigmas", "ddim_sqrt_one_minus_alphas", "ddim_scale_arr", "ddim_scale_arr_prev")}
    if per_index:
        # The values p_sample_ddim forms at each index: torch.full of the table entries (default
        # dtype), √(1 − a_prev − σ²) of the direction term and the pred_x0 rescale ratio.
        size = (1, 1, 1, 1, 1)
        cols = {"a_t": [], "a_prev": [], "sigma_t": [], "dir": [], "rescale": []}
        dtype = None
        for index in range(len(s.ddim_timesteps)):
            a_t = torch.full(size, s.ddim_alphas[index])
            a_prev = torch.full(size, s.ddim_alphas_prev[index])
            sigma_t = torch.full(size, s.ddim_sigmas[index])
            scale_t = torch.full(size, s.ddim_scale_arr[index])
            prev_scale_t = torch.full(size, s.ddim_scale_arr_prev[index])
            dtype = str(a_t.dtype)
            for k, v in (("a_t", a_t), ("a_prev", a_prev), ("sigma_t", sigma_t), ("dir", (1. - a_prev - sigma_t ** 2).sqrt()), ("rescale", prev_scale_t / scale_t)):
                cols[k].append(float(v.reshape(())))
        out["effective_per_index"] = {
            "dtype": dtype, "a_t": cols["a_t"], "a_prev": cols["a_prev"], "sigma_t": cols["sigma_t"],
            "dir_xt_coef_sqrt_1_minus_a_prev_minus_sigma2": cols["dir"],
            "dir_xt_coef_nonfinite_indices": [i for i, v in enumerate(cols["dir"]) if not np.isfinite(v)],
            "pred_x0_rescale_prev_scale_over_scale": cols["rescale"],
        }
    return out


def _analytic_init(model, m):
    """Analytic-Init's coefficients as scripts/evaluation/inference.py forms them at start M."""
    import torch
    sqrt_alpha_t = model.get_sqrt_alpha_t_bar(torch.zeros(1, 1), torch.tensor([m - 1]))
    alpha_t = sqrt_alpha_t ** 2
    return float(sqrt_alpha_t.reshape(())), {str(tr): float(torch.sqrt(1 - alpha_t + alpha_t * tr).reshape(())) for tr in TRCOV_D}


def dynamicrafter_fixtures(repo):
    make_model, sampler_cls, params = _dynamicrafter_model(repo)
    main = {
        "what": "DynamiCrafter 320x512 schedule, DDIM 50 steps, start M=1000, eta=1.0, uniform_trailing, produced by running the authors' reference sampler",
        "array_order": "ascending timestep (index 0 = smallest t); the sampler walks it backwards",
        "variants": "float32 = as the reference computes (float32 buffers); float64 = the same code with float64 buffers",
    }
    grid = {
        "what": f"DynamiCrafter DDIM tables (eta=1.0, uniform_trailing) from the authors' DDIMSampler.make_schedule for start M in {list(GRID_M)} and steps in {list(GRID_STEPS)}, with Analytic-Init coefficients per M",
        "array_order": main["array_order"],
        "variants": main["variants"],
        "config": {k: params[k] for k in ("linear_start", "linear_end", "timesteps", "rescale_betas_zero_snr", "parameterization", "use_dynamic_rescale", "base_scale")},
        "cases": [],
        "analytic_init": {},
    }
    ddim = {}
    for variant in ("float64", "float32"):
        with _buffers(variant):
            model = make_model()
            if variant == "float64":
                main["alphas_cumprod_float64"] = _floats(model.alphas_cumprod)
                main["scale_arr_float64"] = _floats(model.scale_arr)
                sqrt_a, by_tr = _analytic_init(model, 1000)
                main["analytic_init_M1000"] = {"sqrt_alpha_t": sqrt_a, "sigma_p_by_trCov_d": by_tr}
                for m in GRID_M:
                    sqrt_a, by_tr = _analytic_init(model, m)
                    grid["analytic_init"][str(m)] = {"sqrt_alpha_t": sqrt_a, "sigma_p_by_trCov_d": by_tr}
            ddim[variant] = _ddim_tables(sampler_cls, model, 50, 1000, 1.0, "uniform_trailing", per_index=True)
            for m in GRID_M:
                for steps in GRID_STEPS:
                    t = _ddim_tables(sampler_cls, model, steps, m, 1.0, "uniform_trailing", per_index=False)
                    case = next((c for c in grid["cases"] if c["M"] == m and c["steps"] == steps), None)
                    if case is None:
                        case = {"M": m, "steps": steps}
                        grid["cases"].append(case)
                    case[variant] = t
    main["ddim"] = ddim
    return main, grid


# ---------------------------------------------------------------- SVD (their EulerDiscreteScheduler)

def svd_fixture(repo, sigma_max=700, steps=25):
    import torch
    root = os.path.join(repo, "examples", "SVD")
    (mod,) = _import_from(root, ["svd.schedulers.scheduling_euler_discrete"])
    with open(os.path.join(root, SVD_CONFIG.format(sigma_max)), encoding="utf-8") as f:
        config = json.load(f)
    out = {"what": f"SVD EulerDiscreteScheduler, Karras sigmas, sigma_max={sigma_max} (baseline config), {steps} steps, produced by running the authors' reference scheduler"}
    for variant in ("float64", "float32"):
        with _buffers(variant) as dtype:
            s = mod.EulerDiscreteScheduler.from_config(config)
            s.set_timesteps(steps)
            timesteps = s.timesteps.clone()
            rows = []
            for i, t in enumerate(timesteps):
                # step() is linear in (model_output, sample): probe [sample 1, output 0] gives the
                # sample coefficient and c_skip, [0, 1] the model-output coefficient and c_out.
                c_in = s.scale_model_input(torch.ones(1, dtype=dtype), t)
                r = s.step(torch.tensor([0.0, 1.0], dtype=dtype), t, torch.tensor([1.0, 0.0], dtype=dtype))
                rows.append({
                    "i": i, "timestep": float(t), "sigma": float(s.sigmas[i]), "sigma_next": float(s.sigmas[i + 1]),
                    "c_in": float(c_in[0]), "c_out": float(r.pred_original_sample[1]), "c_skip": float(r.pred_original_sample[0]),
                    "prev_coef_model_output": float(r.prev_sample[1]), "prev_coef_sample": float(r.prev_sample[0]),
                })
            out[variant] = {"sigmas": _floats(s.sigmas), "timesteps": _floats(timesteps), "init_noise_sigma": float(s.init_noise_sigma),
                            "dtype": str(s.sigmas.dtype), "per_step": rows}
            if variant == "float32":
                out["config"] = {k: v for k, v in s.config.items() if not k.startswith("_")}
    return out


# ---------------------------------------------------------------- TimeNoise (their training code)

def timenoise_fixture(repo):
    import torch
    from numpy.polynomial.hermite_e import hermegauss
    (ddpm3d,) = _import_from(os.path.join(repo, "examples", "DynamiCrafter"), ["lvdm.models.ddpm3d"])
    nodes, weights = hermegauss(QUADRATURE_NODES)
    weights = weights / np.sqrt(2 * np.pi)
    rows = []
    torch.manual_seed(TIMENOISE_SEED)
    for t in TIMENOISE_T:
        # E[f(N(0,1))] = Σ w_k f(z_k): their logit_normal_sampler draws with torch.randn, so the
        # draws are replaced by the quadrature nodes and β_s(z_k) comes from their own code.
        real_randn = torch.randn
        torch.randn = lambda n, *a, **k: torch.from_numpy(nodes.copy()) if n == QUADRATURE_NODES else real_randn(n, *a, **k)
        try:
            with _buffers("float64"):
                tt = torch.full((QUADRATURE_NODES,), t / 1000.0, dtype=torch.float64)
                beta = ddpm3d.get_beta_s(tt, a=TIMENOISE_A, beta_m=TIMENOISE_BETA_M).numpy()
                mu = float(ddpm3d.mu_t(tt[:1], a=TIMENOISE_A)[0])
        finally:
            torch.randn = real_randn
        mean = float(np.sum(weights * beta))
        std = float(np.sqrt(np.sum(weights * (beta - mean) ** 2)))
        # As training draws them (float32, its default sample count), seeded.
        draws = ddpm3d.get_beta_s(torch.full((TIMENOISE_DRAWS,), t / 1000.0), a=TIMENOISE_A, beta_m=TIMENOISE_BETA_M).double().numpy()
        m, d = draws.mean(), draws - draws.mean()
        m2, m4 = float(np.mean(d ** 2)), float(np.mean(d ** 4))
        rows.append({"t": t, "mu": mu, "beta_s_mean": mean, "beta_s_std": std,
                     "sampled_mean": float(m), "sampled_std": float(np.sqrt(m2)),
                     "sampled_se_mean": float(np.sqrt(m2 / TIMENOISE_DRAWS)),
                     "sampled_se_std": float(np.sqrt(max(m4 - m2 * m2, 0) / (4 * m2 * TIMENOISE_DRAWS)))})
    return {
        "what": f"TimeNoise beta_s = beta_m*sigmoid(N(mu(t),1)), mu(t)=2(t/1000)^a-1, a={TIMENOISE_A}, beta_m={TIMENOISE_BETA_M}: mean and std by numerical integration "
                f"({QUADRATURE_NODES}-node Gauss-Hermite over the authors' get_beta_s, float64); sampled_* from {TIMENOISE_DRAWS} draws per t of get_beta_s (float32) after torch.manual_seed({TIMENOISE_SEED})",
        "a": TIMENOISE_A, "beta_m": TIMENOISE_BETA_M, "seed": TIMENOISE_SEED, "samples": TIMENOISE_DRAWS,
        "rows": rows,
    }


# ---------------------------------------------------------------- CLI

def write_all(repo, out, log=print):
    import torch
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    os.makedirs(out, exist_ok=True)
    main, grid = dynamicrafter_fixtures(repo)
    files = {
        "dynamicrafter_50steps_M1000.json": main,
        "dynamicrafter_ddim_grid.json": grid,
        "svd_25steps_sigmamax700.json": svd_fixture(repo),
        "timenoise_moments.json": timenoise_fixture(repo),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(data, f, allow_nan=False)
            f.write("\n")
        log(f"wrote {os.path.join(out, name)}")
    return list(files)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tools.reference.fixtures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", default=os.environ.get("CIL_REFERENCE_REPO"), help="the authors' repository (default $CIL_REFERENCE_REPO)")
    ap.add_argument("--out", required=True, help="output folder (test/fixtures/reference)")
    a = ap.parse_args(argv)
    if not a.repo:
        ap.error("--repo or $CIL_REFERENCE_REPO is required")
    try:
        write_all(a.repo, a.out)
    except FixtureError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
