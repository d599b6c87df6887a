"""train: compose configs, fit on crops, keep the best checkpoint by val/loss, log everything to MLflow."""

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from music_genre_classification.config import UserError, build, compose, to_dict
from music_genre_classification.data.collection import is_auto
from music_genre_classification.data.fetch import ensure_data
from music_genre_classification.training.calibrate import calibrate
from music_genre_classification.training.plots import plot_confusion, plot_curves
from music_genre_classification.training.progress import EpochLine, quiet_third_parties, show_progress_bar
from music_genre_classification.training.runs import Run, metrics_line


class History(L.Callback):
    """Epoch-level metrics, for the training-curve plots."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if "/" in k}
            self.rows.append({"epoch": trainer.current_epoch, **metrics})

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.rows or self.rows[-1]["epoch"] != trainer.current_epoch:  # no validation this epoch
            self.rows.append({"epoch": trainer.current_epoch})
        self.rows[-1].update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def parameter_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha1()
    for tensor in module.state_dict().values():
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def make_trainer(cfg: DictConfig, logger, history: History, validate: bool, extra: Sequence = ()) -> L.Trainer:
    # lr_monitor needs a logger; a callback set to null (callbacks.lr_monitor=null) is off
    wanted = {name: c for name, c in cfg.callbacks.items() if c is not None and (logger or name != "lr_monitor")}
    trainer_args = {}
    if not validate:  # only the checkpoint callback, saving the last epoch
        wanted = {name: c for name, c in wanted.items() if c.get("monitor") is None or name == "checkpoint"}
        wanted["checkpoint"] = {**wanted["checkpoint"], "monitor": None}
        trainer_args = {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    callbacks = [build(c) for c in wanted.values()] + [history, *extra]
    progress_bar = cfg.trainer.get("enable_progress_bar", show_progress_bar())
    trainer_args["enable_progress_bar"] = progress_bar
    # Lightning's layer table (ending in "Total FLOPs: 0" on the CPU) is left out unless asked for
    trainer_args["enable_model_summary"] = cfg.trainer.get("enable_model_summary", False)
    if not progress_bar:
        callbacks.append(EpochLine())
    return build(cfg.trainer, callbacks=callbacks, logger=logger, default_root_dir=cfg.run_dir, **trainer_args)


def is_features_run(cfg: DictConfig) -> bool:
    """model=features_* (a scikit-learn pipeline) trains on datamodule=features; the networks on spectrograms."""
    features_model = "pipeline" in cfg.model
    features_data = str(cfg.datamodule.get("_target_", "")).endswith(".FeatureDataModule")
    if features_model and not features_data:
        raise UserError("a features model (model=features_*) needs datamodule=features")
    if features_data and not features_model:
        raise UserError("datamodule=features feeds the features models only (model=features_logreg, ...)")
    return features_model


def build_module(cfg: DictConfig, genres: list[str]) -> L.LightningModule:
    return build(
        cfg.model,
        _recursive_=False,
        _convert_="all",
        genres=genres,
        spectrogram=to_dict(cfg.datamodule.spectrogram),
        crop_columns=cfg.datamodule.crop_columns,
        run_config=to_dict(cfg),
    )


def train(overrides: list[str]) -> dict:
    """Train a model. Hydra overrides, e.g.: model=baseline trainer.max_epochs=5 datamodule.batch_size=64 trainer=gpu"""
    cfg = compose("train", overrides)
    if cfg.get("members"):  # an ensemble: one training per member (experiment=best)
        from music_genre_classification.training.train_ensemble import train_members

        return train_members(cfg, overrides, train)
    return fit(cfg)


def fit(cfg: DictConfig, callbacks: Sequence[L.Callback] = (), mlflow_run_id: str | None = None) -> dict:
    """One training run of a composed train config; `tune` passes its pruning callback and a child MLflow run."""
    quiet_third_parties()
    if cfg.model.get("kind") == "musicnn_probe":  # the frozen musicnn backbone and a scikit-learn head
        from music_genre_classification.training.train_probe import train_probe

        return train_probe(cfg, Run(cfg, mlflow_run_id))
    features = is_features_run(cfg)
    run = Run(cfg, mlflow_run_id)
    if features:
        from music_genre_classification.training.train_features import train_features

        return train_features(cfg, run)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    history = History()
    logger = run.logger
    trainer = make_trainer(cfg, logger, history, True, callbacks)  # bad overrides fail here, before any download
    listed = None if is_auto(cfg.datamodule.genres) else list(cfg.datamodule.genres)
    module = build_module(cfg, listed) if listed else None  # bad model settings fail here, before any data is read
    ensure_data(cfg.datamodule.root, cfg.data)
    datamodule = build(cfg.datamodule, split=build(cfg.split))
    datamodule.setup("fit")
    validate = bool(len(datamodule.parts["val"][0]))
    if not validate:  # e.g. split.val_fraction=0: every train clip is used, and the last epoch is the model
        print("no val clips: training for trainer.max_epochs without early stopping; the last epoch is kept")
        trainer = make_trainer(cfg, logger, history, False, callbacks)
    if list(datamodule.genres) != listed:  # genres=auto, top_genres, min_clips: the genres found go into the model
        cfg.datamodule.genres = list(datamodule.genres)
        module = build_module(cfg, list(datamodule.genres))

    module.split_table = datamodule.split_table
    if trainer.is_global_zero:
        run.plots.mkdir(exist_ok=True)
        run.record_setup(datamodule.write_split)

    trainer.fit(module, datamodule=datamodule)
    best = Path(trainer.checkpoint_callback.best_model_path)
    val = {}
    if validate:
        val = trainer.validate(module, datamodule, ckpt_path=str(best), verbose=False)[0]
        val = {k: float(v) for k, v in val.items()}
    result = {"run_dir": str(run.dir), "best_checkpoint": str(best), **val}
    if trainer.world_size > 1:
        (run.dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({**result, "parameters_sha1": parameter_digest(module)}, indent=2)
        )
    if not trainer.is_global_zero:
        return result
    summary = metrics_line(val)
    if validate:  # probabilities that mean what they say: T fitted on val, applied by every consumer
        result["temperature"] = calibrate(best, best, datamodule=datamodule)
        summary += f"\ntemperature:     {result['temperature']:.3f} (fitted on val, stored in the checkpoint)"
    pngs = plot_curves(history.rows, run.plots)
    if validate:
        confusion = module.last_confusion["val"].numpy()
        genres = list(cfg.datamodule.genres)
        pngs.append(plot_confusion(confusion, genres, run.plots / "confusion_val.png", "val"))
    return run.finish(best, result, pngs, summary)
