"""The random-draw tap of the training parity harness (tools/reference/training.py): every random
draw of either side — torch.randn / randn_like / rand / randint and Python's random.random /
randint — attributed to a *role* by the calling source line and served from a per-role stream of
our generator's Python port (tools/reference/rng.py); a draw of unknown role raises TapError.
Also the forward-hook capture of what the UNet receives, and the relative error used in the bars.
"""

import contextlib
import linecache
import math
import os
import random
import sys
import zlib

import numpy as np
import torch

from .rng import NormalGenerator


class TapError(RuntimeError):
    """A random draw the harness cannot attribute to a role, or a stream used inconsistently."""


_OURS = {"timenoise.py", "recipes.py"}
_THEIRS = {"ddpm3d.py", "ddpm3d_videocrafter_ve.py", "loss.py", "edm.py", "utils.py", "distributions.py"}


class RoleTap:
    """Routes every random draw to a per-role stream of our generator (see the module docstring).

    t: the timesteps the authors' shared_step draws; coins: fixed values of the uniform coins
    ('emb.coin': the replacement draw, 'cfg.coin': SVD's classifier-free drop), so both branches
    can be exercised. side: 'theirs' or 'ours' — on our side, draws at the authors' TimeNoise sites
    (switched off in the fork) go to their own 'off.*' streams."""

    def __init__(self, seed, t, coins=None, side="theirs"):
        self.seed = seed
        self.t = [int(v) for v in t]
        self.coins = dict(coins or {})
        self.side = side
        self.streams = {}
        self.log = []

    def _gen(self, role):
        if role not in self.streams:
            self.streams[role] = NormalGenerator.from_seed(self.seed * 7919 + zlib.crc32(role.encode()) % 1_000_003)
        return self.streams[role]

    def normals(self, role, shape):
        shape = tuple(int(s) for s in shape)
        self.log.append((role, "normal", list(shape)))
        return torch.from_numpy(self._gen(role).randn(shape))

    def uniforms(self, role, n):
        self.log.append((role, "uniform", [n]))
        if role in self.coins:
            return np.full(n, self.coins[role], dtype=np.float64)
        g = self._gen(role)
        return np.array([g.uniform() for _ in range(n)], dtype=np.float64)

    # Which role a draw plays, from the calling frames.
    def role(self, kind):
        frames = []
        f = sys._getframe(2)
        while f is not None:
            base = os.path.basename(f.f_code.co_filename)
            frames.append((base, f.f_code.co_name, f))
            f = f.f_back
        names = [(b, n) for b, n, _ in frames]

        def outer(name, files):
            return any(n == name and b in files for b, n in names)

        for base, name, frame in frames:
            if base in _OURS and self.side == "ours":
                if base == "timenoise.py" and name in ("sample_beta", "_randn", "treat_image_embedding"):
                    where = "emb" if outer("treat_image_embedding", _OURS) else "concat"
                    return f"{where}.{'beta' if name == 'sample_beta' else ('coin' if kind == 'rand' else 'z')}"
                if base == "recipes.py" and name == "loss":
                    line = _line(frame)
                    if "latent_dist.sample" in line:  # the VAE posterior (diffusers draws it with torch.randn)
                        return "cond.posterior" if "px[:, 0]" in line else "posterior"
                    if kind == "randn_like":
                        return "noise"
                    if kind == "randn":
                        return "sigma"
                    if kind == "rand":
                        return "cfg.coin"
            if base in _THEIRS:
                if name == "logit_normal_sampler":
                    where = "emb" if outer("get_batch_input", _THEIRS) else "concat"
                    return self._theirs_tn(f"{where}.beta")
                if name == "get_batch_input":
                    if kind == "randn_like":
                        return self._theirs_tn("emb.z")
                    if kind == "random":
                        return self._theirs_tn("emb.coin")
                    if kind == "rand":
                        return "uncond"
                    if kind == "randint_py":
                        return "cond_frame"
                if name == "forward" and kind == "randn_like":
                    return self._theirs_tn("concat.z")
                if name == "p_losses":
                    return "noise"
                if name == "shared_step" and kind == "randint":
                    return "t"
                if name == "sample" and base == "distributions.py":
                    return "posterior"
                if name == "add_noise":
                    return "noise" if kind == "randn_like" else "sigma"
                if name == "__call__" and base == "loss.py":
                    return "concat.z" if kind == "randn" else "cfg.coin"
                if name == "pixel2latent":
                    return "cond.posterior" if outer("__call__", {"loss.py"}) else "posterior"
        raise TapError(f"a {kind} draw with no known role; call stack (innermost first): {names[:12]}")

    def _theirs_tn(self, role):
        return f"off.{role}" if self.side == "ours" else role


