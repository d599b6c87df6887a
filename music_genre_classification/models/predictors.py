"""One predictor per checkpoint kind, all used the same way by GenreClassifier and `test`.

A predictor has `genres`, a `front_end` that turns a window of audio (a 1-D float tensor at front_end.params'
sample rate) into the model's input, `probabilities(inputs)` -> [len(inputs), genres] and `embed(inputs)` -> those
probabilities and an embedding per input [len(inputs), dim] (what `embed`, `map` and `similar` compare). Kinds:
- cnn: log-mel spectrogram -> the CNN, softmax averaged over the crops covering the window (a Lightning checkpoint);
- features: the 57 features (one row, or one per chunk) -> a scikit-learn pipeline, averaged over the chunks;
- musicnn_probe: a window's log-mel (through the fixed adapter) or musicnn log-mel of its audio, as its route says
  -> the frozen musicnn backbone's pooled embedding -> a scikit-learn head (models/musicnn_probe.py);
- ensemble: a weighted average of its members' probabilities, each member fed by its own front end.
Every kind applies the temperature its checkpoint holds (hyper_parameters.temperature, fitted on val; see
calibration.py) to its clip probabilities; an ensemble's members keep theirs and the blend may have its own.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch

from music_genre_classification.config import UserError
from music_genre_classification.data.spectrogram import LogMel
from music_genre_classification.models.allowlist import (
    build_network,
    genre_names,
    positive_float,
    positive_int,
    spectrogram_params,
)
from music_genre_classification.models.calibration import temperature_scaled
from music_genre_classification.models.networks import clip_outputs, clip_probabilities, for_inference

# what each kind must hold
KIND_KEYS = {"cnn": "state_dict", "features": "pipeline", "musicnn_probe": "pipeline", "ensemble": "members"}


def one_thread():
    """Small feature tables run faster on one thread than on OpenMP's team, and far faster on a busy machine
    (HistGradientBoosting on 90 rows: 0.4 s against 19 s on a loaded 2-core host)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def checkpoint_kind(ckpt: dict) -> str | None:
    """cnn, features, musicnn_probe or ensemble for a checkpoint of this project (older CNN checkpoints name no
    kind), else None."""
    if not isinstance(ckpt, dict) or not isinstance(hp := ckpt.get("hyper_parameters"), dict) or "genres" not in hp:
        return None
    kind = hp.get("kind", "cnn")
    return kind if isinstance(kind, str) and kind in KIND_KEYS and KIND_KEYS[kind] in ckpt else None


