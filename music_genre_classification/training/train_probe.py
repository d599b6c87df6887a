"""train model=musicnn_probe: the frozen musicnn backbone's embeddings of a collection (computed once and cached,
training/probe_data.py), then a scikit-learn head whose embedding and settings are chosen by artist-grouped
cross-validation on the train clips; the temperature from the same out-of-fold probabilities.
"""

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import ParameterGrid

from music_genre_classification.config import UserError, build, first_line, to_dict
from music_genre_classification.data.fetch import ensure_data
from music_genre_classification.data.spectrogram import SpectrogramParams
from music_genre_classification.data.split import folds_of
from music_genre_classification.models.calibration import fit_temperature
from music_genre_classification.models.classical import pipeline_to_bytes
from music_genre_classification.models.musicnn_probe import (
    EMBEDDINGS,
    MusicnnEmbedder,
    MusicnnProbePredictor,
    embedding_rows,
)
from music_genre_classification.training.evaluate import clip_metrics, metrics
from music_genre_classification.training.probe_data import ProbeData, resolve_route
from music_genre_classification.training.runs import Run, metrics_line


def window_table(data: ProbeData, ids: list[str], labels: list[int], embedding: str):
    """One row per music window of the clips: its embedding, its clip's label and the clip's index."""
    rows, row_labels, owners = [], [], []
    for i, (clip, label) in enumerate(zip(ids, labels)):
        windows = data.music_windows(clip)
        rows.append(embedding_rows([x for _, _, x in windows], embedding))
        row_labels += [label] * len(windows)
        owners += [i] * len(windows)
    return np.concatenate(rows), np.array(row_labels), np.array(owners)


def out_of_fold(cfg: DictConfig, data: ProbeData, params: dict, folds: dict[str, int]) -> np.ndarray:
    """Clip probabilities [train clips, genres] of a head fitted on the other folds (whole artists), per fold."""
    ids, labels = data.parts["train"]
    embedding = params.get("embedding", cfg.model.embedding)
    rows, row_labels, owners = window_table(data, ids, labels, embedding)
    fold_of_row = np.array([folds[ids[i]] for i in owners])
    probs = np.zeros((len(rows), len(data.genres)))  # genres absent from a fold's training rows: 0
    for k in sorted(set(fold_of_row)):
        held = fold_of_row == k
        head = fitted_head(cfg, params, rows[~held], row_labels[~held])
        probs[np.ix_(held, head.classes_.astype(int))] = head.predict_proba(rows[held])
    return np.stack([probs[owners == i].mean(0) for i in range(len(ids))])


def genres_in_one_fold(clip_genres: dict[str, str], folds: dict[str, int]) -> list[str]:
    """Genres whose train clips all lie in one fold (every genre when there are no folds): a head fitted on the other
    folds has never seen them, so cross-validation cannot score them."""
    seen: dict[str, set] = {}
    for clip, genre in clip_genres.items():
        seen.setdefault(genre, set()).add(folds.get(clip))
    return sorted(g for g, held in seen.items() if len(held) < 2)


def fitted_head(cfg: DictConfig, params: dict, rows: np.ndarray, labels: np.ndarray):
    from threadpoolctl import threadpool_limits

    head = build(cfg.model.pipeline, _convert_="all")
    try:
        head.set_params(**{k: v for k, v in params.items() if k != "embedding"})
    except ValueError as err:
        raise UserError(f"model.grid: {err}") from None
    try:
        with threadpool_limits(limits=1):
            return head.fit(rows, labels)
    except Exception as err:  # a user-chosen estimator refusing its settings
        raise UserError(f"cannot fit the head with {params or 'its settings'}: {first_line(err)}") from None


def embedder_from(cfg: DictConfig) -> MusicnnEmbedder:
    route = resolve_route(str(cfg.model.route), cfg.datamodule.root)
    return MusicnnEmbedder(
        route,
        str(cfg.model.backbone),
        SpectrogramParams(**to_dict(cfg.datamodule.spectrogram)),
        cfg.model.get("max_patches"),
        float(cfg.model.reference_db),
        str(cfg.model.get("adapter", "fixed")),
    )


