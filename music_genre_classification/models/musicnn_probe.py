"""model=musicnn_probe: the frozen musicnn backbone's pooled embeddings of a window -> a scikit-learn head.

Two input routes, recorded in the checkpoint (`route`) and used by every consumer:
- "spectrogram": the window's log-mel as the CNN reads it (a stored GTZAN .npy, or computed from audio exactly as the
  stored ones were made: data/spectrogram.py's LogMel), then the fixed adapter (musicnn_adapter.py) to musicnn's input.
  Audio given to such a model goes the same way, not through musicnn's own front end: the head learned from adapted
  embeddings, and those of real audio lie far from them (docs/musicnn.md), so audio through the other route would be
  judged by a head that never saw its like.
- "audio": the window's audio through musicnn's own front end (16 kHz, 96 bands), for audio collections; a stored
  spectrogram has no audio and is refused.
Audio is decoded and cut into windows at 22.05 kHz like every other kind (so that ensembles share their windows and
the music check), and resampled to 16 kHz with musicnn's resampler.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from music_genre_classification.config import UserError
from music_genre_classification.data.spectrogram import LogMel, SpectrogramParams
from music_genre_classification.models.allowlist import genre_names, positive_float, positive_int, spectrogram_params
from music_genre_classification.models.calibration import temperature_scaled
from music_genre_classification.models.musicnn import (
    TAGS,
    MusicnnBackbone,
    MusicnnFrontEnd,
    load_musicnn,
    resample_for_musicnn,
)
from music_genre_classification.models.musicnn_adapter import REFERENCE_DB, spectrogram_to_musicnn_mel

ROUTES = ("spectrogram", "audio")
POOLED = ("penultimate", "mean_pool", "max_pool")  # what the backbone gives per window (all kept in the cache)
EMBEDDINGS = (*POOLED, "mean_max")  # what a head may read; mean_max: mean-pool and max-pool side by side


@lru_cache(maxsize=2)
def frozen_backbone(dataset: str) -> MusicnnBackbone:
    """musicnn with the weights trained on `dataset`, loaded once per process."""
    return load_musicnn(dataset)


class MusicnnAudioFrontEnd:
    """A window of audio at 22.05 kHz -> musicnn's own log-mel (frames, 96) of it at 16 kHz."""

    def __init__(self) -> None:
        self.params = SpectrogramParams()  # 22.05 kHz, 30-s windows: every kind's windows (and the music check's)
        self.log_mel = LogMel(self.params)  # what the music check reads
        self.musicnn = MusicnnFrontEnd()

    @torch.no_grad()
    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        return self.musicnn(resample_for_musicnn(wave, self.params.sample_rate))


@dataclass
class WindowEmbeddings:
    """The backbone's pooled outputs for one window, each a 1-D array (name -> vector, names from POOLED)."""

    vectors: dict[str, np.ndarray]


