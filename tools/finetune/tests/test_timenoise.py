"""TimeNoise (tools/finetune/timenoise.py): the β_s distribution against its closed form, the
corruption of each adapter, the 0.95 replacement rate, and that no input is ever mutated.

Expected values come from outside the code under test: β_s moments by Gauss–Hermite quadrature
(numpy), the committed reference moments (test/fixtures/reference), binomial bounds, and copies of the inputs.
Statistical checks use fixed seeds and 5 standard errors. With CIL_FINETUNE_TEST_OUT set, the sampled
moments are written to <dir>/timenoise_moments.json for test/timenoise.test.ts (Python vs TypeScript).
"""

import copy
import json
import math
import os
import unittest

import numpy as np
import torch

from tools.finetune.tests.helpers import out_dir
from tools.finetune.timenoise import TimeNoise, TimeNoiseError, beta_moments, timenoise_mean

TS = [0, 100, 250, 500, 750, 900, 999]
SAMPLES = 200_000
SEED = 20240620
SE_BOUND = 5.0
# Produced from the authors' training code by tools/reference/fixtures.py (test/fixtures/reference/README.md).
REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "test", "fixtures", "reference", "timenoise_moments.json")

_X, _W = np.polynomial.hermite.hermgauss(160)


def hermite_moments(t, a=5.0, beta_m=100.0, T=1000):
    """E[β], sd[β] for y ~ N(μ, 1) by Gauss–Hermite quadrature (independent of beta_moments' Simpson rule)."""
    mu = 2.0 * (t / T) ** a - 1.0
    y = mu + math.sqrt(2.0) * _X
    b = beta_m / (1.0 + np.exp(-y))
    m1 = float(np.sum(_W * b) / math.sqrt(math.pi))
    m2 = float(np.sum(_W * b * b) / math.sqrt(math.pi))
    return m1, math.sqrt(m2 - m1 * m1)


def sample_moments(x):
    x = x.double()
    n = x.numel()
    mean = x.mean().item()
    c = x - mean
    var = (c**2).mean().item()
    m4 = (c**4).mean().item()
    std = math.sqrt(var)
    return {"mean": mean, "std": std, "seMean": std / math.sqrt(n), "seStd": math.sqrt(max(m4 - var * var, 0.0) / (4 * var * n)), "n": n}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def assert_same(test, before, after, where):
    """Deep equality of nested dict/list/tensor structures, tensor by tensor."""
    if isinstance(before, torch.Tensor):
        test.assertTrue(torch.equal(before, after), f"{where}: tensor changed")
    elif isinstance(before, dict):
        test.assertEqual(sorted(before), sorted(after), where)
        for k in before:
            assert_same(test, before[k], after[k], f"{where}.{k}")
    elif isinstance(before, (list, tuple)):
        test.assertEqual(len(before), len(after), where)
        for i, (b, a) in enumerate(zip(before, after)):
            assert_same(test, b, a, f"{where}[{i}]")
    else:
        test.assertEqual(before, after, where)


