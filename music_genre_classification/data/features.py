"""The 57 GTZAN features of features_30_sec.csv, from one STFT on the torch front end.

The definitions are librosa's at 22050 Hz as the published table applied them: librosa before 0.10, whose STFTs and
RMS frames were reflect-padded (with that padding librosa 0.11 reproduces the table's rows to a median relative error
of 8e-8, with its own zero padding to 4e-4), and tempo as `beat_track` estimates it (median onset envelope).
Each mean/var pair is kept as (count, mean, sum of squared deviations) so that the windows of a long track pool
exactly: a track is processed window by window in flat memory.
"""

import functools
import math
import operator
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from music_genre_classification.data import feature_kernels as kernels
from music_genre_classification.data.running_median import running_median
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams

SAMPLE_RATE, N_FFT, HOP, N_MELS = 22050, 2048, 512, 128
N_MFCC, N_CHROMA = 20, 12
HPSS_KERNEL = 31  # median filter length, frames (harmonic) and bins (percussive)
TEMPO_WINDOW = 8 * SAMPLE_RATE // HOP  # 344 onset frames: librosa's 8-s autocorrelation window
TINY32 = float(np.finfo(np.float32).tiny)  # librosa's threshold below which a frame is not normalised
SUMMARISED = [
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    "harmony",
    "perceptr",
    *[f"mfcc{i}" for i in range(1, N_MFCC + 1)],
]
_PAIRS = [f"{name}_{stat}" for name in SUMMARISED for stat in ("mean", "var")]
FEATURE_COLUMNS: list[str] = [*_PAIRS[:16], "tempo", *_PAIRS[16:]]
TABLE_COLUMNS = ["filename", "length", *FEATURE_COLUMNS, "label"]
MAX_BATCH_SAMPLES = 4 * 30 * SAMPLE_RATE  # waves of equal length go through together, up to this many samples


@dataclass
class Moments:
    """What the 57 features of a stretch of audio are made of; `a + b` is the stretch a followed by b."""

    count: np.ndarray  # [28] values behind each summarised feature
    mean: np.ndarray  # [28]
    m2: np.ndarray  # [28] sum of squared deviations from the mean
    tempogram: np.ndarray  # [TEMPO_WINDOW] normalised onset autocorrelation, mean over frames
    frames: int
    onsets: bool  # any onset strength at all: librosa's beat_track gives tempo 0 without

    def __add__(self, other: "Moments") -> "Moments":
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / count
        frames = self.frames + other.frames
        tempogram = (self.tempogram * self.frames + other.tempogram * other.frames) / frames
        return Moments(count, mean, m2, tempogram, frames, self.onsets or other.onsets)

    @property
    def samples(self) -> int:
        return int(self.count[SUMMARISED.index("harmony")])

    def features(self) -> np.ndarray:
        pairs = np.stack([self.mean, self.m2 / self.count], 1).reshape(-1)
        return np.concatenate([pairs[:16], [self.tempo()], pairs[16:]])

    def tempo(self) -> float:
        """librosa's estimate: the lag of the strongest mean autocorrelation under a log-normal prior around 120 BPM."""
        if not self.onsets:
            return 0.0
        with np.errstate(divide="ignore"):
            bpm = 60.0 * SAMPLE_RATE / (HOP * np.arange(TEMPO_WINDOW, dtype=np.float64))
        log_prior = np.where(bpm < 320.0, -0.5 * (np.log2(bpm) - np.log2(120.0)) ** 2, -np.inf)
        return float(bpm[np.argmax(np.log1p(1e6 * self.tempogram) + log_prior)])


