"""model=musicnn: the musicnn backbone fine-tuned on genres, as a network like the others (networks.py's interface).

It reads the CNN's input, crops of the stored log-mel [batch, 1, n_mels, columns] in [0, 1], so the data,
augmentation, checkpoints, `test`, `infer`, `serve`, `embed` and ensembles are those of every network. Its own front
end is the fixed spectrogram adapter in torch (`MusicnnBands`: back to mel power at the reference level, musicnn's 96
bands, its log), then musicnn's front and mid end (weights from the package's safetensors, MSD or MTT), pooled over
time, and a new linear head for the genres.

The time axis (`frame_rate`): "native" feeds the stored 12.9 columns/s to musicnn as they are, so its filters,
trained at 62.5 frames/s, see 4.8x slower music and have to adapt while fine-tuning (about 5x cheaper than the
other); "musicnn" interpolates linearly to 62.5 frames/s, as the fixed adapter does, which keeps the filters' time
scale but cannot bring back the time resolution lost in the stored columns.

Head first, then the backbone at a lower learning rate: `model.freeze_epochs` and `model.backbone_lr` of GenreModule.
"""

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from music_genre_classification.data.spectrogram import SpectrogramParams, crop_starts, pad_to
from music_genre_classification.models.musicnn import EMBEDDING_DIM, MIDEND_DIM, TAGS, MusicnnNetwork, weights_path
from music_genre_classification.models.musicnn_adapter import FRAMES_PER_SECOND, REFERENCE_DB, MusicnnBands

POOLINGS = ("mean", "max", "mean_max", "penultimate")
FRAME_RATES = ("native", "musicnn")


class GenreMusicnn(nn.Module):
    """Stored log-mel crops -> musicnn (pretrained) -> pooled over time -> dropout -> linear genre head.

    `pooling`: the mid end's 753 features averaged over time ("mean", the probe's best embedding on new artists),
    their maximum, both, or musicnn's 200-d penultimate layer on both. The spectrogram settings describe the stored
    log-mel (configs/model/musicnn.yaml takes them from the datamodule); `pretrained` false starts from random weights.
    """

    channels_last = False  # its one-channel convolutions over wide maps: 2x slower to train in channels_last

    def __init__(
        self,
        n_genres: int,
        backbone: str = "msd",
        pooling: str = "mean",
        frame_rate: str = "native",
        dropout: float = 0.3,
        pretrained: bool = True,
        reference_db: float = REFERENCE_DB,
        n_mels: int = 128,
        sample_rate: int = 22050,
        n_fft: int = 2048,
        hop_length: int = 512,
        top_db: float = 80.0,
        window_s: float = 30.0,
        window_columns: int = 387,
    ):
        super().__init__()
        for name, value, allowed in (
            ("backbone", backbone, tuple(TAGS)),
            ("pooling", pooling, POOLINGS),
            ("frame_rate", frame_rate, FRAME_RATES),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: choose one of {', '.join(allowed)}")
        params = SpectrogramParams(sample_rate, n_fft, hop_length, n_mels, top_db, window_s, window_columns)
        self.pooling, self.pretrained = pooling, pretrained
        # musicnn frames per stored column
        self.upsample = FRAMES_PER_SECOND / params.columns_per_second if frame_rate == "musicnn" else 1.0
        self.bands = MusicnnBands(params, reference_db)
        self.backbone = MusicnnNetwork(len(TAGS[backbone]))
        if pretrained and not next(self.backbone.parameters()).is_meta:  # no file read when only sizing it
            self.backbone.load_state_dict(load_file(str(weights_path(backbone))), strict=True)
        self.backbone.output = None  # the tag layer: replaced by the genre head
        if pooling != "penultimate":
            self.backbone.pool_bn = self.backbone.dense = self.backbone.dense_bn = None
        dim = {"mean": MIDEND_DIM, "max": MIDEND_DIM, "mean_max": 2 * MIDEND_DIM}.get(pooling, EMBEDDING_DIM)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_genres))

    def features(self, specs: torch.Tensor) -> torch.Tensor:
        """[batch, 1, n_mels, columns] -> the mid end's features over time [batch, 753, frames]."""
        mel = self.bands(specs.squeeze(1).float())  # [batch, 96, columns]
        if self.upsample != 1.0:
            frames = max(1, round(mel.shape[-1] * self.upsample))
            mel = F.interpolate(mel, size=frames, mode="linear", align_corners=True)
        net = self.backbone
        maps = [net.frontend(mel.transpose(1, 2).contiguous())]
        for i, (conv, bn) in enumerate(zip(net.midend, net.midend_bn)):
            out = bn(F.relu(conv(maps[-1])))
            maps.append(out if i == 0 else out + maps[-1])  # residual after the first, as musicnn
        return torch.cat(maps, dim=1)

    def pooled(self, features: torch.Tensor) -> torch.Tensor:
        """[..., 753, frames] -> the embedding the head takes [..., dim]."""
        if self.pooling == "mean":
            return features.mean(-1)
        if self.pooling == "max":
            return features.amax(-1)
        mean, peak = features.mean(-1), features.amax(-1)
        if self.pooling == "mean_max":
            return torch.cat([mean, peak], dim=-1)
        net = self.backbone  # penultimate: musicnn's dense layer on max and mean, interleaved as its flatten
        both = torch.stack([peak, mean], dim=-1).flatten(-2)
        flat = both.reshape(-1, both.shape[-1])
        return net.dense_bn(F.relu(net.dense(net.pool_bn(flat)))).reshape(*both.shape[:-1], EMBEDDING_DIM)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(self.features(crops)))

    def crop_logits(self, specs: torch.Tensor, crop: int, hop: int) -> torch.Tensor:
        return self.head(self.crop_embeddings(specs, crop, hop))

    def crop_embeddings(self, specs: torch.Tensor, crop: int, hop: int) -> torch.Tensor:
        """[clips, n_mels, columns] -> the embedding of each crop covering each clip [clips, crops, dim].

        As GenreCNN's: the network runs once over the whole clip and each crop's frames are pooled (the crops overlap).
        """
        specs = pad_to(specs, crop)
        features = self.features(specs.unsqueeze(1))
        scale = features.shape[-1] / specs.shape[-1]  # frames per column
        width = max(1, round(crop * scale))
        starts = [min(round(s * scale), features.shape[-1] - width) for s in crop_starts(specs.shape[-1], crop, hop)]
        return self.pooled(torch.stack([features[..., s : s + width] for s in starts], dim=1))
