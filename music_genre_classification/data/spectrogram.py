"""The one log-mel front end used by training, test, infer and the bot."""

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from music_genre_classification.data.audio import MAX_PEAK, MIN_DURATION_S, SILENCE_PEAK, AudioError

MELS_PER_BAND = 16  # mel filters applied together by one matmul over the FFT bins they cover
# Spectral flatness over the mel bands (geometric / arithmetic mean of power; median over columns): all 639 GTZAN
# clips of data/dataset/spectrograms are at most 0.162 (metal), white and uniform noise 0.27-0.30
NOISE_FLATNESS = 0.22
QUIET_COLUMN = 0.5  # a column whose loudest mel band is over half the dB range (40 dB) below the window's peak


@dataclass(frozen=True)
class SpectrogramParams:
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    top_db: float = 80.0
    window_s: float = 30.0  # audio is cut into windows of this length, each one normalised like a GTZAN clip
    window_columns: int = 387  # columns of a whole window: every ~3.34th hop frame (~12.9 columns/s)

    @property
    def column_step(self) -> float:
        """Hop frames per column, as params.json defines it for a 30-s clip: (T - 1.7) / columns."""
        return (1 + round(self.window_s * self.sample_rate / self.hop_length) - 1.7) / self.window_columns

    @property
    def columns_per_second(self) -> float:
        return self.window_columns / self.window_s

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dataset(cls, params_json: Path) -> "SpectrogramParams":
        """Read the params.json that describes a folder of precomputed spectrograms."""
        raw = json.loads(Path(params_json).read_text())
        if raw.get("power_to_db", {}).get("ref", "max") != "max" or "min-max" not in raw.get(
            "normalization", "min-max"
        ):
            raise ValueError(f"{params_json}: only ref=max log-mel with per-clip min-max normalisation is supported")
        return cls(
            sample_rate=raw["sample_rate"],
            n_fft=raw["n_fft"],
            hop_length=raw["hop_length"],
            n_mels=raw["n_mels"],
            top_db=raw.get("power_to_db", {}).get("top_db", 80.0),
            window_columns=raw.get("frames", cls.window_columns),
        )


class LogMel(torch.nn.Module):
    """Waveform -> per-clip min-max normalised log-mel columns in [0, 1], shape [n_mels, columns].

    Equivalent to librosa's melspectrogram (centered, zero padded, slaney mels) followed by
    power_to_db(ref=max, top_db), min-max normalisation and column selection.
    """

    def __init__(self, params: SpectrogramParams = SpectrogramParams()):
        super().__init__()
        self.params = params
        self.register_buffer("window", torch.hann_window(params.n_fft, periodic=True), persistent=False)
        mel = AF.melscale_fbanks(
            n_freqs=params.n_fft // 2 + 1,
            f_min=0.0,
            f_max=params.sample_rate / 2,
            n_mels=params.n_mels,
            sample_rate=params.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("mel_filters", mel, persistent=False)
        # each run of 16 filters covers a narrow band of FFT bins: one small matmul per run does ~1/8 of the dense work
        self.mel_bands = []
        for first in range(0, params.n_mels, MELS_PER_BAND):
            last = min(first + MELS_PER_BAND, params.n_mels)
            bins = mel[:, first:last].sum(1).nonzero().squeeze(1)
            lo, hi = (int(bins.min()), int(bins.max()) + 1) if len(bins) else (0, 1)  # an empty filter: any bin
            self.mel_bands.append((lo, hi, first, last))

    def mel_power(self, power: torch.Tensor) -> torch.Tensor:
        """[..., frames, bins] power spectrum -> [..., frames, n_mels], the same as power @ mel_filters."""
        return torch.cat([power[..., lo:hi] @ self.mel_filters[lo:hi, a:b] for lo, hi, a, b in self.mel_bands], -1)

    def column_frames(self, n_samples: int) -> torch.Tensor:
        """Indices of the hop frames kept as columns (the rule in data/dataset/spectrograms/params.json)."""
        p = self.params
        frames = 1 + n_samples // p.hop_length
        span = max(frames - 1.7, 1.0)
        columns = max(1, round(span / p.column_step))
        if n_samples <= (p.window_s + 1) * p.sample_rate:  # GTZAN's clips (29.9-30.6 s) all have window_columns
            columns = min(columns, p.window_columns)
        picked = torch.floor((torch.arange(columns, dtype=torch.float64) + 0.5) * span / columns).long()
        return picked.clamp_(0, frames - 1)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        p = self.params
        wave = wave.to(self.window.dtype)
        # torch.stft(center=True, pad_mode="constant") by hand: the rfft of the windowed frames, [frames, bins]
        # straight away (no transposed copy), ~1 ms less of ~9 per 30-s window, the same values
        half = p.n_fft // 2
        frames = torch.nn.functional.pad(wave, (half, half)).unfold(0, p.n_fft, p.hop_length)
        spectrum = torch.fft.rfft(frames * self.window)
        power = torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)  # |X|^2 without abs's root
        # ref=max and the min-max range come from every hop frame; only then are columns picked
        db = 10 * torch.log10(torch.clamp(self.mel_power(power), min=1e-10))
        db = (db - db.max()).clamp(min=-p.top_db)
        low = db.min()
        spec = (db - low) / -low if low < 0 else torch.zeros_like(db)
        return spec[self.column_frames(wave.shape[-1])].T.contiguous()