class FeatureExtractor:
    """Waveforms (mono float32 at 22050 Hz) -> the 57 features, float64 [n, 57], batched by length."""

    sample_rate = SAMPLE_RATE

    def __init__(self):
        self.window = torch.hann_window(N_FFT)
        self.window_np = self.window.numpy()
        self.stage_cpu: dict[str, float] | None = None  # a dict: CPU seconds per stage are added up in it
        self._lock = threading.Lock()
        self._local = threading.local()  # reused buffers, a set per thread: predict_many extracts on two at once
        self.mel = LogMel(SpectrogramParams(sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS))
        self.freqs = torch.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1, dtype=torch.float64)
        self.dct = _dct_ortho(N_MFCC, N_MELS).float()
        self.ac_window = torch.hann_window(TEMPO_WINDOW)
        fft_freqs = self.freqs_np = self.freqs.numpy()
        self.pitch_bins = (int(np.argmax(fft_freqs >= 150.0)), int(np.argmax(fft_freqs >= 4000.0)))
        self.tuning_edges = torch.linspace(-0.5, 0.5, 101, dtype=torch.float64).numpy()
        self.threads = ThreadPoolExecutor(2)

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        moments = self.moments(waves)
        return np.stack([m.features() for m in moments]) if moments else np.zeros((0, len(FEATURE_COLUMNS)))

    def track(self, windows: Iterable[np.ndarray]) -> "Moments":
        """Consecutive windows of one track pooled as one clip (memory of one window): .features(), .samples."""
        return functools.reduce(operator.add, (self.moments([w])[0] for w in windows))

    def moments(self, waves: list[np.ndarray]) -> list[Moments]:
        out: list[Moments | None] = [None] * len(waves)
        by_length: dict[int, list[int]] = {}
        for i, wave in enumerate(waves):
            if len(wave) < N_FFT:
                raise ValueError(f"waves need at least {N_FFT} samples, got {len(wave)}")
            by_length.setdefault(len(wave), []).append(i)
        for length, indices in by_length.items():
            per_batch = max(1, MAX_BATCH_SAMPLES // length)
            for start in range(0, len(indices), per_batch):
                batch = indices[start : start + per_batch]
                y = torch.from_numpy(np.stack([np.asarray(waves[i], dtype=np.float32) for i in batch]))
                for i, m in zip(batch, self._moments(y)):
                    out[i] = m
        return out

    @torch.no_grad()
    def _moments(self, y: torch.Tensor) -> list[Moments]:
        stage = self._stage
        spectra = stage("STFT", self._stft, y)
        power, magnitude = stage("|X|^2 and |X|", self._power_magnitude, spectra)
        # HPSS on the two worker threads (numba releases the GIL): the median over frames on one, the median over bins
        # then the masked spectra on the other
        masked = self._buffer("masked", spectra.shape, torch.complex64)
        hpss = []
        for clip in zip(spectra.numpy(), magnitude.numpy(), masked.numpy()):
            harmonic = self.threads.submit(
                stage, "HPSS median over frames (worker)", running_median, clip[1], HPSS_KERNEL
            )
            hpss.append(self.threads.submit(self._mask_spectra, *clip, harmonic))
        chroma = self._chroma(power).numpy()
        mel_db = stage("mel spectrogram (dB)", self._mel_db, power)
        mfcc = stage("MFCC (DCT)", torch.matmul, mel_db, self.dct.T).numpy()
        onset = stage("onset strength", _onset_envelope, mel_db)
        tempogram = stage("tempogram", self._tempogram, onset).numpy()
        out = []
        for b, clip in enumerate(y.numpy()):
            rms, zcr = stage("rms + zero crossings", kernels.rms_zcr, clip, N_FFT, HOP)
            shape = stage("centroid, bandwidth, rolloff", kernels.spectral_shape, magnitude[b].numpy(), self.freqs_np)
            hpss[b].result()
            harmony = stage("inverse STFT (harmonic)", self._istft, masked[b].numpy(), len(clip))
            series = [chroma[b].reshape(-1), rms, *shape, zcr, harmony]
            stats = stage("means and variances", _summaries, series, clip, mfcc[b])
            out.append(Moments(*stats, tempogram[b], onset.shape[1], bool(onset[b].ne(0).any())))
        return out

    def _mask_spectra(self, spectra: np.ndarray, magnitude: np.ndarray, out: np.ndarray, harmonic: Future) -> None:
        """out = spectra times HPSS's harmonic mask, from the median over bins computed here and the one over frames."""
        percussive = self._stage("HPSS median over bins (worker)", running_median, magnitude, HPSS_KERNEL, 1)
        self._stage("HPSS mask (worker)", kernels.apply_hpss_mask, spectra, harmonic.result(), percussive, out)

    def _stage(self, name: str, function, *args):
        """function(*args), its thread's CPU time added to self.stage_cpu[name] when that is a dict (a profile)."""
        if self.stage_cpu is None:
            return function(*args)
        start = time.thread_time()
        result = function(*args)
        with self._lock:
            self.stage_cpu[name] = self.stage_cpu.get(name, 0.0) + time.thread_time() - start
        return result

    def _stft(self, y: torch.Tensor) -> torch.Tensor:
        """[batch, frames, bins] complex64: torch.stft(center=True, pad_mode="reflect") to the bit, in fewer copies."""
        frames = F.pad(y[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[:, 0].unfold(-1, N_FFT, HOP)
        windowed = torch.mul(frames, self.window, out=self._buffer("frames", frames.shape, torch.float32))
        spectra = self._buffer("spectra", (*frames.shape[:2], N_FFT // 2 + 1), torch.complex64)
        return torch.fft.rfft(windowed, out=spectra)

    def _power_magnitude(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """|X|^2 and |X| of [batch, frames, bins] spectra, float32."""
        power = self._buffer("power", spectra.shape, torch.float32)
        magnitude = self._buffer("magnitude", spectra.shape, torch.float32)
        for s, p, m in zip(spectra.numpy(), power.numpy(), magnitude.numpy()):
            kernels.power_magnitude(s, p, m)
        return power, magnitude

    def _istft(self, spectra: np.ndarray, length: int) -> np.ndarray:
        """Inverse of the centered STFT, [frames, bins] -> [length] float32."""
        frames = self._buffer("inverse", (len(spectra), N_FFT), torch.float32)
        torch.fft.irfft(torch.from_numpy(spectra), n=N_FFT, out=frames)
        return kernels.overlap_add(frames.numpy(), self.window_np, _envelope(len(frames)), HOP, length)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor kept for reuse between calls (fresh memory costs page faults: ~10% of the CPU time per clip)."""
        buffers = self._local.__dict__.setdefault("buffers", {})
        buffer = buffers.get(name)
        if buffer is None or buffer.shape != tuple(shape) or buffer.dtype != dtype:
            buffer = buffers[name] = torch.empty(shape, dtype=dtype)
        return buffer

    def _mel_db(self, power: torch.Tensor) -> torch.Tensor:
        """[batch, frames, 128] power_to_db(melspectrogram) with ref 1 and top_db 80, as MFCC and onsets use it."""
        db = 10 * torch.log10(torch.clamp(self.mel.mel_power(power), min=1e-10))
        return torch.maximum(db, db.amax((1, 2), keepdim=True) - 80.0)

    def _chroma(self, power: torch.Tensor) -> torch.Tensor:
        """[batch, frames, 12] chroma_stft: tuning-corrected chroma filters, each frame scaled to a peak of 1."""
        lo, hi, edges = *self.pitch_bins, self.tuning_edges
        tunings = [
            self._stage("chroma tuning estimate", kernels.tuning, p, lo, hi, SAMPLE_RATE, N_FFT, edges)
            for p in power.numpy()
        ]
        return self._stage("chroma", self._chroma_project, power, tunings)

    def _chroma_project(self, power: torch.Tensor, tunings: list[float]) -> torch.Tensor:
        filters = torch.stack([_chroma_filters(t) for t in tunings])
        chroma = power @ filters.transpose(1, 2)
        peak = chroma.amax(-1, keepdim=True)
        return chroma / torch.where(peak < TINY32, 1.0, peak)

    def _tempogram(self, onset: torch.Tensor) -> torch.Tensor:
        """[batch, TEMPO_WINDOW] autocorrelation of 8-s hann-windowed onset frames, each scaled to a peak of 1, mean.

        An autocorrelation peaks at lag 0 (the frame's energy) and the inverse FFT is linear, so the frames' scaled
        power spectra are averaged first and inverted once.
        """
        half, frames = TEMPO_WINDOW // 2, onset.shape[1]
        ramp = torch.arange(half, dtype=torch.float64) / half  # np.pad's linear_ramp down to 0 at both ends
        edges = onset[:, :1].double() * ramp, onset[:, -1:].double() * ramp.flip(0)
        padded = torch.cat([edges[0].float(), onset, edges[1].float()], 1)
        x = padded.unfold(1, TEMPO_WINDOW, 1)[:, :frames] * self.ac_window
        energy = x.square().sum(-1, keepdim=True)
        spectrum = torch.fft.rfft(x, n=720)  # >= 2 * TEMPO_WINDOW - 1 samples: no circular wrap
        power = torch.addcmul(spectrum.real.square(), spectrum.imag, spectrum.imag)
        mean_power = (power / torch.where(energy < TINY32, 1.0, energy)).mean(1, dtype=torch.float64)
        return torch.fft.irfft(mean_power, n=720)[:, :TEMPO_WINDOW]


def _summaries(series: list[np.ndarray], clip: np.ndarray, mfcc: np.ndarray) -> tuple[np.ndarray, ...]:
    """Count, mean and sum of squared deviations (float64) of the 28 summarised features of one clip: the 1-D series
    of chroma to harmony (the harmonic waveform), then the percussive waveform clip - harmony, then the MFCC columns."""
    pairs = [kernels.mean_m2(s) for s in series]
    pairs.append(kernels.difference_mean_m2(clip, series[-1]))
    mean, m2 = (np.array([p[k] for p in pairs]) for k in range(2))
    mfcc_mean, mfcc_m2 = kernels.columns_mean_m2(mfcc)
    count = [len(s) for s in series] + [len(clip)] + [len(mfcc)] * mfcc.shape[1]
    return np.array(count, float), np.concatenate([mean, mfcc_mean]), np.concatenate([m2, mfcc_m2])


def _onset_envelope(mel_db: torch.Tensor) -> torch.Tensor:
    """[batch, frames] onset strength as beat_track computes it: the median over mels of the positive dB rise."""
    medians = torch.from_numpy(np.stack([kernels.onset_medians(clip) for clip in mel_db.numpy()]))
    return F.pad(medians, (3, 0))[:, : mel_db.shape[1]]  # lag 1 + centering (N_FFT // 2 // HOP) frames


@functools.lru_cache(maxsize=16)
def _envelope(frames: int) -> np.ndarray:
    """The summed squared hann window of `frames` STFT frames (the inverse STFT's divisor), float32."""
    return kernels.window_envelope(torch.hann_window(N_FFT).numpy(), frames, HOP)


@functools.lru_cache(maxsize=128)
def _chroma_filters(tuning: float) -> torch.Tensor:
    """librosa.filters.chroma(sr=22050, n_fft=2048, tuning=tuning): [12, bins] float32."""
    frequencies = np.linspace(0, SAMPLE_RATE, N_FFT, endpoint=False)[1:]
    a440 = 440.0 * 2.0 ** (tuning / N_CHROMA)
    octave_bins = N_CHROMA * np.log2(frequencies / (a440 / 16))
    octave_bins = np.concatenate([[octave_bins[0] - 1.5 * N_CHROMA], octave_bins])
    widths = np.concatenate([np.maximum(octave_bins[1:] - octave_bins[:-1], 1.0), [1]])
    distance = np.subtract.outer(octave_bins, np.arange(N_CHROMA, dtype="d")).T
    half = np.round(N_CHROMA / 2)
    distance = np.remainder(distance + half + 10 * N_CHROMA, N_CHROMA) - half
    weights = np.exp(-0.5 * (2 * distance / widths) ** 2)
    weights /= np.sqrt((weights**2).sum(0, keepdims=True))
    weights *= np.exp(-0.5 * ((octave_bins / N_CHROMA - 5.0) / 2.0) ** 2)  # centred on octave 5, 2 octaves wide
    weights = np.roll(weights, -3, axis=0)  # start at C
    return torch.from_numpy(np.ascontiguousarray(weights[:, : N_FFT // 2 + 1], dtype=np.float32))


def _dct_ortho(n_out: int, n_in: int) -> torch.Tensor:
    """[n_out, n_in] orthonormal DCT-II (scipy's dct(type=2, norm='ortho')), float64."""
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    n = torch.arange(n_in, dtype=torch.float64)[None]
    basis = torch.cos(math.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2 / n_in)
    basis[0] /= math.sqrt(2)
    return basis


def segment_blocks(
    blocks: Iterable[np.ndarray], segment_s: float, sample_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """GTZAN's chunks from a stream of audio: chunk i starts at i * segment_s and is one sample short of segment_s.

    That is how features_3_sec.csv cuts a 30-s clip: 10 chunks of 66149 samples, 3 s apart. A track holds
    round(duration / segment_s) chunks (at least one); the last takes what is left, so a 29.99-s clip has 10 too.
    """
    step = round(segment_s * sample_rate)
    size, pending, emitted = step - 1, np.zeros(0, np.float32), False
    for block in blocks:
        pending = np.concatenate([pending, block]) if len(pending) else block
        while len(pending) >= 2 * step:  # a whole chunk that cannot be the last
            yield pending[:size]
            pending, emitted = pending[step:], True
    count = math.floor(len(pending) / step + 0.5)
    for i in range(count if emitted or not len(pending) else max(1, count)):
        yield pending[i * step : i * step + size]


def segment_waves(wave: np.ndarray, segment_s: float) -> list[np.ndarray]:
    """The chunks of one waveform at 22050 Hz (see segment_blocks)."""
    return list(segment_blocks([wave], segment_s))
