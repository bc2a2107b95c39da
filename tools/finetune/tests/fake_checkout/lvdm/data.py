"""A tiny deterministic video dataset with the item layout of lvdm's WebVid loader."""

import torch


class TinyVideos(torch.utils.data.Dataset):
    def __init__(self, count=8, frames=4, size=64, vocab=19, seed=0):
        g = torch.Generator().manual_seed(seed)
        # Smooth moving blobs: frames that differ, values in [-1, 1].
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        self.items = []
        for _ in range(count):
            cx, cy, vx, vy = (torch.rand(4, generator=g) * 2 - 1).tolist()
            color = torch.rand(3, generator=g) * 2 - 1
            video = torch.empty(3, frames, size, size)
            for f in range(frames):
                d = (xx - (cx + 0.1 * f * vx)) ** 2 + (yy - (cy + 0.1 * f * vy)) ** 2
                video[:, f] = torch.tanh(color.view(3, 1, 1) * torch.exp(-4 * d) * 2)
            caption = torch.zeros(77, dtype=torch.long)
            caption[:4] = torch.randint(2, vocab, (4,), generator=g)
            self.items.append({"video": video, "caption": caption, "frame_stride": torch.tensor(4)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]
