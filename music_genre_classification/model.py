"""Networks that map log-mel crops [batch, 1, n_mels, columns] to genre logits, and per-clip averaging."""

import torch
from torch import nn

from music_genre_classification.spectrogram import clip_crops


class GenreCNN(nn.Module):
    """conv -> BatchNorm -> ReLU -> max-pool blocks, global average+max pooling, dropout, linear."""

    def __init__(self, n_genres: int, channels: list[int] = (32, 64, 128, 256), dropout: float = 0.3):
        super().__init__()
        blocks, last = [], 1
        for width in channels:
            blocks += [nn.Conv2d(last, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool2d(2))
            last = width
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * last, n_genres))

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
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


def clip_probabilities(net: nn.Module, specs: list[torch.Tensor], crop: int, hop: int) -> torch.Tensor:
    """Genre probabilities per clip [n_clips, n_genres]: softmax averaged over crops covering each clip."""
    crops = [clip_crops(spec, crop, hop) for spec in specs]
    device = next(net.parameters()).device
    probs = net(torch.cat(crops).to(device)).softmax(dim=1)
    return torch.stack([p.mean(dim=0) for p in probs.split([len(c) for c in crops])])
