"""The musicnn backbone (Pons & Serra 2019) in PyTorch: a tagger trained on 200,000 songs, for transfer to genres.

musicnn reads 3-s patches of a 96-band log-mel spectrogram of 16 kHz audio and gives, per patch, 50 tag
probabilities (the Million Song Dataset's or MagnaTagATune's), a 200-d penultimate embedding and 753-d max- and
mean-pooled mid-end features. This port reproduces the original TensorFlow model (musicnn 0.1.0, ISC licence) layer
by layer; its weights are converted from the original checkpoints by `musicnn_convert` into safetensors files that
ship with the package (`models/weights/`, see LICENSE-musicnn.txt there). Loading them runs no code.

Two bugs of the original code are not carried over: its extractor returns patch 0's penultimate layer for every
patch, and it multiplies a float16 mel by 10000 (which overflows to infinity on loud audio); here the log is taken in
float32.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

SAMPLE_RATE = 16000  # Hz: the rate musicnn was trained at
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, hop_length=256, n_fft=512) + 1, as the original
LOG_GAIN = 10000.0  # the log-mel is log10(1 + LOG_GAIN * mel power)
EMBEDDING_DIM = 200  # the penultimate layer
MIDEND_DIM = 753  # the front end's 561 feature maps and the mid end's 3 x 64, pooled over time

MSD_TAGS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient",
    "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening",
    "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House",
    "happy",
)  # fmt: skip
MTT_TAGS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man",
    "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip
TAGS = {"msd": MSD_TAGS, "mtt": MTT_TAGS}  # the training data of each set of weights: its tags
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
BN_EPS = 1e-3  # TensorFlow's default for tf.layers.batch_normalization


def weights_path(dataset: str) -> Path:
    if dataset not in TAGS:
        raise ValueError(f"unknown musicnn weights {dataset!r}: choose one of {', '.join(TAGS)}")
    return WEIGHTS_DIR / f"musicnn_{dataset}.safetensors"


class MusicnnFrontEnd(nn.Module):
    """16 kHz mono waveforms (..., samples) -> musicnn's log-mel (..., frames, 96) in float32.

    The mel bank is librosa's default (Slaney scale and area normalisation), as the original used; the STFT is
    centred with reflect padding, librosa's default when musicnn was trained.
    """

    def __init__(self) -> None:
        super().__init__()
        bank = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, "slaney", "slaney")
        self.register_buffer("mel_bank", bank, persistent=False)  # (257, 96)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape[:-1]
        wave = waveform.reshape(-1, waveform.shape[-1]).float()
        spec = torch.stft(
            wave, N_FFT, HOP_LENGTH, window=self.window, center=True, pad_mode="reflect", return_complex=True
        )
        power = spec.real.square() + spec.imag.square()  # (batch, 257, frames)
        mel = torch.matmul(power.transpose(1, 2), self.mel_bank)  # (batch, frames, 96)
        return torch.log10(1.0 + LOG_GAIN * mel).reshape(*shape, mel.shape[1], N_MELS)


def resample_for_musicnn(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mono audio (..., samples) at `sample_rate` -> 16 kHz through resampy's 'kaiser_best' filter.

    That was librosa's resampler when musicnn was trained; the top mel bands, and with them the tags, depend on how
    steep the anti-aliasing filter is (docs/musicnn.md has the measured differences).
    """
    if sample_rate == SAMPLE_RATE:
        return waveform.float()
    return AF.resample(
        waveform.float(),
        sample_rate,
        SAMPLE_RATE,
        lowpass_filter_width=64,
        rolloff=0.9475937167399596,
        resampling_method="sinc_interp_kaiser",
        beta=14.769656459379492,
    )


def _bn(channels: int, dims: int = 1) -> nn.Module:
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, eps=BN_EPS)


