"""Networks that map log-mel crops [batch, 1, n_mels, columns] to genre logits, and per-clip averaging."""

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from music_genre_classification.spectrogram import clip_crops


class GenreCNN(nn.Module):
    """conv -> BatchNorm -> ReLU -> max-pool blocks, global average+max pooling, dropout, linear.

    `input_norm` standardises each mel band over the batch (a BatchNorm per band) before the first conv: the
    spectrograms are min-max scaled per clip, so bands differ a lot in level and spread, and the convs, shared
    across frequency, learn more easily from bands put on one scale.
    """

    def __init__(
        self,
        n_genres: int,
        channels: list[int] = (32, 64, 128, 256),
        dropout: float = 0.3,
        input_norm: bool = False,
        n_mels: int = 128,
    ):
        super().__init__()
        self.input_norm = nn.BatchNorm1d(n_mels) if input_norm else None
        blocks, last = [], 1
        for width in channels:
            blocks += [nn.Conv2d(last, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d(2))
            last = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * last, n_genres))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            crops = self.input_norm(crops.squeeze(1)).unsqueeze(1)
        maps = self.features(crops)
        pooled = torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class MelBaseline(nn.Module):
    """Time-averaged log-mel -> logistic regression (hidden=0) or a 2-layer MLP."""

    def __init__(self, n_genres: int, n_mels: int = 128, hidden: int = 0, dropout: float = 0.2):
        super().__init__()
        if hidden:
            self.head = nn.Sequential(
                nn.Linear(n_mels, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_genres)
            )
        else:
            self.head = nn.Linear(n_mels, n_genres)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(crops.mean(dim=(1, 3)))


def for_inference(net: nn.Module) -> nn.Module:
    """Eval mode with every Conv2d -> BatchNorm2d pair folded into one conv, in channels_last layout.

    The same outputs (to float rounding) about twice as fast on a CPU: one pass less over each feature map.
    """
    net = net.eval()
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            layers = list(module)
            for i in range(len(layers) - 1):
                if isinstance(layers[i], nn.Conv2d) and isinstance(layers[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(layers[i], layers[i + 1])
                    module[i + 1] = nn.Identity()
    return net.to(memory_format=torch.channels_last)


def clip_probabilities(
    net: nn.Module, specs: list[torch.Tensor], crop: int, hop: int, chunk: int = 32, clips_at_once: int = 16
) -> torch.Tensor:
    """Genre probabilities per clip [n_clips, n_genres]: softmax averaged over crops covering each clip."""
    device, per_clip = next(net.parameters()).device, []
    for first in range(0, len(specs), clips_at_once):  # a few clips at a time: memory stays flat for long tracks
        crops = [clip_crops(spec, crop, hop) for spec in specs[first : first + clips_at_once]]
        batch = torch.cat(crops).to(device)
        # a few dozen crops at a time keep a CNN's feature maps in the CPU caches
        probs = torch.cat([net(part).softmax(dim=1) for part in batch.split(chunk)])
        per_clip += [p.mean(dim=0) for p in probs.split([len(c) for c in crops])]
    return torch.stack(per_clip)