class Distribution(unittest.TestCase):
    def test_closed_form_integration_agrees_with_quadrature(self):
        for t in TS:
            m, s = beta_moments(t / 1000)
            hm, hs = hermite_moments(t)
            self.assertAlmostEqual(m, hm, delta=1e-8 * hm, msg=f"mean at t={t}")
            self.assertAlmostEqual(s, hs, delta=1e-8 * hs, msg=f"std at t={t}")
        self.assertEqual(timenoise_mean(0.5), 2 * 0.5**5 - 1)
        self.assertEqual(timenoise_mean(1.0, mu_max=4.0), 4.0)

    def test_closed_form_matches_the_reference_moments(self):
        with open(REFERENCE, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        self.assertGreaterEqual(len(rows), 5)
        for r in rows:
            m, s = beta_moments(r["t"] / 1000)
            self.assertAlmostEqual(m, r["beta_s_mean"], delta=1e-7 * r["beta_s_mean"], msg=f"t={r['t']}")
            self.assertAlmostEqual(s, r["beta_s_std"], delta=1e-7 * r["beta_s_std"], msg=f"t={r['t']}")

    def test_sampled_moments_per_t_match_the_closed_form(self):
        tn = TimeNoise(generator=gen(SEED))
        rows = []
        for t in TS:
            beta = tn.sample_beta(torch.full((SAMPLES,), t, dtype=torch.long))
            self.assertEqual(beta.dtype, torch.float64)
            self.assertTrue(bool((beta > 0).all() and (beta < 100).all()), f"t={t}: β outside (0, β_m)")
            m = sample_moments(beta)
            hm, hs = hermite_moments(t)
            self.assertLess(abs(m["mean"] - hm), SE_BOUND * m["seMean"], f"t={t}: mean {m['mean']} vs {hm} (se {m['seMean']})")
            self.assertLess(abs(m["std"] - hs), SE_BOUND * m["seStd"], f"t={t}: std {m['std']} vs {hs} (se {m['seStd']})")
            rows.append({"t": t, **m})
        d = out_dir()
        if d:
            with open(os.path.join(d, "timenoise_moments.json"), "w", encoding="utf-8") as f:
                json.dump({"what": "β_s sampled by tools/finetune/timenoise.py (torch), a=5, β_m=100, T=1000", "seed": SEED,
                           "samples": SAMPLES, "a": 5, "betaM": 100, "timesteps": 1000, "rows": rows}, f, indent=1)

    def test_mean_moves_with_t_a_and_beta_m(self):
        # Larger t → larger β; smaller a → more noise at mid t; β_m scales β.
        lo = TimeNoise(generator=gen(1)).sample_beta(torch.full((50_000,), 100)).mean()
        hi = TimeNoise(generator=gen(1)).sample_beta(torch.full((50_000,), 999)).mean()
        self.assertGreater(hi, lo + 30)
        a1 = TimeNoise(a=1, generator=gen(2)).sample_beta(torch.full((50_000,), 500)).mean()
        a5 = TimeNoise(a=5, generator=gen(2)).sample_beta(torch.full((50_000,), 500)).mean()
        self.assertGreater(a1, a5 + 10)
        b25 = TimeNoise(beta_m=25, generator=gen(3)).sample_beta(torch.full((10,), 700))
        b100 = TimeNoise(beta_m=100, generator=gen(3)).sample_beta(torch.full((10,), 700))
        torch.testing.assert_close(b100, 4 * b25)

    def test_seeded_generator_reproduces(self):
        t = torch.arange(0, 1000, 37)
        a = TimeNoise(generator=gen(5)).sample_beta(t)
        b = TimeNoise(generator=gen(5)).sample_beta(t)
        c = TimeNoise(generator=gen(6)).sample_beta(t)
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(a, c))

    def test_bad_parameters_are_refused(self):
        for kw, msg in [({"a": 0}, "a=0"), ({"beta_m": -1}, "beta_m"), ({"timesteps": 0}, "timesteps"),
                        ({"image_embedding": "drop"}, "image_embedding"), ({"replace_prob": 1.5}, "replace_prob"), ({"a": float("nan")}, "finite")]:
            with self.assertRaisesRegex(TimeNoiseError, msg):
                TimeNoise(**kw)
        with self.assertRaisesRegex(TimeNoiseError, "1-D"):
            TimeNoise().sample_beta(torch.zeros(2, 2))
        with self.assertRaisesRegex(TimeNoiseError, "exactly one"):
            TimeNoise().sample_beta()


