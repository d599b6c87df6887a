"""test: score a checkpoint (CNN, features model or ensemble) on the test part of its own split, or on any other
labelled data (a GTZAN-layout folder of audio or spectrograms, or a features table)."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from music_genre_classification.config import (
    UserError,
    artifact_location,
    build,
    compose,
    make_sqlite_folder,
    project_path,
    to_dict,
)
from music_genre_classification.data.datamodule import GenreDataModule
from music_genre_classification.data.dataset import DataError
from music_genre_classification.data.feature_data import FeatureDataModule
from music_genre_classification.data.fetch import ensure_data
from music_genre_classification.data.split import read_artists
from music_genre_classification.models.calibration import ece_of_a_calibrated_model, reliability, temperature_scaled
from music_genre_classification.models.checkpoint import load_checkpoint
from music_genre_classification.models.classifier import GenreClassifier
from music_genre_classification.models.predictors import checkpoint_kind, track_probabilities
from music_genre_classification.training.plots import plot_confusion, plot_reliability
from music_genre_classification.training.progress import quiet_third_parties
from music_genre_classification.training.uncertainty import bootstrap_intervals


def report(confusion: np.ndarray, genres: list[str]) -> dict:
    """Accuracy, macro-F1 and balanced accuracy (over genres present in the data), per-genre precision/recall/F1."""
    true, predicted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    per_genre = {}
    for i, genre in enumerate(genres):
        precision = hits[i] / predicted[i] if predicted[i] else 0.0
        recall = hits[i] / true[i] if true[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_genre[genre] = {"precision": precision, "recall": recall, "f1": f1, "support": int(true[i])}
    present = [g for g in genres if per_genre[g]["support"]]
    return {
        "clips": int(confusion.sum()),
        "accuracy": float(hits.sum() / max(confusion.sum(), 1)),
        "macro_f1": float(np.mean([per_genre[g]["f1"] for g in present])) if present else 0.0,
        "balanced_accuracy": float(np.mean([per_genre[g]["recall"] for g in present])) if present else 0.0,
        "per_genre": {g: {k: float(v) if k != "support" else v for k, v in m.items()} for g, m in per_genre.items()},
        "confusion": {"genres": genres, "matrix": confusion.astype(int).tolist()},
    }


def format_report(result: dict) -> str:
    genres = result["confusion"]["genres"]
    lines = [f"clips {result['clips']}   accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}"]
    lines += [f"balanced accuracy {result['balanced_accuracy']:.4f}", ""]
    lines.append(f"{'genre':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}")
    for genre, m in result["per_genre"].items():
        lines.append(f"{genre:<10} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:7d}")
    lines += ["", "confusion (rows: true, columns: predicted)", " " * 10 + " ".join(f"{g[:5]:>5}" for g in genres)]
    for genre, row in zip(genres, result["confusion"]["matrix"]):
        lines.append(f"{genre:<10}" + " ".join(f"{n:5d}" for n in row))
    return "\n".join(lines)


def confusion_matrix(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    confusion = np.zeros((probs.shape[1],) * 2, dtype=int)
    np.add.at(confusion, (np.asarray(labels, dtype=int), probs.argmax(1)), 1)
    return confusion


def log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean negative log probability of the true genre, for each of a stack of tables [..., clips, genres]."""
    return -np.log(np.clip(probs[..., np.arange(len(labels)), labels], 1e-8, None)).mean(-1)


def metrics(probs: np.ndarray, labels: np.ndarray, genres: list[str]) -> dict:
    """Accuracy, macro-F1, mean log loss and the confusion matrix of clip probabilities."""
    confusion = confusion_matrix(labels, probs)
    result = report(confusion, genres)
    loss = float(log_loss(probs, np.asarray(labels, dtype=int)))
    return {"acc": result["accuracy"], "f1": result["macro_f1"], "loss": loss, "confusion": confusion}


def clip_metrics(model, ids: list[str], labels: list[int], tracks: list) -> dict:
    """metrics() of a predictor on clips given as tracks."""
    return metrics(track_probabilities(model, tracks)[0], labels, model.genres)