class CNNPredictor:
    def __init__(self, ckpt: dict, device: str):
        """The network is one of this project's, named and built from plain settings (allowlist.py): no code runs."""
        hp = ckpt["hyper_parameters"]
        self.genres = genre_names(hp["genres"])
        self.front_end = LogMel(spectrogram_params(hp["spectrogram"]))
        self.crop, self.hop = positive_int(hp["crop_columns"], "crop_columns"), positive_int(hp["eval_hop"], "eval_hop")
        self.temperature = positive_float(hp.get("temperature", 1.0), "temperature")
        net = build_network(hp["net"], n_genres=len(self.genres))
        if not isinstance(ckpt["state_dict"], dict):
            raise UserError("its weights are not a table of tensors")
        net.load_state_dict({k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")})
        self.net = for_inference(net.to(device))

    @torch.inference_mode()
    def probabilities(self, specs: list[torch.Tensor]) -> np.ndarray:
        probs = clip_probabilities(self.net, specs, self.crop, self.hop).cpu().numpy()
        return temperature_scaled(probs, self.temperature)

    @torch.inference_mode()
    def embed(self, specs: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities and the penultimate layer, both averaged over the crops covering each window."""
        probs, embeddings = clip_outputs(self.net, specs, self.crop, self.hop)
        return temperature_scaled(probs.cpu().numpy(), self.temperature), embeddings.float().cpu().numpy()


class FeaturePredictor:
    def __init__(self, pipeline, genres: list[str], segment_s: float | None = None, temperature: float = 1.0):
        self.pipeline, self.genres, self.segment_s = pipeline, list(genres), segment_s
        self.temperature = temperature
        self._front_end = None

    @property
    def front_end(self):
        if self._front_end is None:  # built when audio comes: scoring a features table needs no extractor
            from music_genre_classification.data.feature_data import FeatureFrontEnd

            self._front_end = FeatureFrontEnd(self.segment_s)
        return self._front_end

    def probabilities(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Each input is the feature rows of one window (one row, or one per chunk); its chunks are averaged."""
        probs = np.zeros((sum(len(rows) for rows in inputs), len(self.genres)))  # genres absent in training: 0
        with one_thread():
            probs[:, self.pipeline.classes_.astype(int)] = self.pipeline.predict_proba(np.concatenate(inputs))
        return temperature_scaled(_chunk_means(probs, inputs), self.temperature)

    def embed(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The probabilities and the features as the pipeline's classifier sees them (scaled, projected)."""
        with one_thread():
            features = self.pipeline[:-1].transform(np.concatenate(inputs))
        return self.probabilities(inputs), _chunk_means(np.asarray(features, np.float32), inputs)


def _chunk_means(values: np.ndarray, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of values, one per chunk of the inputs -> one per input, its chunks averaged."""
    ends = np.cumsum([len(rows) for rows in inputs])
    return np.stack([chunks.mean(0) for chunks in np.split(values, ends[:-1])])


class EnsembleFrontEnd:
    """Every member's input from the same window of audio."""

    def __init__(self, front_ends: list):
        if len({(f.params.sample_rate, f.params.window_s) for f in front_ends}) > 1:
            raise UserError("the members of an ensemble must read audio at one sample rate and window length")
        self.front_ends, self.params = front_ends, front_ends[0].params
        self.log_mel = getattr(front_ends[0], "log_mel", front_ends[0])  # for track_spectrograms' noise check

    def __call__(self, wave: torch.Tensor) -> tuple:
        return tuple(front_end(wave) for front_end in self.front_ends)


class EnsemblePredictor:
    def __init__(self, ckpt: dict, device: str):
        hp = ckpt["hyper_parameters"]
        self.genres, weights = genre_names(hp["genres"]), hp["weights"]
        self.temperature = positive_float(hp.get("temperature", 1.0), "temperature")
        members = ckpt["members"]
        if not isinstance(members, list) or not isinstance(weights, list) or len(weights) != len(members):
            raise UserError("its members and weights are not two lists of one length")
        self.weights = [0.0 if type(w) in (int, float) and w == 0 else positive_float(w, "weight") for w in weights]
        self.members = []
        for member in members:
            if checkpoint_kind(member) not in ("cnn", "features", "musicnn_probe"):
                raise UserError("a member of the ensemble is not a model of this project")
            self.members.append(predictor(member, device))
        self.orders = [[m.genres.index(g) for g in self.genres] for m in self.members]  # member column per genre
        self._front_end = None

    @property
    def front_end(self) -> EnsembleFrontEnd:
        if self._front_end is None:
            self._front_end = EnsembleFrontEnd([m.front_end for m in self.members])
        return self._front_end

    def probabilities(self, inputs: Sequence[tuple]) -> np.ndarray:
        blend = sum(
            weight * member.probabilities([x[i] for x in inputs])[:, order]
            for i, (member, weight, order) in enumerate(zip(self.members, self.weights, self.orders))
        )
        return temperature_scaled(blend, self.temperature)

    def embed(self, inputs: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
        """The members' unit-length embeddings side by side, each scaled by the square root of its weight: the
        cosine similarity of two such embeddings is the weighted mean of the members' cosine similarities."""
        parts = []
        for i, (member, weight) in enumerate(zip(self.members, self.weights)):
            embeddings = member.embed([x[i] for x in inputs])[1]
            norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
            parts.append(np.sqrt(weight) * embeddings / np.maximum(norms, 1e-12))
        return self.probabilities(inputs), np.concatenate(parts, axis=1).astype(np.float32)


def predictor(ckpt: dict, device: str | None = None):
    """The predictor for a checkpoint loaded by load_checkpoint; the CNN runs on `device` (default: GPU if any)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = checkpoint_kind(ckpt)
    if kind == "features":
        from music_genre_classification.models.classical import pipeline_from_bytes  # scikit-learn only when needed

        hp = ckpt["hyper_parameters"]
        segment_s = None if hp.get("segment_s") is None else positive_float(hp["segment_s"], "segment_s")
        temperature = positive_float(hp.get("temperature", 1.0), "temperature")
        if not isinstance(ckpt["pipeline"], bytes):
            raise UserError("its stored model is not bytes")
        pipeline = pipeline_from_bytes(ckpt["pipeline"])
        return FeaturePredictor(pipeline, genre_names(hp["genres"]), segment_s, temperature)
    if kind == "musicnn_probe":
        from music_genre_classification.models.musicnn_probe import MusicnnProbePredictor  # the backbone when needed

        return MusicnnProbePredictor(ckpt)
    if kind == "ensemble":
        return EnsemblePredictor(ckpt, device)
    return CNNPredictor(ckpt, device)


def track_probabilities(model, tracks: list[list[tuple]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per track, its windows' probabilities averaged with the windows' lengths as weights; and per window."""
    if not tracks:
        return np.zeros((0, len(model.genres))), []
    probs = model.probabilities([x for track in tracks for _, _, x in track])
    return track_means(probs, tracks), _per_track(probs, tracks)


def track_embeddings(model, tracks: list[list[tuple]]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """track_probabilities' two results, and per track its windows' embeddings averaged the same way."""
    probs, embeddings = model.embed([x for track in tracks for _, _, x in track])
    return track_means(probs, tracks), _per_track(probs, tracks), track_means(embeddings, tracks)


def track_means(values: np.ndarray, tracks: list[list[tuple]]) -> np.ndarray:
    """Rows of values, one per window of the tracks -> one per track, longer windows counting more."""
    means, i = [], 0
    for track in tracks:
        lengths = np.array([end - start for start, end, _ in track])
        if lengths.sum() <= 0:
            lengths = np.ones(len(track))
        means.append((values[i : i + len(track)] * lengths[:, None]).sum(0) / lengths.sum())
        i += len(track)
    return np.array(means).reshape(len(tracks), -1)


def _per_track(values: np.ndarray, tracks: list[list[tuple]]) -> list[np.ndarray]:
    ends = np.cumsum([len(track) for track in tracks])
    return np.split(values, ends[:-1])


PROGRESS_WINDOWS = 8  # windows per step when the caller counts them (the CNN runs 8 windows at once anyway)


def model_outputs(model, inputs: list, embeddings: bool = False, done: Callable[[int], None] | None = None) -> tuple:
    """The model's probabilities (and embeddings, or None) of window inputs; `done(n)` is told of every
    PROGRESS_WINDOWS windows run, for a bar over a long track (every kind scores each window on its own, so the
    figures are the same in steps)."""
    if done is None:
        return model.embed(inputs) if embeddings else (model.probabilities(inputs), None)
    parts = []
    for first in range(0, len(inputs), PROGRESS_WINDOWS):
        step = inputs[first : first + PROGRESS_WINDOWS]
        parts.append(model_outputs(model, step, embeddings))
        done(len(step))
    probs = np.concatenate([p for p, _ in parts])
    return probs, np.concatenate([v for _, v in parts]) if embeddings else None


def judged_track_outputs(
    model, tracks: list[list[tuple]], embeddings: bool = False, done: Callable[[int], None] | None = None
) -> list[tuple]:
    """Per track of windows (start_s, end_s, input or None, verdict: None where it may be music), the model run on
    the windows that have an input: (probabilities averaged over its music windows, or over all judged windows when
    none is music; per window its probabilities or None; its embedding averaged the same way, or None).
    `done`: see model_outputs."""
    judged = [[w for w in track if w[2] is not None] for track in tracks]
    inputs = [w[2] for track in judged for w in track]
    if not inputs:
        return []
    probs, vectors = model_outputs(model, inputs, embeddings, done)
    results, i = [], 0
    for track, kept in zip(tracks, judged):
        window_probs = probs[i : i + len(kept)]
        music = np.array([w[3] is None for w in kept])
        use = music if music.any() else np.ones(len(kept), bool)
        weights = np.array([max(w[1] - w[0], 1e-9) for w in kept])[use, None]
        mean_probs = (window_probs[use] * weights).sum(0) / weights.sum()
        embedding = (vectors[i : i + len(kept)][use] * weights).sum(0) / weights.sum() if embeddings else None
        found = iter(window_probs)
        results.append((mean_probs, [next(found) if w[2] is not None else None for w in track], embedding))
        i += len(kept)
    return results
