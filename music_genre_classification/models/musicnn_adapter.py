"""From the stored GTZAN log-mel spectrograms to musicnn's input: the fixed adapter.

The development data are log-mel spectrograms, not audio (data/dataset/spectrograms/params.json): 128 Slaney mel
bands of 22.05 kHz audio (n_fft 2048, hop 512), power_to_db(ref=max, top_db=80), min-max scaled to [0, 1] per clip,
and 387 columns per 30 s (every ~3.34th hop frame, 12.9 columns/s). musicnn reads 96 Slaney mel bands of 16 kHz audio
(n_fft 512, hop 256), log10(1 + 10000 x), 62.5 frames/s (models/musicnn.py). `spectrogram_to_musicnn_mel` maps one
to the other with fixed steps:

1. [0, 1] back to dB below the clip's peak, taking the clip's range as the full top_db (80 dB; most clips reach the
   floor, and the range of the others is not stored);
2. dB to mel power at a fixed absolute level (REFERENCE_DB for the clip's loudest mel band: a clip's real level is
   not stored either; the constant matches the median GTZAN clip with audio, see docs/musicnn.md);
3. the 128-band mel power back to a linear power spectrum by the pseudo-inverse of the mel bank (minimum-norm, negative
   power clipped to 0), its frequency axis resampled to the 16 kHz STFT's bins (power per Hz kept), musicnn's 96-band
   mel bank, its log;
4. the 12.9 columns/s interpolated linearly in time to 62.5 frames/s, each column placed at its hop frame's time.

The matrices of step 3 are computed once per spectrogram description. The long-term spectrum survives;
the fine time structure does not (a column every 78 ms against musicnn's 16 ms), nor the clip's level: musicnn's
embeddings from the adapted spectrogram are far from those of the real audio (docs/musicnn.md has the figures).
"""

from collections.abc import Callable
from dataclasses import fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.models.musicnn import HOP_LENGTH, LOG_GAIN, N_FFT, N_MELS, SAMPLE_RATE, WEIGHTS_DIR

# The level given to a clip's loudest mel band (0 dB of the stored spectrogram), in dB of mel power as the adapter
# computes it: the value at which the adapter's mean mel power equals that of musicnn's own front end on the real audio,
# for the median of the 18 full-length train-list clips that have audio (their own levels spread over 12 dB;
# docs/musicnn.md). It folds in the change of STFT, window and mel bank as well as the clip's unknown level.
REFERENCE_DB = 19.5
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # musicnn's 62.5


def as_params(params: dict | SpectrogramParams) -> SpectrogramParams:
    """A spectrogram description: SpectrogramParams, its dict, or the contents of a params.json."""
    if isinstance(params, SpectrogramParams):
        return params
    if "power_to_db" in params or "frames" in params:  # a params.json
        db = params.get("power_to_db", {})
        return SpectrogramParams(
            sample_rate=params["sample_rate"],
            n_fft=params["n_fft"],
            hop_length=params["hop_length"],
            n_mels=params["n_mels"],
            top_db=db.get("top_db", SpectrogramParams.top_db),
            window_columns=params.get("frames", SpectrogramParams.window_columns),
        )
    names = {f.name for f in fields(SpectrogramParams)}
    return SpectrogramParams(**{k: v for k, v in params.items() if k in names})