def train_probe(cfg: DictConfig, run: Run) -> dict:
    grid = to_dict(cfg.model.grid) if cfg.model.get("grid") else {}
    candidates = list(ParameterGrid(grid)) if grid else [{}]
    for params in candidates:
        if params.get("embedding", cfg.model.embedding) not in EMBEDDINGS:
            raise UserError(f"model.embedding must be one of {', '.join(EMBEDDINGS)}")
    embedder = embedder_from(cfg)
    ensure_data(cfg.datamodule.root, cfg.data)
    data = ProbeData(
        **{k: v for k, v in to_dict(cfg.datamodule).items() if k != "_target_"},
        embedder=embedder,
        split=build(cfg.split),
        embedding_cache=cfg.model.cache_dir,
    )
    data.setup()
    genres = list(data.genres)
    cfg.datamodule.genres = genres
    ids, labels = data.parts["train"]
    if not ids:
        raise UserError("the split has no train clips")
    n_folds = min(int(cfg.model.cv_folds), len({data.artists.get(c, c) for c in ids}))
    clip_genres = dict(zip(ids, (genres[i] for i in labels)))
    folds = folds_of(clip_genres, data.artists, n_folds, cfg.seed) if n_folds > 1 else {}
    unscored = genres_in_one_fold(clip_genres, folds)
    if unscored:  # few clips per genre: out-of-fold scores would count such a genre's clips as wrong by design
        what = "model.grid and the temperature need" if len(candidates) > 1 else "the temperature needs"
        print(
            f"warning: {what} out-of-fold scores, and the train clips of {len(unscored)} genre(s) "
            f"({', '.join(unscored[:3])}{', ...' if len(unscored) > 3 else ''}) are of one artist (a clip without "
            f"one is its own): no fold can score them. Using model.embedding={cfg.model.embedding} and the "
            f"pipeline's own settings, temperature 1"
        )
        candidates, folds = [{}], {}

    tried = []
    for params in candidates:
        if folds:
            oof = out_of_fold(cfg, data, params, folds)
            scores = metrics(oof, np.array(labels), genres)
        else:
            oof, scores = None, {}
        tried.append((params, oof, scores))
        if len(candidates) > 1:
            print(f"grid {params}: out-of-fold acc {scores['acc']:.4f}, log loss {scores['loss']:.4f}")
    select = str(cfg.model.get("select", "acc"))
    if select not in ("acc", "loss"):
        raise UserError(f"model.select must be acc or loss, not {select!r}")
    if select == "loss":  # the best probabilities (what a blend and the temperature work with)
        params, oof, cv = min(tried, key=lambda t: t[2].get("loss", 0))  # first of equals
    else:
        params, oof, cv = max(tried, key=lambda t: (t[2].get("acc", 0), -t[2].get("loss", 0)))
    embedding = params.get("embedding", cfg.model.embedding)
    rows, row_labels, _ = window_table(data, ids, labels, embedding)
    head = fitted_head(cfg, params, rows, row_labels)
    # the temperature from the out-of-fold probabilities of whole artists the head did not see (every train clip)
    temperature = fit_temperature(oof, np.array(labels)) if oof is not None else 1.0

    hyper_parameters = {
        "kind": "musicnn_probe",
        "genres": genres,
        **embedder.settings(),
        "embedding": embedding,
        "chosen": params,
        "temperature": temperature,
        "run_config": to_dict(cfg),
    }
    blob = {"hyper_parameters": hyper_parameters, "pipeline": pipeline_to_bytes(head)}
    model = MusicnnProbePredictor(blob)
    val = clip_metrics(model, *data.tracks("val")) if data.parts["val"][0] else {}
    checkpoint, val_metrics = run.save_fitted(blob, data, val)
    cv_metrics = {f"cv/{k}": v for k, v in cv.items() if k != "confusion"}
    train = clip_metrics(model, *data.tracks("train"))
    metrics_ = {"train/acc": train["acc"], **cv_metrics, **val_metrics}
    result = {"run_dir": str(run.dir), "best_checkpoint": str(checkpoint), "route": embedder.route}
    result |= {"embedding": embedding, "chosen": params, "temperature": temperature, **metrics_}
    summary = metrics_line(metrics_)
    if cv:
        groups = "folds of whole artists" if data.artists else "folds"
        summary += f"\nout of fold:     acc={cv['acc']:.4f}  loss={cv['loss']:.4f} ({n_folds} {groups})"
    summary += f"\nchosen:          route={embedder.route} embedding={embedding} {params or ''}".rstrip()
    summary += f"\ntemperature:     {temperature:.3f} (fitted out of fold, stored in the checkpoint)"
    grid = (lambda path: write_grid(tried, path)) if len(candidates) > 1 else None
    return run.finish_fitted(checkpoint, result, metrics_, summary, val, genres, grid)


def write_grid(tried: list, path: Path) -> Path:
    names = sorted({k for params, _, _ in tried for k in params})
    lines = [",".join([*names, "cv_acc", "cv_f1", "cv_loss"])]
    for params, _, cv in tried:
        values = [str(params.get(n, "")) for n in names]
        lines.append(",".join([*values, *(f"{cv.get(k, float('nan')):.4f}" for k in ("acc", "f1", "loss"))]))
    path.write_text("\n".join(lines) + "\n")
    return path
