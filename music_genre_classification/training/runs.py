"""A training run's bookkeeping, the same for every model kind (network, features model, ensemble): its folder
outputs/<date>/<time>/ with config.yaml, split.csv, val_metrics.json and plots; outputs/model_full.ckpt -> its model;
the MLflow run's parameters and artifacts; the summary printed at the end."""

import json
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from music_genre_classification.config import artifact_location, build, to_dict

RUN_DIR_ENV = "MGC_RUN_DIR"  # DDP workers re-run the command; they join the run their launcher started


def new_run_dir(output_dir: str) -> Path:
    if os.environ.get(RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[RUN_DIR_ENV])
    now = datetime.now()
    run_dir = base = Path(output_dir) / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S")
    for n in range(1, 1000):
        if not run_dir.exists():
            break
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def point_latest(best: Path, link: Path) -> None:
    """outputs/model_full.ckpt -> the best checkpoint of the latest run (a relative symlink, else a copy)."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(os.path.relpath(best.resolve(), link.parent.resolve()))
    except OSError:
        tmp.write_bytes(best.read_bytes())
    os.replace(tmp, link)


class Run:
    """One training run: `start` makes its folder (cfg.run_dir) and MLflow run, `record_setup` writes what it trains
    on, `finish` what came out. Every model kind goes through these three, so every run leaves the same files."""

    def __init__(self, cfg: DictConfig, mlflow_run_id: str | None = None, log: bool = True):
        self.cfg = cfg
        self.dir = new_run_dir(cfg.output_dir)
        cfg.run_dir = str(self.dir)
        self.logger = False
        if log and cfg.get("logger"):  # a local store keeps its artifacts (mlruns/) under the outputs, not the cwd
            store = {"artifact_location": artifact_location(cfg.logger.tracking_uri, cfg.output_dir)}
            self.logger = build(cfg.logger, run_id=mlflow_run_id, **(store if "tracking_uri" in cfg.logger else {}))
        self.artifacts: list[Path] = []

    @property
    def plots(self) -> Path:
        return self.dir / "plots"

    def record_setup(self, write_split: Callable[[Path], None] | None = None) -> None:
        """config.yaml (resolved), split.csv (every clip's part) and the MLflow parameters."""
        OmegaConf.save(self.cfg, self.dir / "config.yaml", resolve=True)
        self.artifacts.append(self.dir / "config.yaml")
        if write_split is not None:
            write_split(self.dir / "split.csv")
            self.artifacts.append(self.dir / "split.csv")
        if self.logger:
            self.logger.log_hyperparams(to_dict(self.cfg))

    def finish(self, checkpoint: Path, result: dict, artifacts: Iterable[Path] = (), summary: str = "") -> dict:
        """outputs/model_full.ckpt -> `checkpoint`, val_metrics.json (`result`), the artifacts to MLflow, and the
        run's summary: its folder, its checkpoint, then `summary`."""
        point_latest(checkpoint, Path(self.cfg.output_dir) / "model_full.ckpt")
        (self.dir / "val_metrics.json").write_text(json.dumps(result, indent=2))
        if self.logger:
            for path in [*self.artifacts, *artifacts]:
                self.logger.experiment.log_artifact(self.logger.run_id, str(path))
        print(f"\nrun directory:   {self.dir}\nbest checkpoint: {checkpoint}" + (f"\n{summary}" if summary else ""))
        return result

    def save_fitted(self, blob: dict, data: object, val: dict) -> tuple[Path, dict]:
        """checkpoints/model.ckpt of a scikit-learn model kind (features model, musicnn probe): `blob` (its
        hyper-parameters and pipeline) with `data`'s split table and the `val` metrics, as a network's checkpoint
        stores them; then `record_setup` with `data`'s split. Returns the checkpoint and the val metrics."""
        import torch

        checkpoint = self.dir / "checkpoints" / "model.ckpt"
        checkpoint.parent.mkdir(parents=True)
        val_metrics = {f"val/{k}": v for k, v in val.items() if k != "confusion"}
        torch.save(blob | {"split_table": data.split_table, "val_metrics": val_metrics}, checkpoint)
        self.record_setup(data.write_split)
        return checkpoint, val_metrics

    def finish_fitted(
        self,
        checkpoint: Path,
        result: dict,
        metrics: dict,
        summary: str,
        val: dict,
        genres: list[str],
        write_grid: Callable[[Path], Path] | None = None,
    ) -> dict:
        """`finish` for a scikit-learn model kind: also the val confusion plot (when there were val clips), the
        grid's table (`write_grid`, when a grid was searched), `metrics` to MLflow, whose run then ends."""
        from music_genre_classification.training.plots import plot_confusion

        artifacts = []
        if val:
            self.plots.mkdir()
            artifacts.append(plot_confusion(val["confusion"], genres, self.plots / "confusion_val.png", "val"))
        if write_grid is not None:
            artifacts.append(write_grid(self.dir / "grid.csv"))
        if self.logger:
            self.logger.log_metrics(metrics)
        self.finish(checkpoint, result, artifacts, summary)
        if self.logger:
            self.logger.finalize("success")
        return result


def metrics_line(metrics: dict) -> str:
    """validation: val/acc=0.8000  val/f1=...; or that there were no val clips."""
    shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("val/")) or "none (no val clips)"
    return f"validation:      {shown}"