class MusicnnNetwork(nn.Module):
    """musicnn on log-mel patches (batch, 187, 96): timbral and temporal front end, dense mid end, pooled back end.

    Shapes as the original `build_musicnn` (num_filt 1.6, mid end 64, back end 200): timbral convolutions of 7 x 38 and
    7 x 67 (204 filters each), temporal ones of 128, 64, 32 frames (51 filters each), each max-pooled over frequency.
    """

    def __init__(self, n_tags: int = 50) -> None:
        super().__init__()
        self.input_bn = _bn(1, 2)
        self.timbral = nn.ModuleList([nn.Conv2d(1, 204, (7, int(share * N_MELS))) for share in (0.4, 0.7)])
        self.timbral_bn = nn.ModuleList([_bn(204, 2), _bn(204, 2)])
        self.temporal_lengths = (128, 64, 32)
        self.temporal = nn.ModuleList([nn.Conv2d(1, 51, (k, 1)) for k in self.temporal_lengths])
        self.temporal_bn = nn.ModuleList([_bn(51, 2) for _ in self.temporal_lengths])
        self.midend = nn.ModuleList([nn.Conv1d(channels, 64, 7, padding=3) for channels in (561, 64, 64)])
        self.midend_bn = nn.ModuleList([_bn(64) for _ in range(3)])
        self.pool_bn = _bn(2 * MIDEND_DIM)
        self.dense = nn.Linear(2 * MIDEND_DIM, EMBEDDING_DIM)
        self.dense_bn = _bn(EMBEDDING_DIM)
        self.output = nn.Linear(EMBEDDING_DIM, n_tags)
        self.dropout = nn.Dropout(0.5)

    def frontend(self, patches: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 96) -> the 561 front-end feature maps (batch, 561, frames)."""
        x = self.input_bn(patches.unsqueeze(1))  # (batch, 1, frames, 96)
        maps = []
        padded = F.pad(x, (0, 0, 3, 3))  # zero padding of time only: 'same' in time, pooled over frequency after
        for conv, bn in zip(self.timbral, self.timbral_bn):
            maps.append(bn(F.relu(conv(padded))).amax(dim=3))
        for length, conv, bn in zip(self.temporal_lengths, self.temporal, self.temporal_bn):
            before = (length - 1) // 2  # TensorFlow's 'same' puts the extra zero after
            maps.append(bn(F.relu(conv(F.pad(x, (0, 0, before, length - 1 - before))))).amax(dim=3))
        return torch.cat(maps, dim=1)

    def forward(self, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per patch: `logits` and `tags` (50), `penultimate` (200), `max_pool` and `mean_pool` (753)."""
        front = self.frontend(patches)
        features = [front]
        for i, (conv, bn) in enumerate(zip(self.midend, self.midend_bn)):
            out = bn(F.relu(conv(features[-1])))
            features.append(out if i == 0 else out + features[-1])  # residual connections after the first
        midend = torch.cat(features, dim=1)  # (batch, 753, frames)
        max_pool, mean_pool = midend.amax(dim=2), midend.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # interleaved, as TensorFlow's flatten
        penultimate = self.dense_bn(F.relu(self.dense(self.dropout(self.pool_bn(pooled)))))
        logits = self.output(self.dropout(penultimate))
        return {
            "logits": logits,
            "tags": torch.sigmoid(logits),
            "penultimate": penultimate,
            "max_pool": max_pool,
            "mean_pool": mean_pool,
        }


def patch_starts(n_frames: int, max_patches: int | None = None) -> list[int]:
    """First frames of the non-overlapping 3-s patches of a clip (the remainder is dropped, as the original does).

    With `max_patches`, that many patches spread evenly over the clip; a clip shorter than one patch gets one.
    """
    starts = list(range(0, max(n_frames - PATCH_FRAMES, 0) + 1, PATCH_FRAMES))
    if max_patches is not None and len(starts) > max_patches:
        picks = torch.linspace(0, len(starts) - 1, max_patches).round().long().tolist()
        starts = [starts[i] for i in picks]
    return starts


@dataclass
class MusicnnOutput:
    """musicnn's outputs for one clip: per patch (patches, dim) and pooled over the clip (dim)."""

    patch_tags: torch.Tensor  # (patches, 50) probabilities
    patch_penultimate: torch.Tensor  # (patches, 200)
    patch_max_pool: torch.Tensor  # (patches, 753)
    patch_mean_pool: torch.Tensor  # (patches, 753)
    tags: torch.Tensor  # (50,) mean over the patches
    penultimate: torch.Tensor  # (200,) mean over the patches
    max_pool: torch.Tensor  # (753,) max over the patches: the max over all the clip's frames
    mean_pool: torch.Tensor  # (753,) mean over the patches: the mean over all the clip's frames


