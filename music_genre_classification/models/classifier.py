"""GenreClassifier: a checkpoint's predictor (models/predictors.py: CNN, features model or ensemble) over whole
tracks: audio or spectrograms in, a genre, every genre's probability and a timeline of windows out.

Imports stay light (no Lightning, no MLflow) so that one file is labelled quickly.
"""

import math
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from music_genre_classification.config import UserError, first_line
from music_genre_classification.data.audio import MIN_DURATION_S, AudioError, decode_blocks, waveform
from music_genre_classification.data.music_check import REASONS, SKIPPED, judged_windows, not_music, window_evidence
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.models.checkpoint import checkpoint_problem, load_checkpoint
from music_genre_classification.models.predictors import judged_track_outputs, predictor
from music_genre_classification.models.tags import NO_SPECTROGRAM_TAGS, audio_tags

SPECTROGRAMS_NEED = "spectrograms need a CNN or a musicnn probe of the spectrogram route; this model reads audio"
SPECTROGRAM_SLACK = 1e-3  # float16 rounding of values stored in [0, 1]
FLAT_SPECTROGRAM = 0.05  # a per-clip min-max normalised log-mel spans [0, 1]; all of one level is silence
# start_s, end_s, the model's input for one window of a track (None: skipped), verdict (None: it may be music; else
# why not, a key of music_check.REASONS)
Window = tuple[float, float, object, str | None]


@dataclass
class Segment:
    start_s: float
    end_s: float
    genre: str | None  # None: no music in this window (not_music says why)
    probability: float | None
    not_music: str | None = None


@dataclass
class Prediction:
    genre: str
    probabilities: dict[str, float]  # every genre, most likely first, summing to 1
    duration_s: float  # of the audio really decoded and classified
    segments: list[Segment] = field(default_factory=list)  # one per window of window_s seconds
    warning: str | None = None  # e.g. the file ends before its header says (cut off): only what is there is judged
    embedding: np.ndarray | None = None  # the model's embedding of the track, when asked for (`embed`)
    # no window sounds like music (speech, a tone, noise...): the genre is only the model's closest guess, and why
    not_music: str | None = None

    @property
    def music(self) -> bool:
        return self.not_music is None

    tags: list[tuple[str, float]] | None = None  # musicnn's top MSD tags of the audio, when asked for (models/tags.py)

    def to_dict(self, segments: bool = True) -> dict:
        row = {"genre": self.genre, "probabilities": self.probabilities, "duration_s": round(self.duration_s, 3)}
        row |= {"music": self.music, "not_music": self.not_music}
        if segments:
            row["segments"] = [vars(s) for s in self.segments]
        if self.warning:
            row["warning"] = self.warning
        if self.tags is not None:
            row["tags"] = [{"tag": tag, "probability": p} for tag, p in self.tags]
        return row