@dataclass
class ClipScores:
    ids: list[str]
    labels: np.ndarray  # genre index per clip
    probs: np.ndarray  # [clips, genres]
    genres: list[str]

    def aligned(self, ids: list[str], genres: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities of the clips `ids`, in that order, with genres numbered and ordered as `genres`."""
        rows = [self.ids.index(c) for c in ids]
        labels = np.array([genres.index(self.genres[i]) for i in self.labels[rows]], dtype=int)
        return labels, self.probs[rows][:, [self.genres.index(g) for g in genres]]


def common_ids(scores: list[ClipScores]) -> list[str]:
    return [c for c in scores[0].ids if all(c in s.ids for s in scores[1:])]


def clip_scores(ckpt: dict, model, part: str, data: dict, data_cfg, split=None, split_table=None) -> ClipScores:
    """A checkpoint's probabilities for the clips of one part, each kind on its own inputs.

    `data`: datamodule settings that replace the ones stored in the checkpoint (e.g. root); `split` assigns the parts
    anew (split=all), else `split_table` (default: the checkpoint's) replays them. An ensemble's members each read
    their own data (spectrograms for a CNN, a features table for a features model; both from an audio folder given
    as root), and are joined by clip id.
    """
    hp = ckpt["hyper_parameters"]
    split_table = ckpt.get("split_table") if split_table is None else split_table
    if checkpoint_kind(ckpt) == "ensemble":
        members = [
            clip_scores(m, pm, part, data, data_cfg, split, split_table)
            for m, pm in zip(ckpt["members"], model.members)
        ]
        ids = common_ids(members)
        aligned = [m.aligned(ids, model.genres) for m in members]
        probs = temperature_scaled(sum(w * probs for w, (_, probs) in zip(model.weights, aligned)), model.temperature)
        return ClipScores(ids, aligned[0][0], probs, model.genres)
    if "datamodule" not in (hp.get("run_config") or {}):
        raise UserError("the checkpoint holds no run config (datamodule) to find its data; is it from `train`?")
    saved = {k: v for k, v in hp["run_config"]["datamodule"].items() if k != "_target_"}
    settings = saved | {k: v for k, v in data.items() if v is not None}
    # the model's genres, whatever their counts in the data scored (top_genres, min_clips chose them in training)
    settings |= {k: None for k in ("top_genres", "min_clips", "sampler") if k in settings}
    ensure_data(settings["root"], data_cfg)
    if checkpoint_kind(ckpt) == "musicnn_probe":  # its own route, the collection's cached embeddings
        from music_genre_classification.training.probe_data import probe_scores_data

        datamodule = probe_scores_data(hp, settings, split, None if split else split_table)
        datamodule.setup("test")
        ids, labels, tracks = datamodule.tracks(part)
        probs, _ = track_probabilities(model, tracks)
        return ClipScores(list(ids), np.array(labels, dtype=int), probs, list(hp["genres"]))
    kind = FeatureDataModule if checkpoint_kind(ckpt) == "features" else GenreDataModule
    try:
        datamodule = kind(**settings, split=split, split_table=None if split else split_table)
    except TypeError as err:
        raise UserError(f"bad datamodule setting for this checkpoint: {err}") from None
    datamodule.setup("test")
    ids, labels, tracks = datamodule.tracks(part)
    probs, _ = track_probabilities(model, tracks)
    return ClipScores(list(ids), np.array(labels, dtype=int), probs, list(hp["genres"]))


def test(checkpoint: str, overrides: list[str]) -> dict:
    """Score CHECKPOINT on the test part of its split, or on other data: datamodule.root=/path split=all"""
    quiet_third_parties()
    ckpt = load_checkpoint(checkpoint)
    model = GenreClassifier.from_checkpoint(checkpoint).model  # a damaged checkpoint is one line, before any work
    cfg = compose("test", overrides)
    split = build(cfg.split) if cfg.get("split") else None
    data = to_dict(cfg.datamodule)
    scores = clip_scores(ckpt, model, "test", data, cfg.data, split)
    if not scores.ids:
        raise DataError("no test clip to score")
    genres = list(ckpt["hyper_parameters"]["genres"])
    result = report(confusion_matrix(scores.labels, scores.probs), genres)
    root = data.get("root") or "the checkpoint's data"
    result |= {"checkpoint": str(checkpoint), "data": str(root), "split": split.name if split else "stored"}
    artists = clip_artists(ckpt, split, scores.ids)
    result |= bootstrap_intervals(scores.labels, scores.probs.argmax(1), len(genres), artists)
    temperature = float(ckpt["hyper_parameters"].get("temperature", 1.0))
    # the predictor applied T; softmax(T log p') undoes softmax(log p / T) exactly, giving the unscaled p back
    bins = {"before": reliability(temperature_scaled(scores.probs, 1 / temperature), scores.labels)}
    bins["after"] = reliability(scores.probs, scores.labels)
    result["calibration"] = {"temperature": temperature, "bins": len(bins["after"]["counts"])}
    result["calibration"] |= {"ece_before": bins["before"]["ece"], "ece_after": bins["after"]["ece"]}
    result["calibration"]["ece_if_calibrated"] = ece_of_a_calibrated_model(scores.probs)
    tag = "test" if split is None else f"test_{Path(root).name.removesuffix('.csv')}_{split.name}"
    out = Path(checkpoint).resolve().with_suffix(f".{tag}.json")
    out.write_text(json.dumps(result, indent=2))
    plots = [plot_confusion(np.array(result["confusion"]["matrix"]), genres, out.with_suffix(".png"), tag)]
    plots.append(plot_reliability(bins, out.with_suffix(".reliability.png")))
    print(format_report(result))
    print(format_uncertainty(result))
    if cfg.get("mlflow"):
        log_test_run(result, ckpt, cfg.mlflow, tag, [out, *plots])
    print(f"\nwritten: {out}")
    return result


def clip_artists(ckpt: dict, split, ids: list[str]) -> list[str] | None:
    """The artist of each clip when the split names an artist index (split.artists), else None; a clip missing
    from the index is an artist of its own."""
    index = getattr(split, "artists", None)
    if split is None:
        for source in [ckpt, *ckpt.get("members", [])]:
            path = (source["hyper_parameters"].get("run_config") or {}).get("split", {}).get("artists")
            if path:
                index = read_artists(path)
                break
    return [index.get(c) or c for c in ids] if index else None


def format_uncertainty(result: dict) -> str:
    boot, cal = result["bootstrap"], result["calibration"]
    lines = [f"95% intervals, bootstrap over {boot['units']} {boot['resampled']} ({boot['resamples']} resamples):"]
    for name, key in (("accuracy", "accuracy"), ("macro-F1", "macro_f1")):
        low, high = result[f"{key}_ci95"]
        lines.append(f"  {name:<9} {result[key]:.4f}  [{low:.4f}, {high:.4f}]")
    lines.append(
        f"calibration: temperature {cal['temperature']:.3f}; expected calibration error ({cal['bins']} bins) "
        f"{cal['ece_before']:.4f} before scaling, {cal['ece_after']:.4f} after "
        f"(a perfectly calibrated model would show {cal['ece_if_calibrated']:.4f} on these clips)"
    )
    return "\n".join(lines)


def log_test_run(result: dict, ckpt: dict, settings, tag: str, files: list[Path]) -> None:
    """The test's figures, intervals and plots (keys `<tag>/...`) on the checkpoint's training run in its MLflow store,
    or on a new run there when that run is not in the store (an ensemble, a checkpoint from elsewhere)."""
    import mlflow

    run_config = ckpt["hyper_parameters"].get("run_config") or {}
    logger = run_config.get("logger") or {}
    output_dir = run_config.get("output_dir") or project_path("outputs")
    tracking_uri = settings.get("tracking_uri") or logger.get("tracking_uri") or f"sqlite:///{output_dir}/mlflow.db"
    make_sqlite_folder(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    name = settings.get("experiment_name") or logger.get("experiment_name") or "music-genre-classification"
    experiment = client.get_experiment_by_name(name)
    location = artifact_location(tracking_uri, output_dir)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name, location)
    runs = []
    if run_config.get("run_dir"):
        query = f"tags.`mlflow.runName` = '{run_config['run_dir']}'"
        runs = client.search_runs([experiment_id], filter_string=query, max_results=1)
    run_id = (
        runs[0].info.run_id
        if runs
        else client.create_run(experiment_id, run_name=f"{tag} {result['checkpoint']}").info.run_id
    )
    metrics = {f"{tag}/{k}": result[k] for k in ("accuracy", "macro_f1")}
    for key in ("accuracy", "macro_f1"):
        low, high = result[f"{key}_ci95"]
        metrics |= {f"{tag}/{key}_ci95_low": low, f"{tag}/{key}_ci95_high": high}
    metrics |= {f"{tag}/{k}": v for k, v in result["calibration"].items()}
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=tag)
    if not runs:
        client.set_terminated(run_id)
