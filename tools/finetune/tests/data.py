"""Tiny datasets for the fine-tuning tests (the SVD recipe's --dataset)."""

import torch


class TinyClips(torch.utils.data.Dataset):
    """Items {'pixel_values': [F, 3, H, W] in [-1, 1]}: smooth colour ramps that drift per frame."""

    def __init__(self, count=6, frames=4, size=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        ramp = torch.linspace(-1, 1, size)
        self.items = []
        for _ in range(count):
            phase, speed = (torch.rand(2, generator=g) * 2 - 1).tolist()
            color = torch.rand(3, 1, 1, generator=g) * 2 - 1
            clip = torch.stack([torch.tanh(color * (ramp.view(1, 1, -1) + phase + 0.2 * f * speed) + 0 * ramp.view(1, -1, 1)) for f in range(frames)])
            self.items.append({"pixel_values": clip})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
