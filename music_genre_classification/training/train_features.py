"""train model=features_*: fit a scikit-learn pipeline on the train clips' feature rows, choosing `model.grid` on val.

The same run bookkeeping as the networks (training/runs.py): outputs/<date>/<time>/ with config.yaml, split.csv,
checkpoints/model.ckpt, the val confusion PNG and val_metrics.json; MLflow params, metrics, artifacts; model_full.ckpt
"""

import csv
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from sklearn.model_selection import ParameterGrid

from music_genre_classification.config import UserError, build, first_line, to_dict
from music_genre_classification.data.features import FEATURE_COLUMNS
from music_genre_classification.data.fetch import ensure_data
from music_genre_classification.models.classical import pipeline_to_bytes
from music_genre_classification.models.predictors import FeaturePredictor, one_thread
from music_genre_classification.training.evaluate import clip_metrics
from music_genre_classification.training.runs import Run, metrics_line


def configured(cfg: DictConfig, params: dict):
    pipeline = build(cfg.model.pipeline, _convert_="all")
    try:
        return pipeline.set_params(**params)
    except ValueError as err:
        raise UserError(f"model.grid: {err}") from None


def train_features(cfg: DictConfig, run: Run) -> dict:
    grid = to_dict(cfg.model.grid) if cfg.model.get("grid") else {}
    candidates = list(ParameterGrid(grid)) if grid else [{}]
    for params in candidates:  # bad settings fail here, before any data is read
        configured(cfg, params)
    ensure_data(cfg.datamodule.root, cfg.data)
    data = build(cfg.datamodule, split=build(cfg.split))
    data.setup()
    genres, segment_s = list(data.genres), cfg.datamodule.get("segment_s")
    cfg.datamodule.genres = genres  # datamodule.genres=auto: the genres found go into the checkpoint
    validate = bool(data.tracks("val")[0])
    if len(candidates) > 1 and not validate:
        raise UserError("model.grid is chosen on val clips and this split has none; drop the grid with ~model.grid")
    rows, labels = data.rows("train")

    tried = []
    for params in candidates:
        try:
            with one_thread():
                pipeline = configured(cfg, params).fit(rows, labels)
        except Exception as err:  # a user-chosen estimator (scikit-learn, XGBoost, CatBoost) refusing its settings
            raise UserError(f"cannot fit the model with {params or 'its settings'}: {first_line(err)}") from None
        model = FeaturePredictor(pipeline, genres, segment_s)
        val = clip_metrics(model, *data.tracks("val")) if validate else {}
        tried.append((params, model, val))
        if len(candidates) > 1:
            print(f"grid {params}: val acc {val['acc']:.4f}, macro-F1 {val['f1']:.4f}, loss {val['loss']:.4f}")
    params, model, val = max(tried, key=lambda t: (t[2].get("acc", 0), -t[2].get("loss", 0)))  # first of equals
    train = clip_metrics(model, *data.tracks("train"))

    hyper_parameters = {
        "kind": "features",
        "genres": genres,
        "segment_s": segment_s,
        "feature_columns": list(FEATURE_COLUMNS),
        "chosen": params,
        "run_config": to_dict(cfg),
    }
    blob = {"hyper_parameters": hyper_parameters, "pipeline": pipeline_to_bytes(model.pipeline)}
    checkpoint, val_metrics = run.save_fitted(blob, data, val)
    metrics = {"train/acc": train["acc"], **val_metrics}
    result = {"run_dir": str(run.dir), "best_checkpoint": str(checkpoint), "chosen": params, **metrics}
    if run.logger:
        for step, (_, _, scores) in enumerate(tried):
            run.logger.log_metrics({f"grid/val_{k}": v for k, v in scores.items() if k != "confusion"}, step=step)
    chosen = f"\nchosen on val:   {params}" if len(candidates) > 1 else ""
    grid = (lambda path: write_grid(tried, path)) if len(candidates) > 1 else None
    return run.finish_fitted(checkpoint, result, metrics, metrics_line(metrics) + chosen, val, genres, grid)


def write_grid(tried: list, path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        names = sorted(tried[0][0])
        writer.writerow([*names, "val_acc", "val_f1", "val_loss"])
        for params, _, val in tried:
            writer.writerow([*(params[n] for n in names), *(np.round(val[k], 4) for k in ("acc", "f1", "loss"))])
    return path
