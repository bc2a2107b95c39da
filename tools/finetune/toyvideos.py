"""Synthetic video clips for fine-tuning tests and toy experiments: a coloured disc and a square
moving over a smooth background, every clip determined by (seed, index).

The first frame is a strong shortcut: the background and the shapes' colours never change and the
shapes move a few pixels per frame, so a model that copies the conditioning frame into every frame
already has a low loss — the situation in which the CIL paper's conditional image leakage appears.
How far the shapes travel is set by `speed` (pixels per frame, drawn in [speed/2, speed]).

    LvdmShapes   DynamiCrafter / VideoCrafter1 items: {"video": [3, F, H, W] in [-1, 1],
                 "caption", "fps", "frame_stride"} (what lvdm's WebVid dataset yields)
    SvdShapes    SVD items: {"pixel_values": [F, 3, H, W] in [-1, 1]}
    write_videos(folder, …)  the same clips as .mp4 files (ffmpeg), for `cil stats compute`
"""

import math
import os
import subprocess

import numpy as np
import torch

CAPTIONS = ("a red ball moving", "a ball rolling to the side", "a square and a ball drifting", "shapes moving on a gradient")


def clip(index, frames, height, width, seed=0, speed=3.0):
    """One clip as float32 [F, H, W, 3] in [0, 1]."""
    rng = np.random.default_rng([seed, index])
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    ang = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(ang) * x / width + np.sin(ang) * y / height + 1) / 2
    bg = c0[None, None] * (1 - ramp[..., None]) + c1[None, None] * ramp[..., None]
    shapes = []
    for kind in ("disc", "square"):
        r = rng.uniform(0.12, 0.2) * height
        pos = np.array([rng.uniform(r, width - r), rng.uniform(r, height - r)])
        direction = rng.uniform(0, 2 * math.pi)
        vel = rng.uniform(speed / 2, speed) * np.array([math.cos(direction), math.sin(direction)])
        shapes.append((kind, r, pos, vel, rng.uniform(0, 1, 3)))
    out = np.empty((frames, height, width, 3), np.float32)
    for f in range(frames):
        img = bg.copy()
        for kind, r, pos, vel, col in shapes:
            cx, cy = pos + f * vel
            if kind == "disc":
                m = np.clip(r - np.hypot(x - cx, y - cy) + 0.5, 0, 1)
            else:
                m = np.clip(r - np.maximum(abs(x - cx), abs(y - cy)) + 0.5, 0, 1)
            img = img * (1 - m[..., None]) + col[None, None] * m[..., None]
        out[f] = img
    return out


class _Shapes(torch.utils.data.Dataset):
    def __init__(self, count=16, frames=4, height=64, width=128, seed=0, speed=3.0):
        self.count, self.frames, self.height, self.width, self.seed, self.speed = int(count), int(frames), int(height), int(width), int(seed), float(speed)

    def __len__(self):
        return self.count

    def _pixels(self, i):
        return torch.from_numpy(clip(i, self.frames, self.height, self.width, self.seed, self.speed)) * 2 - 1  # [F, H, W, 3]


class LvdmShapes(_Shapes):
    def __init__(self, count=16, frames=4, height=64, width=128, seed=0, speed=3.0, fps=8, frame_stride=3):
        super().__init__(count, frames, height, width, seed, speed)
        self.fps, self.frame_stride = int(fps), int(frame_stride)

    def __getitem__(self, i):
        return {"video": self._pixels(i).permute(3, 0, 1, 2).contiguous(), "caption": CAPTIONS[i % len(CAPTIONS)],
                "fps": self.fps, "frame_stride": self.frame_stride}


class SvdShapes(_Shapes):
    def __getitem__(self, i):
        return {"pixel_values": self._pixels(i).permute(0, 3, 1, 2).contiguous()}


def write_videos(folder, count, frames, height, width, seed=0, speed=3.0, fps=8):
    """The clips as H.264 .mp4 files (lossless-ish, crf 0) named clip-NNN.mp4; returns the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        px = (np.clip(clip(i, frames, height, width, seed, speed), 0, 1) * 255 + 0.5).astype(np.uint8)
        path = os.path.join(folder, f"clip-{i:03d}.mp4")
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
               "-i", "-", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", path]
        subprocess.run(cmd, input=px.tobytes(), check=True)
        paths.append(path)
    return paths


def first_frame_png(path, index, height, width, seed=0, speed=3.0):
    """Clip `index`'s first frame as a PNG (the conditioning image of a generation)."""
    from PIL import Image

    px = (np.clip(clip(index, 1, height, width, seed, speed)[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(px, "RGB").save(path)
    return path