class MusicnnBackbone(nn.Module):
    """musicnn with its own front end: 16 kHz mono audio of one clip -> tags and embeddings per patch and per clip."""

    def __init__(self, dataset: str = "msd") -> None:
        super().__init__()
        if dataset not in TAGS:
            raise ValueError(f"unknown musicnn weights {dataset!r}: choose one of {', '.join(TAGS)}")
        self.dataset, self.tag_names = dataset, TAGS[dataset]
        self.frontend = MusicnnFrontEnd()
        self.network = MusicnnNetwork(len(self.tag_names))
        self.patches_at_once = 2  # in eval mode (studies/musicnn_speed.py)

    def patches(
        self, waveform: torch.Tensor, max_patches: int | None = None, sample_rate: int = SAMPLE_RATE
    ) -> torch.Tensor:
        """A clip's mono waveform (samples,) -> its log-mel patches (patches, 187, 96)."""
        return mel_patches(self.frontend(resample_for_musicnn(waveform, sample_rate)), max_patches)

    def forward(
        self, waveform: torch.Tensor, max_patches: int | None = None, sample_rate: int = SAMPLE_RATE
    ) -> MusicnnOutput:
        """One clip's mono waveform (samples,) at `sample_rate` -> its outputs; `max_patches` spread evenly."""
        return self.from_patches(self.patches(waveform, max_patches, sample_rate))

    def from_mel(self, mel: torch.Tensor, max_patches: int | None = None) -> MusicnnOutput:
        """One clip's musicnn log-mel (frames, 96) at 62.5 frames/s, made some other way than from its audio (the
        spectrogram adapter, models/musicnn_adapter.py) -> its outputs, as `forward` gives them for audio."""
        return self.from_patches(mel_patches(torch.as_tensor(mel, dtype=torch.float32), max_patches))

    def from_patches(self, patches: torch.Tensor) -> MusicnnOutput:
        """Log-mel patches (patches, 187, 96) of one clip -> its outputs per patch and pooled over the clip."""
        if self.training:  # batch norm's statistics come from the whole batch
            out = self.network(patches)
        else:  # a few patches at a time: the timbral maps of many stay out of the CPU's caches, ~2x slower per patch
            parts = [self.network(part) for part in patches.split(self.patches_at_once)]
            out = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        return MusicnnOutput(
            patch_tags=out["tags"],
            patch_penultimate=out["penultimate"],
            patch_max_pool=out["max_pool"],
            patch_mean_pool=out["mean_pool"],
            tags=out["tags"].mean(0),
            penultimate=out["penultimate"].mean(0),
            max_pool=out["max_pool"].amax(0),
            mean_pool=out["mean_pool"].mean(0),
        )


def mel_patches(mel: torch.Tensor, max_patches: int | None = None) -> torch.Tensor:
    """A clip's musicnn log-mel (frames, 96) -> its 3-s patches (patches, 187, 96)."""
    if mel.shape[0] < PATCH_FRAMES:  # log10(1 + 0) = 0: silence fills a short clip's only patch
        mel = F.pad(mel, (0, 0, 0, PATCH_FRAMES - mel.shape[0]))
    return torch.stack([mel[s : s + PATCH_FRAMES] for s in patch_starts(mel.shape[0], max_patches)])


def load_musicnn(dataset: str = "msd", path: str | Path | None = None) -> MusicnnBackbone:
    """The backbone with the weights trained on `dataset` ("msd" or "mtt"), in eval mode; loading runs no code."""
    model = MusicnnBackbone(dataset)
    file = Path(path) if path is not None else weights_path(dataset)
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: musicnn weights missing; make them with "
            "python -m music_genre_classification.models.musicnn_convert musicnn-0.1.0-py3-none-any.whl OUTDIR"
        )
    model.network.load_state_dict(load_file(str(file)), strict=True)
    return model.eval()


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored with converted weights: source, licence, dataset, tags (a JSON list)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