def _line(frame):
    import linecache

    return linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def _shape_of(args, kwargs):
    if "size" in kwargs:
        s = kwargs["size"]
        return tuple(s) if isinstance(s, (tuple, list, torch.Size)) else (s,)
    if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)):
        return tuple(args[0])
    return tuple(int(a) for a in args)


@contextlib.contextmanager
def tapped(tap):
    """torch.randn / randn_like / rand / randint and random.random / randint through `tap`."""
    o = {n: getattr(torch, n) for n in ("randn", "randn_like", "rand", "randint")}
    o_random, o_randint = random.random, random.randint

    def _finish(x, kwargs, like=None):
        dtype = kwargs.get("dtype") or (like.dtype if like is not None else torch.float32)
        device = kwargs.get("device") or (like.device if like is not None else "cpu")
        return x.to(dtype=dtype, device=device)

    def randn(*args, **kwargs):
        return _finish(tap.normals(tap.role("randn"), _shape_of(args, {k: v for k, v in kwargs.items() if k == "size"})), kwargs)

    def randn_like(x, **kwargs):
        return _finish(tap.normals(tap.role("randn_like"), x.shape), kwargs, like=x)

    def rand(*args, **kwargs):
        shape = _shape_of(args, {k: v for k, v in kwargs.items() if k == "size"})
        n = int(np.prod(shape)) if shape else 1
        return _finish(torch.from_numpy(tap.uniforms(tap.role("rand"), n).reshape(shape)), kwargs)

    def randint(*args, **kwargs):
        role = tap.role("randint")
        shape = kwargs.get("size", args[-1] if args else None)
        n = int(np.prod(tuple(shape)))
        if role != "t" or n != len(tap.t):
            raise TapError(f"randint ({role}, {n} values): the harness provides t = {tap.t}")
        tap.log.append(("t", "fixed", [n]))
        return torch.tensor(tap.t, dtype=torch.long, device=kwargs.get("device") or "cpu")

    def py_random():
        return float(tap.uniforms(tap.role("random"), 1)[0])

    def py_randint(a, b):
        u = float(tap.uniforms(tap.role("randint_py"), 1)[0])
        return a + min(b - a, int(math.floor(u * (b - a + 1))))

    torch.randn, torch.randn_like, torch.rand, torch.randint = randn, randn_like, rand, randint
    random.random, random.randint = py_random, py_randint
    try:
        yield tap
    finally:
        for n, v in o.items():
            setattr(torch, n, v)
        random.random, random.randint = o_random, o_randint


@contextlib.contextmanager
def capture_forward(module, store):
    """Records the positional/keyword inputs of every module(...) call (the UNet's inputs)."""
    orig = module.forward

    def forward(*args, **kwargs):
        store.append((args, kwargs))
        return orig(*args, **kwargs)

    module.forward = forward
    try:
        yield store
    finally:
        del module.forward


def _err(a, b):
    a, b = a.detach().double(), b.detach().double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-30)
    return {"maxAbs": float((a - b).abs().max()), "scale": scale, "rel": float((a - b).abs().max()) / scale}
