"""test: score a checkpoint on the test part of its own split, or on any other labelled GTZAN-layout data."""

import json
from pathlib import Path

import numpy as np

from music_genre_classification.config import UserError, compose, first_line, to_dict
from music_genre_classification.data.datamodule import GenreDataModule
from music_genre_classification.data.fetch import ensure_data
from music_genre_classification.serving.inference import GenreClassifier, load_checkpoint
from music_genre_classification.training.plots import plot_confusion
from music_genre_classification.training.train import build


def report(confusion: np.ndarray, genres: list[str]) -> dict:
    """Accuracy, macro-F1 (over genres present in the data) and per-genre precision/recall/F1."""
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
        "per_genre": {g: {k: float(v) if k != "support" else v for k, v in m.items()} for g, m in per_genre.items()},
        "confusion": {"genres": genres, "matrix": confusion.astype(int).tolist()},
    }


def format_report(result: dict) -> str:
    genres = result["confusion"]["genres"]
    lines = [f"clips {result['clips']}   accuracy {result['accuracy']:.4f}   macro-F1 {result['macro_f1']:.4f}", ""]
    lines.append(f"{'genre':<10} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}")
    for genre, m in result["per_genre"].items():
        lines.append(f"{genre:<10} {m['precision']:9.3f} {m['recall']:7.3f} {m['f1']:6.3f} {m['support']:7d}")
    lines += ["", "confusion (rows: true, columns: predicted)", " " * 10 + " ".join(f"{g[:5]:>5}" for g in genres)]
    for genre, row in zip(genres, result["confusion"]["matrix"]):
        lines.append(f"{genre:<10}" + " ".join(f"{n:5d}" for n in row))
    return "\n".join(lines)


def test(checkpoint: str, overrides: list[str]) -> dict:
    from music_genre_classification.models.lightning_module import GenreModule

    ckpt = load_checkpoint(checkpoint)
    GenreClassifier.from_checkpoint(checkpoint, device="cpu")  # a damaged checkpoint is one line, before any work
    cfg = compose("test", overrides)
    saved = ckpt["hyper_parameters"].get("run_config") or {}
    if "datamodule" not in saved:
        raise UserError(f"{checkpoint}: holds no run config (datamodule) to find its data; is it from `train`?")
    settings = {k: v for k, v in to_dict(cfg.datamodule).items() if v is not None}
    dm_cfg = {k: v for k, v in saved["datamodule"].items() if k != "_target_"} | settings
    split = build(cfg.split) if cfg.get("split") else None
    datamodule = GenreDataModule(**dm_cfg, split=split, split_table=None if split else ckpt.get("split_table"))
    trainer = build(cfg.trainer, enable_model_summary=False)
    ensure_data(dm_cfg["root"], cfg.data)
    try:
        module = GenreModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"{checkpoint}: damaged or incompatible checkpoint ({first_line(err)})") from None
    trainer.test(module, datamodule=datamodule, verbose=False)

    genres = list(ckpt["hyper_parameters"]["genres"])
    result = report(module.last_confusion["test"].numpy(), genres)
    result |= {"checkpoint": str(checkpoint), "data": str(dm_cfg["root"]), "split": split.name if split else "stored"}
    tag = "test" if split is None else f"test_{Path(dm_cfg['root']).name}_{split.name}"
    out = Path(checkpoint).resolve().with_suffix(f".{tag}.json")
    out.write_text(json.dumps(result, indent=2))
    plot_confusion(np.array(result["confusion"]["matrix"]), genres, out.with_suffix(".png"), tag)
    print(format_report(result))
    print(f"\nwritten: {out}")
    return result