def cut_windows(
    blocks: Iterable[np.ndarray], params: SpectrogramParams, min_s: float = MIN_DURATION_S
) -> Iterator[np.ndarray]:
    """Consecutive windows of window_s from a stream of audio blocks; a last part too short to judge on its own
    (under `min_s`) joins the window before it."""
    size, tail = round(params.window_s * params.sample_rate), round(min_s * params.sample_rate)
    pending = np.zeros(0, np.float32)
    for block in blocks:
        pending = np.concatenate([pending, block]) if len(pending) else block
        while len(pending) >= size + tail:  # a whole window with enough after it for a window of its own
            yield pending[:size]
            pending = pending[size:]
    if len(pending):
        yield pending


def spectral_flatness(spec: torch.Tensor, top_db: float) -> torch.Tensor:
    """Per column of a normalised log-mel spectrogram: geometric over arithmetic mean of the mel bands' power."""
    log_power = spec.double() * (top_db / 10 * math.log(10))  # natural log of power, up to a constant per window
    return torch.exp(log_power.mean(0) - torch.logsumexp(log_power, 0) + math.log(spec.shape[0]))


def checked_windows(
    blocks: Iterable[np.ndarray], params: SpectrogramParams, name: str = "audio", min_s: float = MIN_DURATION_S
) -> Iterator[tuple[float, float, np.ndarray]]:
    """(start_s, end_s, waveform) for each window of a track; tracks too short (under `min_s`), out of range or silent
    to classify raise AudioError (silence once the whole track has been seen)."""
    rate, peak, done = params.sample_rate, 0.0, 0
    for wave in cut_windows(blocks, params, min_s):
        if not done and len(wave) < min_s * rate:  # only a first and last window can be this short
            seconds = len(wave) / rate
            raise AudioError(f"{name}: too short ({seconds:.2f} s); the model needs at least {min_s:g} s of audio")
        high, low = float(wave.max()), float(wave.min())  # NaN and inf reach these: no pass over |wave|
        if not (math.isfinite(high) and math.isfinite(low)):
            raise AudioError(f"{name}: audio holds NaN or infinite samples")
        peak = max(peak, high, -low)
        if peak > MAX_PEAK:
            raise AudioError(f"{name}: sample values out of range (peak {peak:.3g}; audio lies within -1 and 1)")
        yield done / rate, (done + len(wave)) / rate, wave
        done += len(wave)
    if not done:
        raise AudioError(f"{name}: too short (no audio); the model needs at least {min_s:g} s")
    if peak < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent")


def track_spectrograms(
    blocks: Iterable[np.ndarray], front_end: LogMel, name: str = "audio"
) -> list[tuple[float, float, torch.Tensor]]:
    """(start_s, end_s, input) for each window of a track, refusing tracks too short, silent or noise.

    The input is the front end's: a LogMel's spectrogram, or what another front end makes of the window (the 57
    features, an ensemble's inputs); such a front end names in `log_mel` the LogMel the noise check reads.
    """
    log_mel = getattr(front_end, "log_mel", front_end)
    windows, flatness = [], []
    for start, end, wave in checked_windows(blocks, front_end.params, name):
        wave = torch.from_numpy(np.ascontiguousarray(wave))
        spec = log_mel(wave)
        loud = spec.amax(0) > QUIET_COLUMN  # pauses are perfectly flat at the floor, yet no sign of noise
        if loud.any():
            flatness.append(spectral_flatness(spec[:, loud], log_mel.params.top_db))
        windows.append((start, end, spec if log_mel is front_end else front_end(wave)))
    if flatness and float(torch.cat(flatness).median()) > NOISE_FLATNESS:
        raise AudioError(f"{name}: sounds like noise (a flat spectrum), not music")
    return windows


def crop_starts(columns: int, crop: int, hop: int) -> list[int]:
    """Starts of crops of `crop` columns that cover a spectrogram of `columns` columns, ends included."""
    if columns <= crop:
        return [0]
    count = math.ceil((columns - crop) / hop) + 1
    return [round(i * (columns - crop) / (count - 1)) for i in range(count)]


def pad_to(specs: torch.Tensor, columns: int) -> torch.Tensor:
    """Zero pad spectrograms [..., n_mels, width] narrower than `columns` on the right."""
    return torch.nn.functional.pad(specs, (0, columns - specs.shape[-1])) if specs.shape[-1] < columns else specs