class Corruption(unittest.TestCase):
    def cond(self, b=3):
        g = gen(11)
        return {
            "c_concat": [torch.randn(b, 4, 4, 8, 8, generator=g)],
            "c_crossattn": [torch.randn(b, 77 + 8, 16, generator=g)],
            "other": "kept",
        }

    def test_lvdm_corrupts_concat_and_image_tokens_only(self):
        cond = self.cond()
        out = TimeNoise(generator=gen(1)).lvdm(cond, torch.tensor([999, 999, 0]))
        self.assertIsNot(out, cond)
        self.assertIsNot(out["c_concat"], cond["c_concat"])
        self.assertEqual(out["other"], "kept")
        d = out["c_concat"][0] - cond["c_concat"][0]
        self.assertTrue(bool((d.flatten(1).std(1) > 1).all()), "every sample got noise of scale β_s ≫ 1")
        text_in, text_out = cond["c_crossattn"][0][:, :77], out["c_crossattn"][0][:, :77]
        self.assertTrue(torch.equal(text_in, text_out), "the 77 text tokens are untouched")
        self.assertFalse(torch.equal(cond["c_crossattn"][0][:, 77:], out["c_crossattn"][0][:, 77:]))

    def test_concat_noise_scale_is_beta_s(self):
        # Per sample, the RMS of the added noise over 4096 elements is β_s·(1 ± ~1 %); its mean over
        # the batch estimates E[β_s] at t.
        b, t = 4000, 900
        c = torch.zeros(b, 4, 4, 8, 8)
        out = TimeNoise(generator=gen(2)).lvdm({"c_concat": [c]}, torch.full((b,), t))
        rms = out["c_concat"][0].flatten(1).pow(2).mean(1).sqrt().double()
        m, s = hermite_moments(t)
        se = s / math.sqrt(b)
        self.assertLess(abs(rms.mean().item() - m), SE_BOUND * se + 0.01 * m)
        self.assertLess(abs(rms.std().item() - s), 0.05 * s)

    def test_inputs_are_never_mutated_and_calls_do_not_accumulate(self):
        cond = self.cond()
        before = copy.deepcopy(cond)
        ids = {k: id(v) for k, v in cond.items()}
        t = torch.tensor([10, 500, 999])
        for mode in ("scaled", "replace", "none"):
            first = TimeNoise(image_embedding=mode, generator=gen(3)).lvdm(cond, t)
            second = TimeNoise(image_embedding=mode, generator=gen(3)).lvdm(cond, t)
            assert_same(self, before, cond, f"{mode}: cond after two calls")
            self.assertEqual({k: id(v) for k, v in cond.items()}, ids)
            # The same draws give the same result: the second call started from the clean condition.
            assert_same(self, first, second, f"{mode}: second call")
        sample = torch.randn(2, 4, 8, 8, 8, generator=gen(4))
        ehs = torch.randn(2, 1, 16, generator=gen(5))
        time_ids = torch.tensor([[6.0, 127.0, 0.02], [6.0, 127.0, 0.02]])
        saved = [x.clone() for x in (sample, ehs, time_ids)]
        TimeNoise(generator=gen(6)).svd(sample, ehs, torch.tensor([3.0, 300.0]), added_time_ids=time_ids)
        for x, y in zip((sample, ehs, time_ids), saved):
            self.assertTrue(torch.equal(x, y))

    def test_the_check_catches_the_reference_wrappers_in_place_update(self):
        # The reference's DiffusionWrapper does `c_concat[0] = c_concat[0] + β·z` on the caller's
        # list: the same check on that behaviour must fail (and the noise accumulates).
        cond = self.cond()
        before = copy.deepcopy(cond)

        def reference_like(c_concat, beta):
            c_concat[0] = c_concat[0] + beta.view(-1, 1, 1, 1, 1).float() * torch.randn_like(c_concat[0])

        for _ in range(2):
            reference_like(cond["c_concat"], TimeNoise(generator=gen(7)).sample_beta(torch.tensor([999, 999, 999])))
        with self.assertRaises(AssertionError):
            assert_same(self, before, cond, "reference-like")
        self.assertGreater((cond["c_concat"][0] - before["c_concat"][0]).std().item(), 50)

    def test_replacement_rate_is_within_binomial_bounds(self):
        n, p = 20_000, 0.95
        emb = torch.randn(n, 4, 8, generator=gen(8))
        out = TimeNoise(image_embedding="replace", generator=gen(9)).treat_image_embedding(emb, torch.full((n,), 500))
        same = (out == emb).flatten(1).all(1)
        replaced = (out != emb).flatten(1).all(1)
        self.assertTrue(bool((same | replaced).all()), "each sample is kept whole or replaced whole")
        k = replaced.sum().item()
        bound = SE_BOUND * math.sqrt(n * p * (1 - p))
        self.assertLess(abs(k - n * p), bound, f"{k} of {n} replaced; expected {n * p} ± {bound:.0f}")
        noise = out[replaced]
        self.assertLess(abs(noise.mean().item()), 0.01)
        self.assertLess(abs(noise.std().item() - 1), 0.01)
        # replace_prob 0: nothing replaced; 1: everything.
        self.assertTrue(torch.equal(TimeNoise(image_embedding="replace", replace_prob=0.0, generator=gen(1)).treat_image_embedding(emb, torch.zeros(n)), emb))

    def test_scaled_image_embedding_gets_its_own_beta(self):
        n, t = 4000, 999
        emb = torch.zeros(n, 16, 64)
        out = TimeNoise(image_embedding="scaled", generator=gen(10)).treat_image_embedding(emb, torch.full((n,), t))
        rms = out.flatten(1).pow(2).mean(1).sqrt().double()
        m, s = hermite_moments(t)
        self.assertLess(abs(rms.mean().item() - m), SE_BOUND * s / math.sqrt(n) + 0.01 * m)
        self.assertIs(TimeNoise(image_embedding="none").treat_image_embedding(emb, torch.zeros(n)), emb)

    def test_svd_adapter(self):
        b, f, c = 3, 5, 4
        sample = torch.randn(b, f, 2 * c, 8, 8, generator=gen(12))
        ehs = torch.randn(b, 1, 16, generator=gen(13))
        ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(b, 1)
        sigma = torch.tensor([0.5, 70.0, 700.0])
        new, ehs2, ids2 = TimeNoise(generator=gen(14)).svd(sample, ehs, sigma, latent_channels=c, added_time_ids=ids)
        self.assertTrue(torch.equal(new[:, :, :c], sample[:, :, :c]), "the noisy latents are untouched")
        d = new[:, :, c:] - sample[:, :, c:]
        for i in range(1, f):
            torch.testing.assert_close(d[:, i], d[:, 0], msg="one image's noise, repeated for every frame")
        beta = ids2[:, 2]
        self.assertTrue(torch.equal(ids2[:, :2], ids[:, :2]))
        z = d[:, 0] / beta.view(b, 1, 1, 1)
        self.assertLess(abs(z.mean().item()), 0.15)
        self.assertLess(abs(z.std().item() - 1), 0.1)
        self.assertFalse(torch.equal(ehs2, ehs))
        with self.assertRaisesRegex(TimeNoiseError, "sample has shape"):
            TimeNoise().svd(sample[:, :, :c], ehs, sigma, latent_channels=c)