class MusicnnEmbedder:
    """A route's front end and the frozen backbone: windows -> their pooled embeddings."""

    def __init__(
        self,
        route: str,
        backbone: str = "msd",
        spectrogram: SpectrogramParams | None = None,
        max_patches: int | None = None,
        reference_db: float = REFERENCE_DB,
    ):
        if route not in ROUTES:
            raise UserError(f"musicnn route must be one of {', '.join(ROUTES)}, not {route!r}")
        if backbone not in TAGS:
            raise UserError(f"musicnn backbone must be one of {', '.join(TAGS)}, not {backbone!r}")
        self.route, self.backbone, self.max_patches = route, backbone, max_patches
        self.spectrogram, self.reference_db = spectrogram or SpectrogramParams(), float(reference_db)
        self._front_end = None

    @property
    def front_end(self):
        if self._front_end is None:
            self._front_end = LogMel(self.spectrogram) if self.route == "spectrogram" else MusicnnAudioFrontEnd()
        return self._front_end

    def settings(self) -> dict:
        """What the embeddings depend on (the cache's key, the checkpoint's record)."""
        return {
            "route": self.route,
            "backbone": self.backbone,
            "max_patches": self.max_patches,
            "reference_db": self.reference_db,
            "spectrogram": self.spectrogram.to_dict(),
        }

    def mel(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """A window's input (its stored-style log-mel, or musicnn's log-mel of its audio) -> musicnn's log-mel."""
        if self.route == "spectrogram":
            return torch.from_numpy(spectrogram_to_musicnn_mel(x, self.spectrogram, self.reference_db))
        return torch.as_tensor(x, dtype=torch.float32)

    @torch.inference_mode()
    def embeddings(self, inputs: Sequence) -> list[WindowEmbeddings]:
        model = frozen_backbone(self.backbone)
        result = []
        for x in inputs:
            out = model.from_mel(self.mel(x), self.max_patches)
            result.append(WindowEmbeddings({name: getattr(out, name).numpy().copy() for name in POOLED}))
        return result


def embedding_rows(windows: Sequence[WindowEmbeddings], embedding: str) -> np.ndarray:
    """The head's input rows [windows, dim] of one kind of embedding (EMBEDDINGS)."""
    if embedding == "mean_max":
        return np.stack([np.concatenate([w.vectors["mean_pool"], w.vectors["max_pool"]]) for w in windows])
    return np.stack([w.vectors[embedding] for w in windows])


class MusicnnProbePredictor:
    """A checkpoint of kind musicnn_probe: front end of its route, frozen backbone, scikit-learn head, temperature.

    Its inputs are the front end's (a window's log-mel or musicnn log-mel) or, when scoring a collection whose
    embeddings are cached, WindowEmbeddings: those skip the backbone."""

    def __init__(self, ckpt: dict):
        from music_genre_classification.models.classical import pipeline_from_bytes  # scikit-learn only when needed

        hp = ckpt["hyper_parameters"]
        self.genres = genre_names(hp["genres"])
        self.temperature = positive_float(hp.get("temperature", 1.0), "temperature")
        if hp["embedding"] not in EMBEDDINGS:
            raise UserError(f"its embedding {hp['embedding']!r} is not one of {', '.join(EMBEDDINGS)}")
        self.embedding = hp["embedding"]
        max_patches = hp.get("max_patches")
        self.embedder = MusicnnEmbedder(
            hp["route"] if isinstance(hp["route"], str) else repr(hp["route"]),
            hp["backbone"] if isinstance(hp["backbone"], str) else repr(hp["backbone"]),
            spectrogram_params(hp["spectrogram"]),
            None if max_patches is None else positive_int(max_patches, "max_patches", 1000),
            hp.get("reference_db", REFERENCE_DB) if _number(hp.get("reference_db", REFERENCE_DB)) else REFERENCE_DB,
        )
        if not isinstance(ckpt["pipeline"], bytes):
            raise UserError("its stored model is not bytes")
        self.pipeline = pipeline_from_bytes(ckpt["pipeline"])

    @property
    def route(self) -> str:
        return self.embedder.route

    @property
    def front_end(self):
        return self.embedder.front_end

    def window_embeddings(self, inputs: Sequence) -> list[WindowEmbeddings]:
        todo = [i for i, x in enumerate(inputs) if not isinstance(x, WindowEmbeddings)]
        made = iter(self.embedder.embeddings([inputs[i] for i in todo]))
        return [next(made) if not isinstance(x, WindowEmbeddings) else x for x in inputs]

    def head_probabilities(self, rows: np.ndarray) -> np.ndarray:
        """The head's probabilities of embedding rows, before the temperature; genres absent in training get 0."""
        from threadpoolctl import threadpool_limits

        probs = np.zeros((len(rows), len(self.genres)))
        with threadpool_limits(limits=1):  # small tables: one thread is faster than OpenMP's team (predictors.py)
            probs[:, self.pipeline.classes_.astype(int)] = self.pipeline.predict_proba(rows)
        return probs

    def probabilities(self, inputs: Sequence) -> np.ndarray:
        rows = embedding_rows(self.window_embeddings(inputs), self.embedding)
        return temperature_scaled(self.head_probabilities(rows), self.temperature)

    def embed(self, inputs: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities and the backbone's embedding the head reads (what `embed` and `similar` compare)."""
        rows = embedding_rows(self.window_embeddings(inputs), self.embedding)
        probs = temperature_scaled(self.head_probabilities(rows), self.temperature)
        return probs, rows.astype(np.float32)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
