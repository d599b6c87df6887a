"""The other architectures of `model=`: cnn1d, crnn, lstm and resnet, with the interface of networks.py.

Each one defines `embed(crops [batch, 1, n_mels, columns])` -> [batch, dim] (its penultimate layer) and a `head`;
`CropNetwork` gives them `forward`, `crop_embeddings` and `crop_logits`, running the crops covering a clip as one
batch. Every one starts with `Bands`: MFCCs instead of log-mel when `n_mfcc` > 0, then a BatchNorm per band.
"""

import torch
from torch import nn

from music_genre_classification.data.spectrogram import crop_starts, pad_to
from music_genre_classification.models.networks import MFCC


class Bands(nn.Module):
    """[batch, 1, n_mels, columns] -> [batch, bands, columns]: optional MFCCs, each band standardised over the batch."""

    def __init__(self, n_mels: int, n_mfcc: int = 0):
        super().__init__()
        self.mfcc = MFCC(n_mels, n_mfcc) if n_mfcc else None
        self.count = n_mfcc or n_mels
        self.norm = nn.BatchNorm1d(self.count)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if self.mfcc is not None:
            crops = self.mfcc(crops)
        return self.norm(crops.squeeze(1))


def pooled(frames: torch.Tensor) -> torch.Tensor:
    """[batch, channels, time] -> [batch, 2 * channels]: mean and max over time."""
    return torch.cat([frames.mean(dim=-1), frames.amax(dim=-1)], dim=-1)


def classifier(dim: int, n_genres: int, dropout: float) -> nn.Module:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_genres))


class CropNetwork(nn.Module):
    """The shared interface for a subclass that defines `embed` and `head`."""

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(crops))

    def crop_embeddings(self, specs: torch.Tensor, crop: int, hop: int) -> torch.Tensor:
        """[clips, n_mels, columns] -> the embeddings of the crops covering each clip [clips, crops, dim]."""
        specs = pad_to(specs, crop)
        starts = crop_starts(specs.shape[-1], crop, hop)
        crops = torch.stack([specs[..., s : s + crop] for s in starts], dim=1)  # [clips, crops, n_mels, crop]
        embeddings = self.embed(crops.flatten(0, 1).unsqueeze(1))
        return embeddings.view(len(specs), len(starts), -1)

    def crop_logits(self, specs: torch.Tensor, crop: int, hop: int) -> torch.Tensor:
        return self.head(self.crop_embeddings(specs, crop, hop))


class GenreCNN1D(CropNetwork):
    """1-D convolutions over time with the mel bands as channels: conv -> BatchNorm -> ReLU -> max-pool blocks."""

    def __init__(
        self, n_genres: int, channels: list[int] = (128, 128, 256, 256), dropout: float = 0.3, n_mels: int = 128,
        n_mfcc: int = 0,
    ):  # fmt: skip
        super().__init__()
        self.bands = Bands(n_mels, n_mfcc)
        blocks, last = [], self.bands.count
        for width in channels:
            blocks += [nn.Conv1d(last, width, 3, padding=1, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            blocks.append(nn.MaxPool1d(2, ceil_mode=True))
            last = width
        self.features = nn.Sequential(*blocks)
        self.head = classifier(2 * last, n_genres, dropout)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        return pooled(self.features(self.bands(crops)))


def conv_block(inputs: int, width: int) -> list[nn.Module]:
    return [nn.Conv2d(inputs, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]


class GenreCRNN(CropNetwork):
    """2-D conv blocks (pooling frequency and time), then a bidirectional GRU over the remaining time steps."""

    def __init__(
        self, n_genres: int, channels: list[int] = (16, 32, 64, 64), hidden: int = 96, dropout: float = 0.3,
        n_mels: int = 128, n_mfcc: int = 0,
    ):  # fmt: skip
        super().__init__()
        self.bands = Bands(n_mels, n_mfcc)
        blocks, last, height = [], 1, self.bands.count
        for width in channels:
            blocks += [*conv_block(last, width), nn.MaxPool2d(2, ceil_mode=True)]
            last, height = width, -(-height // 2)
        self.features = nn.Sequential(*blocks)
        self.gru = nn.GRU(last * height, hidden, batch_first=True, bidirectional=True)
        self.head = classifier(4 * hidden, n_genres, dropout)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        maps = self.features(self.bands(crops).unsqueeze(1))  # [batch, channels, bands, time]
        steps, _ = self.gru(maps.flatten(1, 2).transpose(1, 2))  # [batch, time, 2 * hidden]
        return pooled(steps.transpose(1, 2))


class GenreLSTM(CropNetwork):
    """A bidirectional LSTM over the mel frames (every `frame_pool` columns averaged first, for speed)."""

    def __init__(
        self, n_genres: int, hidden: int = 128, layers: int = 2, frame_pool: int = 2, dropout: float = 0.3,
        n_mels: int = 128, n_mfcc: int = 0,
    ):  # fmt: skip
        super().__init__()
        self.bands = Bands(n_mels, n_mfcc)
        self.frames = nn.AvgPool1d(frame_pool, ceil_mode=True) if frame_pool > 1 else nn.Identity()
        self.lstm = nn.LSTM(
            self.bands.count, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout if layers > 1 else 0
        )
        self.head = classifier(4 * hidden, n_genres, dropout)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        steps, _ = self.lstm(self.frames(self.bands(crops)).transpose(1, 2))  # [batch, time, 2 * hidden]
        return pooled(steps.transpose(1, 2))


class Residual(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (through a 1x1 conv when the width changes), ReLU, then 2x2 max-pool."""

    def __init__(self, inputs: int, width: int):
        super().__init__()
        self.body = nn.Sequential(*conv_block(inputs, width)[:2], nn.ReLU(inplace=True), *conv_block(width, width)[:2])
        self.skip = (
            nn.Identity()
            if inputs == width
            else nn.Sequential(nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width))
        )
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.body(x) + self.skip(x)))


class GenreResNet(CropNetwork):
    """A short-chunk residual CNN (Won et al., 2020): residual blocks of 3x3 convs, each halving both axes."""

    def __init__(
        self, n_genres: int, channels: list[int] = (16, 32, 64, 64, 128, 128, 128), dropout: float = 0.3,
        n_mels: int = 128, n_mfcc: int = 0,
    ):  # fmt: skip
        super().__init__()
        self.bands = Bands(n_mels, n_mfcc)
        widths = [1, *channels]
        self.features = nn.Sequential(*(Residual(a, b) for a, b in zip(widths, widths[1:])))
        self.head = classifier(2 * widths[-1], n_genres, dropout)

    def embed(self, crops: torch.Tensor) -> torch.Tensor:
        maps = self.features(self.bands(crops).unsqueeze(1).contiguous(memory_format=torch.channels_last))
        return pooled(maps.flatten(2))