class GenreClassifier:
    def __init__(self, model):
        """`model`: a predictor from models/predictors.py (CNN, features model, musicnn probe or ensemble)."""
        self.model, self.genres = model, list(model.genres)
        self.front_end = model.front_end

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> "GenreClassifier":
        ckpt = load_checkpoint(path)
        try:
            return cls(predictor(ckpt, device))
        except UserError as err:  # e.g. a stored pipeline that holds types not trusted
            raise UserError(f"{path}: {err}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
            raise UserError(f"{path}: damaged or incompatible checkpoint ({checkpoint_problem(err)})") from None

    @property
    def sample_rate(self) -> int:
        return self.front_end.params.sample_rate

    def spectrograms(self, source: str | Path | np.ndarray, sample_rate: int | None = None) -> list[tuple]:
        """A file path, or a waveform at `sample_rate` ([samples], [samples, channels] or [channels, samples]), as
        window spectrograms (start_s, end_s, input) of the windows not skipped (silence, noise)."""
        return [(start, end, x) for start, end, x, _ in self._track(source, sample_rate)[0] if x is not None]

    def _track(
        self, source: str | Path | np.ndarray, sample_rate: int | None, progress: bool = False
    ) -> tuple[list[Window], str | None]:
        """Window spectrograms and the decoder's warning (a file cut off: only what is there is classified);
        `progress`: a bar of the windows done on stderr for a long file (LONG_FILE_WINDOWS windows or more)."""
        if isinstance(source, bytes | bytearray | memoryview) or hasattr(source, "read"):
            raise AudioError("give a path or an array (a waveform with its sample_rate), not bytes or a file object")
        if isinstance(source, str | os.PathLike) and str(source).endswith(".npy"):
            return [self._spectrogram_window(Path(source))], None
        if isinstance(source, str | os.PathLike):
            blocks, name = decode_blocks(source, self.sample_rate, self.front_end.params.window_s), str(source)
        else:
            blocks, name = [waveform(source, sample_rate, self.sample_rate)], "waveform"
        shown = window_progress(blocks, source, self.front_end.params.window_s) if progress else blocks
        windows = judged_windows(shown, self.front_end, name)
        return windows, getattr(blocks, "warning", None)

    def check_spectrograms(self, params_json: Path) -> None:
        """A folder of precomputed spectrograms (.npy + params.json) is fit for this model, or a UserError."""
        if not isinstance(self.front_end, LogMel):
            raise UserError(f"{params_json.parent}: {SPECTROGRAMS_NEED}")
        try:
            found = SpectrogramParams.from_dataset(params_json)
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{params_json}: not a spectrogram description ({first_line(err)})") from None
        if found != self.front_end.params:
            raise UserError(f"{params_json} describes {found}, but the model expects {self.front_end.params}")

    def _spectrogram_window(self, path: Path) -> Window:
        """One precomputed spectrogram [n_mels, columns] (data/dataset/spectrograms) as one window, held to the rules
        audio is: its shape, type and size read from the header (memory-mapped) before any of it is loaded, then
        values in the [0, 1] of a min-max normalised log-mel, no NaN, long enough and not flat (silence)."""
        if not isinstance(self.front_end, LogMel):
            raise AudioError(f"{path}: {SPECTROGRAMS_NEED}")
        try:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise AudioError(f"{path}: not a readable spectrogram ({first_line(err)})") from None
        params = self.front_end.params
        if not isinstance(mapped, np.ndarray) or mapped.ndim != 2 or mapped.shape[0] != params.n_mels:
            raise AudioError(f"{path}: not a spectrogram of {params.n_mels} mel bands (shape {mapped.shape})")
        if mapped.dtype.kind != "f":
            raise AudioError(f"{path}: holds {mapped.dtype} values, not a log-mel spectrogram (floats in [0, 1])")
        seconds = mapped.shape[1] / params.columns_per_second
        if seconds < MIN_DURATION_S:
            raise AudioError(
                f"{path}: too short ({mapped.shape[1]} columns, {seconds:.1f} s; at least {MIN_DURATION_S:g} s)"
            )
        if seconds > params.window_s + 1:
            raise AudioError(
                f"{path}: {mapped.shape[1]} columns ({seconds:.0f} s), more than one {params.window_s:g}-s window"
            )
        spec = np.array(mapped, dtype=np.float32)
        if not np.isfinite(spec).all():
            raise AudioError(f"{path}: holds NaN or infinite values")
        low, high = float(spec.min()), float(spec.max())
        if low < -SPECTROGRAM_SLACK or high > 1 + SPECTROGRAM_SLACK:
            raise AudioError(f"{path}: values {low:.3g}..{high:.3g} out of range: a log-mel spectrogram lies in [0, 1]")
        if high - low < FLAT_SPECTROGRAM:
            raise AudioError(f"{path}: a flat spectrogram (silent, or no signal)")
        spec = torch.from_numpy(spec)
        verdict = not_music(window_evidence(spec, params.top_db))
        if verdict in SKIPPED:
            raise AudioError(f"{path}: the spectrogram holds {REASONS[verdict]} sound, not music")
        return 0.0, seconds, spec, verdict

    def predict(
        self,
        source: str | Path | np.ndarray,
        sample_rate: int | None = None,
        progress: bool = False,
        tags: bool = False,
    ) -> Prediction:
        """The genre of a file or waveform; `progress`: windows done on stderr while a long file is read; `tags`:
        also musicnn's top MSD tags of the audio (an AudioError for a spectrogram .npy, which has no audio)."""
        if tags:
            _check_taggable(source)
        windows, warning = self._track(source, sample_rate, progress)
        with model_progress(windows, source, progress) as done:
            prediction = self._predict_tracks([windows], done=done)[0]
        prediction.warning = warning
        if tags:
            prediction.tags = audio_tags(source, sample_rate)
        return prediction

    def predict_many(
        self, paths: Iterable[str | Path], batch_size: int = 16, embeddings: bool = False, tags: bool = False
    ) -> Iterator[tuple[Path, Prediction | None, str | None]]:
        """(path, prediction, None) or (path, None, error) per file, in order; `embeddings`: each prediction holds
        the track's embedding; `tags`: musicnn's top MSD tags of its audio (a spectrogram .npy is an error).

        Two threads decode and make the inputs of the next batches while the model runs on this one: decoding,
        the front end and the network each hold one core at a time, so both cores stay busy.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
        paths, ahead = iter(paths), deque()
        with ThreadPoolExecutor(max_workers=2) as pool, _torch_threads(1):
            while True:
                while len(ahead) < 2 * batch_size and (path := next(paths, None)) is not None:
                    path = Path(path) if isinstance(path, str | os.PathLike) else path  # else: an error of its own
                    ahead.append((path, pool.submit(self._safe_track, path, tags)))
                if not ahead:
                    return
                batch = [ahead.popleft() for _ in range(min(batch_size, len(ahead)))]
                tracks = [future.result() for _, future in batch]
                good = [t[0] for t in tracks if isinstance(t, tuple)]
                predictions = iter(self._predict_tracks(good, embeddings)) if good else iter(())
                for (path, _), track in zip(batch, tracks):
                    if isinstance(track, tuple):
                        prediction = next(predictions)
                        prediction.warning, prediction.tags = track[1], track[2]
                        yield path, prediction, None
                    else:
                        yield path, None, track

    def _safe_track(self, path: Path, tags: bool = False) -> tuple[list[Window], str | None, list | None] | str:
        """A file's windows, warning and (with `tags`) tags, made in a worker thread; or why it cannot be read: one
        bad item never ends a run over many."""
        if not isinstance(path, Path):
            return f"{path!r}: not a path"
        try:
            if tags:
                _check_taggable(path)
            windows, warning = self._track(path, None)
            return windows, warning, audio_tags(path) if tags else None
        except AudioError as err:
            return str(err)
        except (OSError, ValueError, RuntimeError) as err:  # whatever a decoder raises for one file stays that file's
            return f"{path}: cannot be classified ({first_line(err)})"

    def _predict_tracks(
        self, tracks: list[list[Window]], embeddings: bool = False, done: Callable[[int], None] | None = None
    ) -> list[Prediction]:
        results = []
        for track, (track_probs, window_probs, embedding) in zip(
            tracks, judged_track_outputs(self.model, tracks, embeddings, done)
        ):
            segments = [
                Segment(round(s, 3), round(e, 3), self.genres[int(p.argmax())], round(float(p.max()), 4))
                if verdict is None
                else Segment(round(s, 3), round(e, 3), None, None, REASONS[verdict])
                for (s, e, _, verdict), p in zip(track, window_probs)
            ]
            results.append(self._prediction(track_probs, track[-1][1], segments))
            results[-1].embedding = embedding
            verdicts = [verdict for *_, verdict in track if verdict not in SKIPPED]
            if None not in verdicts:  # no window may be music: the genre is a guess
                results[-1].not_music = REASONS[max(set(verdicts), key=verdicts.count)]
        return results

    def _prediction(self, probs: np.ndarray, duration_s: float, segments: list[Segment]) -> Prediction:
        probs = probs / probs.sum()
        order = np.argsort(-probs)
        ranked = {self.genres[i]: float(probs[i]) for i in order}
        return Prediction(self.genres[order[0]], ranked, duration_s, segments)


def _check_taggable(source: object) -> None:
    if isinstance(source, str | os.PathLike) and str(source).endswith(".npy"):
        raise AudioError(f"{source}: {NO_SPECTROGRAM_TAGS}")


LONG_FILE_WINDOWS = 10  # a file this many windows long (5 min of 30-s windows) shows its progress


def window_progress(blocks: Iterable[np.ndarray], source: object, window_s: float) -> Iterable[np.ndarray]:
    """The decoded blocks (one window each) counted by a tqdm bar on stderr when the file is long; a file whose
    length the header does not tell (decoded by ffmpeg) gets the bar once it has taken a few seconds."""
    from tqdm import tqdm

    if not isinstance(source, str | os.PathLike):
        return blocks
    try:
        windows = math.ceil(sf.info(str(source)).duration / window_s)
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError):
        windows = None
    if windows is not None and windows < LONG_FILE_WINDOWS:
        return blocks
    name = Path(str(source)).name
    return tqdm(
        blocks, total=windows, desc=f"{name}: read", unit=" windows", file=sys.stderr, delay=0 if windows else 3
    )


@contextmanager
def model_progress(windows: list[Window], source: object, progress: bool) -> Iterator[Callable[[int], None] | None]:
    """After reading a long file, a second bar counts its windows through the model (the musicnn backbone takes
    about ten times as long as reading them); None (no bar) for a short file, a waveform or without `progress`."""
    from tqdm import tqdm

    if not progress or not isinstance(source, str | os.PathLike) or len(windows) < LONG_FILE_WINDOWS:
        yield None
        return
    judged, name = sum(w[2] is not None for w in windows), Path(str(source)).name
    with tqdm(total=judged, desc=f"{name}: genre", unit=" windows", file=sys.stderr, delay=1) as bar:
        yield bar.update


@contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads for a while: with the front end in worker threads beside the network, one each
    keeps the two cores busy without the threads of one stage waiting on another's (2 each halved the rate)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