class PatchApplyModel(unittest.TestCase):
    def test_patch_corrupts_what_apply_model_sees_and_leaves_the_caller_clean(self):
        class Model(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.seen = []

            def apply_model(self, x, t, cond, **kw):
                self.seen.append(cond)
                return x

        m = Model()
        cond = {"c_concat": [torch.zeros(2, 4, 2, 4, 4)], "c_crossattn": [torch.zeros(2, 80, 8)]}
        before = copy.deepcopy(cond)
        tn = TimeNoise(generator=gen(15))
        with tn.patch_lvdm_apply_model(m):
            m.apply_model(torch.zeros(1), torch.tensor([999, 999]), cond, fs=3)
            m.apply_model(torch.zeros(1), torch.tensor([999, 999]), cond, fs=3)
            with self.assertRaisesRegex(TimeNoiseError, "already patched"):
                with tn.patch_lvdm_apply_model(m):
                    pass
        self.assertNotIn("apply_model", vars(m), "the patch is removed on exit")
        assert_same(self, before, cond, "caller's cond")
        for seen in m.seen:
            self.assertGreater(seen["c_concat"][0].std().item(), 1)
        # Independent draws, each from the clean condition: similar scales, no accumulation.
        s1, s2 = (s["c_concat"][0].std().item() for s in m.seen)
        self.assertLess(max(s1, s2) / min(s1, s2), 10)
        m.apply_model(torch.zeros(1), torch.tensor([0, 0]), cond)
        assert_same(self, before, m.seen[-1], "outside the block the model sees the clean condition")


if __name__ == "__main__":
    unittest.main()
