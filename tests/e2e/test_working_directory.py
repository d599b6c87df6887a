"""Every command finds data and outputs the same way from any directory: the project's folder, never the cwd."""

import pytest
from helpers.processes import REPO
from omegaconf import OmegaConf

from music_genre_classification.config import compose
from music_genre_classification.data.dataset import DataError
from music_genre_classification.data.fetch import ensure_data


def test_defaults_are_the_checkouts_folders_whatever_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MGC_PROJECT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = compose("tune", ["tune=cnn"])
    assert cfg.output_dir == str(REPO / "outputs")
    assert cfg.datamodule.root == str(REPO / "data" / "dataset" / "spectrograms")
    assert cfg.datamodule.cache_dir == str(REPO / ".cache" / "spectrograms")
    assert cfg.data.dvc_target == str(REPO / "data.dvc") and cfg.data.download_dir == str(REPO / ".cache" / "downloads")
    assert cfg.logger.tracking_uri == f"sqlite:///{REPO / 'outputs' / 'mlflow.db'}"
    assert cfg.tune.storage == f"sqlite:///{REPO / 'outputs' / 'optuna.db'}"
    features = compose("train", ["model=features_logreg", "datamodule=features"])
    assert features.datamodule.root == str(REPO / "data" / "dataset" / "features_30_sec.csv")
    moved = compose("train", ["output_dir=/srv/runs"])  # one key moves every store with it
    assert moved.logger.tracking_uri == "sqlite:////srv/runs/mlflow.db"


def test_train_from_another_directory_writes_nothing_there(trained):
    assert not list(trained["cwd"].iterdir())
    outputs = trained["work"] / "outputs"
    assert (outputs / "model_full.ckpt").is_file() and (outputs / "mlflow.db").is_file()
    assert any((outputs / "mlruns").rglob("config.yaml"))  # MLflow's artifacts beside its store
    assert "pulling it with DVC" not in trained["stdout"]  # the given root: no pull, no download


def test_missing_dataset_outside_a_checkout_is_one_clear_error_before_any_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = OmegaConf.create(
        {
            "dvc_target": str(tmp_path / "data.dvc"),
            "dataset_dir": str(tmp_path / "data" / "dataset"),
            "url": "http://127.0.0.1:9/genres.tar.gz",
            "sha256": "0" * 64,
            "folder_in_archive": "genres",
            "download_dir": str(tmp_path / "downloads"),
        }
    )
    with pytest.raises(DataError, match=r"is in no DVC repository .* datamodule.root=/path/to/it"):
        ensure_data(tmp_path / "data" / "dataset" / "spectrograms", data)
    assert not list(tmp_path.iterdir())