@lru_cache(maxsize=4)
def mel_map(params: SpectrogramParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 3's matrices: the mel bank's pseudo-inverse (bins, n_mels), the resampling of the frequency axis to the
    16 kHz STFT's bins (257, bins) and musicnn's mel bank (96, 257)."""
    with torch.device("cpu"):  # plain matrices, even where networks are being sized on the meta device
        return _mel_map(params)


def _mel_map(params: SpectrogramParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_bins = params.n_fft // 2 + 1
    stored_bank = AF.melscale_fbanks(
        n_bins, 0.0, params.sample_rate / 2, params.n_mels, params.sample_rate, "slaney", "slaney"
    ).double()  # (bins, n_mels): librosa's Slaney bank, as the data were made
    musicnn_bank = AF.melscale_fbanks(
        N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, N_MELS, SAMPLE_RATE, "slaney", "slaney"
    ).double()  # (257, 96)
    inverse = torch.linalg.pinv(stored_bank.T)  # (bins, n_mels): mel power -> minimum-norm linear power
    # linear interpolation from the stored STFT's bins to the 16 kHz one's, per Hz: a bin of the 16 kHz STFT is
    # (31.25 Hz / 10.77 Hz) times as wide; above 11.025 kHz (never, at 16 kHz) nothing
    source_hz = np.linspace(0, params.sample_rate / 2, n_bins)
    target_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    resample = np.zeros((len(target_hz), n_bins))
    for i, hz in enumerate(target_hz):
        j = min(np.searchsorted(source_hz, hz, side="right") - 1, n_bins - 2)
        w = (hz - source_hz[j]) / (source_hz[j + 1] - source_hz[j])
        resample[i, j], resample[i, j + 1] = 1 - w, w
    resample *= (SAMPLE_RATE / N_FFT) / (params.sample_rate / params.n_fft)
    return inverse.numpy(), resample, musicnn_bank.numpy().T


def column_seconds(columns: int, params: SpectrogramParams) -> np.ndarray:
    """The time of each stored column: the hop frame it was picked from (params.json's frame selection)."""
    span = columns * params.column_step
    frames = np.floor((np.arange(columns) + 0.5) * span / columns)
    return frames * params.hop_length / params.sample_rate


class MusicnnBands(nn.Module):
    """Steps 1-3 in torch, differentiable: stored log-mel [..., n_mels, columns] in [0, 1] -> musicnn's log-mel bands
    [..., 96, columns], column for column (the time axis is left as it is). The matrices are buffers made from the
    spectrogram description, never stored in a checkpoint; `dtype` float64 gives the fixed adapter's numbers."""

    def __init__(
        self, params: dict | SpectrogramParams, reference_db: float = REFERENCE_DB, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.params, self.reference_db = as_params(params), reference_db
        inverse, resample, bank = mel_map(self.params)
        self.register_buffer("inverse", torch.as_tensor(inverse, dtype=dtype), persistent=False)  # (bins, n_mels)
        self.register_buffer("to_bands", torch.as_tensor(bank @ resample, dtype=dtype), persistent=False)  # (96, bins)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        db = (spectrogram.to(self.inverse.dtype).clamp(0.0, 1.0) - 1.0) * self.params.top_db + self.reference_db
        linear = (self.inverse @ torch.pow(10.0, db / 10.0)).clamp_min(0.0)  # (..., bins, columns)
        return torch.log10(1.0 + LOG_GAIN * (self.to_bands @ linear))


def spectrogram_to_musicnn_mel(
    spectrogram: np.ndarray | torch.Tensor, params: dict | SpectrogramParams, reference_db: float = REFERENCE_DB
) -> np.ndarray:
    """A stored log-mel spectrogram [n_mels, columns] in [0, 1] -> musicnn's log-mel [frames, 96] (float32) at 62.5
    frames/s, as MusicnnBackbone.from_mel takes it (the module's docstring has the steps)."""
    params = as_params(params)
    spec = spectrogram.detach().cpu().numpy() if isinstance(spectrogram, torch.Tensor) else np.asarray(spectrogram)
    if spec.ndim != 2 or spec.shape[0] != params.n_mels:
        raise ValueError(f"a spectrogram of {params.n_mels} mel bands [n_mels, columns], not shape {spec.shape}")
    log_mel = MusicnnBands(params, reference_db, torch.float64)(torch.from_numpy(spec.astype(np.float64))).numpy()
    seconds = column_seconds(spec.shape[1], params)
    duration = spec.shape[1] / params.columns_per_second
    frame_seconds = np.arange(int(duration * FRAMES_PER_SECOND) + 1) / FRAMES_PER_SECOND
    out = np.stack([np.interp(frame_seconds, seconds, band) for band in log_mel], axis=1)
    return out.astype(np.float32)


# The learned adapter: a small network on top of the fixed one, trained on the GTZAN clips that have both audio and a
# stored spectrogram so that musicnn's embeddings from the spectrogram come closer to those from the audio
# (training/musicnn_adapter.py trains it; docs/results/musicnn_adapter.md has what it buys on held-back artists).

LEARNED_ADAPTER_PATH = WEIGHTS_DIR / "musicnn_adapter_msd.safetensors"
ADAPTERS = ("fixed", "learned")  # the spectrogram adapters by name: `spectrogram_adapter(name)`


class LearnedAdapter(nn.Module):
    """The fixed adapter's log-mel (batch, frames, 96) -> a corrected one of the same shape.

    Two residual corrections, zero at initialisation (so an untrained one is the fixed adapter): a per-clip offset
    per band from the clip's mean and spread per band (the clip's level and noise floor are not stored, but its
    spectrum hints at them), and a local one from a few convolutions over time with the bands as channels (the
    texture that linear interpolation between columns 78 ms apart smooths away). The output is kept >= 0, as
    log10(1 + 10000 x) is.
    """

    def __init__(self, hidden: int = 64, kernel: int = 9, reference_db: float = REFERENCE_DB) -> None:
        super().__init__()
        self.hidden, self.kernel = hidden, kernel
        self.reference_db = reference_db  # the fixed adapter's level it corrects (it was trained at)
        pad = kernel // 2
        self.local = nn.Sequential(
            nn.Conv1d(N_MELS, hidden, kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(hidden, hidden, kernel, padding=2 * pad, dilation=2),
            nn.GELU(),
            nn.Conv1d(hidden, N_MELS, 1),
        )
        self.level = nn.Sequential(nn.Linear(2 * N_MELS, hidden), nn.GELU(), nn.Linear(hidden, N_MELS))
        for last in (self.local[-1], self.level[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(frames, 96) or (batch, frames, 96) -> the same shape; each item is one whole clip (its statistics set
        the level correction)."""
        x = (mel.unsqueeze(0) if mel.dim() == 2 else mel).transpose(1, 2)  # (batch, 96, frames)
        stats = torch.cat([x.mean(2), x.std(2)], dim=1)
        out = (x + self.local(x) + self.level(stats).unsqueeze(2)).clamp(min=0.0).transpose(1, 2)
        return out.squeeze(0) if mel.dim() == 2 else out

    def adapt(self, spectrogram: np.ndarray | torch.Tensor, params: dict | SpectrogramParams) -> np.ndarray:
        """A stored log-mel spectrogram [n_mels, columns] in [0, 1] -> musicnn's log-mel [frames, 96] (float32)."""
        fixed = torch.from_numpy(spectrogram_to_musicnn_mel(spectrogram, params, self.reference_db))
        with torch.inference_mode():
            return self(fixed).numpy()


def load_learned_adapter(path: str | Path | None = None) -> LearnedAdapter:
    """The learned adapter (trained on GTZAN's clips with audio, for the MSD backbone) in eval mode; loading reads
    tensors only (safetensors), never code."""
    file = Path(path) if path is not None else LEARNED_ADAPTER_PATH
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: learned adapter missing; train it with "
            "python -m music_genre_classification.training.musicnn_adapter"
        )
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    model = LearnedAdapter(
        int(meta.get("hidden", 64)), int(meta.get("kernel", 9)), float(meta.get("reference_db", REFERENCE_DB))
    )
    model.load_state_dict(load_file(str(file)), strict=True)
    return model.eval()


def save_learned_adapter(model: LearnedAdapter, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    meta = {"hidden": str(model.hidden), "kernel": str(model.kernel), "reference_db": str(model.reference_db)}
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path), meta | (metadata or {}))


def spectrogram_adapter(
    name: str = "fixed", reference_db: float = REFERENCE_DB
) -> Callable[[np.ndarray | torch.Tensor, dict | SpectrogramParams], np.ndarray]:
    """The spectrogram adapter called `name` ("fixed" or "learned"): a function (spectrogram, params) -> musicnn's
    log-mel [frames, 96]. `reference_db` sets the fixed one's level; the learned one corrects the fixed one at the
    level it was trained at (stored with it), whatever `reference_db` says: it learns each clip's level itself."""
    if name == "fixed":
        return lambda spectrogram, params: spectrogram_to_musicnn_mel(spectrogram, params, reference_db)
    if name == "learned":
        return load_learned_adapter().adapt
    raise ValueError(f"unknown spectrogram adapter {name!r}: choose one of {', '.join(ADAPTERS)}")
