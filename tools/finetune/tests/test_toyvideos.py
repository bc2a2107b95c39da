"""The synthetic clips of the real-class fine-tune (tools/finetune/toyvideos.py): deterministic per
(seed, index), in [-1, 1], in the layouts lvdm and the SVD recipe read, and a first-frame shortcut
(consecutive frames differ only where the shapes move)."""

import unittest

import torch

from tools.finetune.toyvideos import LvdmShapes, SvdShapes, clip


class ToyVideos(unittest.TestCase):
    def test_layouts_range_and_determinism(self):
        a = LvdmShapes(count=3, frames=4, height=32, width=48, seed=2)[1]
        self.assertEqual(tuple(a["video"].shape), (3, 4, 32, 48))
        self.assertTrue(-1 <= float(a["video"].min()) and float(a["video"].max()) <= 1)
        self.assertIsInstance(a["caption"], str)
        b = SvdShapes(count=3, frames=4, height=32, width=48, seed=2)[1]
        self.assertEqual(tuple(b["pixel_values"].shape), (4, 3, 32, 48))
        self.assertTrue(torch.equal(a["video"].permute(1, 0, 2, 3), b["pixel_values"]))
        self.assertFalse(torch.equal(LvdmShapes(count=3, frames=4, height=32, width=48, seed=3)[1]["video"], a["video"]))
        self.assertEqual(len(SvdShapes(count=5)), 5)

    def test_the_first_frame_is_a_shortcut_and_the_shapes_move(self):
        x = clip(0, 6, 64, 128, seed=0, speed=3.0)
        moved = (abs(x[1:] - x[:-1]).max(axis=-1) > 1e-3).mean()
        self.assertGreater(moved, 0.005, "the shapes move")
        self.assertLess(moved, 0.25, "most of every frame is the first frame's")
        still = clip(0, 3, 64, 128, seed=0, speed=0.0)
        self.assertEqual(float(abs(still[1:] - still[:1]).max()), 0.0)


if __name__ == "__main__":
    unittest.main()
