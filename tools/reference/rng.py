"""A Python port of the project's noise generator, `xoshiro128++/splitmix64/ziggurat128-v1`
(docs/rng.md; shared/src/sampler/rng.ts is the original).

It exists so the authors' reference pipelines can run on exactly the noise our worker draws: the
same seed gives the same stream, word for word, and the same float32 normals (tested against the
TypeScript generator on 10^6 values, test/reference-rng.test.ts). Plain Python integers and
floats, no numpy in the stream itself: the arithmetic is written to round exactly as the
TypeScript does (one IEEE double product per coordinate, float32 rounding on store).

`exp`/`log` are fdlibm's (tools/reference/fdlibm.py), as V8's Math.exp/Math.log: with glibc's the
tables differed in the last bit, so the doubles did (the float32 values happened not to).
"""

import math

from . import fdlibm
import struct

import numpy as np

ALGORITHM = "xoshiro128++/splitmix64/ziggurat128-v1"
MAX_SEED = 2**53 - 1

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_LAYERS = 128
_R = 3.442619855899
_V = 9.91256303526217e-3
_INV_R = 1 / _R
_TWO_POW_M24 = 1 / 16777216
_TWO_POW_M32 = 1 / 4294967296


def _tables():
    x = [0.0] * (_LAYERS + 1)
    x[0] = _V / fdlibm.exp(-0.5 * _R * _R)
    x[1] = _R
    for i in range(1, _LAYERS - 1):
        x[i + 1] = math.sqrt(-2 * fdlibm.log(_V / x[i] + fdlibm.exp(-0.5 * x[i] * x[i])))
    x[_LAYERS] = 0.0
    f = [fdlibm.exp(-0.5 * v * v) for v in x]
    return [x[i + 1] for i in range(_LAYERS)], [x[i] * _TWO_POW_M24 for i in range(_LAYERS)], f


X_NEXT, X_SCALED, F = _tables()


def splitmix64_pair(seed):
    """The two first splitmix64 outputs of `seed` as four 32-bit words (s0 low of z1, …)."""
    st = seed
    out = []
    for _ in range(2):
        st = (st + 0x9E3779B97F4A7C15) & _M64
        z = st
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        out += [z & _M32, z >> 32]
    return out


class SeedError(ValueError):
    pass


def _f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


class NormalGenerator:
    """Seeded standard normals; `fill`/`randn` write what repeated `next()` calls return, as float32."""

    def __init__(self, seed, s, drawn=0):
        self.seed = seed
        self.s = list(s)
        self.drawn = drawn

    @classmethod
    def from_seed(cls, seed):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise SeedError(f"seed {seed!r} is not allowed; a seed must be an integer 0 … {MAX_SEED} (2^53−1)")
        return cls(seed, splitmix64_pair(seed))

    @classmethod
    def from_state(cls, state):
        if state.get("algorithm") != ALGORITHM:
            raise ValueError(f"state algorithm {state.get('algorithm')!r}, expected {ALGORITHM!r}")
        return cls(int(state["seed"]), [int(v) for v in state["s"]], int(state["drawn"]))

    def state(self):
        return {"algorithm": ALGORITHM, "seed": self.seed, "s": list(self.s), "drawn": self.drawn}

    def next_uint32(self):
        """One xoshiro128++ output word (unsigned)."""
        s0, s1, s2, s3 = self.s
        r = (s0 + s3) & _M32
        result = ((((r << 7) | (r >> 25)) & _M32) + s0) & _M32
        t = (s1 << 9) & _M32
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 11) | (s3 >> 21)) & _M32
        self.s = [s0, s1, s2, s3]
        return result

    def uniform(self):
        a = self.next_uint32()
        b = self.next_uint32()
        return ((a >> 5) * 67108864 + (b >> 6)) / 9007199254740992

    def _open01(self):
        return (self.next_uint32() + 0.5) * _TWO_POW_M32

    def _normal(self):
        while True:
            w = self.next_uint32()
            if w >= 0x80000000:
                w -= 0x100000000  # signed int32
            i = w & 127
            x = ((w >> 7) + 0.5) * X_SCALED[i]  # Python's >> on a negative int is arithmetic
            if abs(x) < X_NEXT[i]:
                return x
            if i == 0:
                while True:
                    tx = -fdlibm.log(self._open01()) * _INV_R
                    ty = -fdlibm.log(self._open01())
                    if ty + ty >= tx * tx:
                        return -(_R + tx) if x < 0 else _R + tx
            y = F[i] + self._open01() * (F[i + 1] - F[i])
            if y < fdlibm.exp(-0.5 * x * x):
                return x

    def next(self):
        """One normal as a Python float (double)."""
        self.drawn += 1
        return self._normal()

    def fill(self, n):
        """The next `n` normals as a float32 numpy array (IEEE round to nearest, as Float32Array)."""
        normal = self._normal
        out = np.fromiter((normal() for _ in range(n)), dtype=np.float64, count=n).astype(np.float32)
        self.drawn += n
        return out

    def randn(self, shape):
        """A float32 array of `shape` filled in row-major order (the TypeScript `randn`)."""
        n = int(np.prod(shape)) if len(shape) else 1
        return self.fill(n).reshape(shape)


def torch_randn(gen, shape, device="cpu"):
    """`gen.randn(shape)` as a float32 torch tensor (for patching the reference's noise calls)."""
    import torch

    return torch.from_numpy(gen.randn(tuple(int(s) for s in shape))).to(device)
